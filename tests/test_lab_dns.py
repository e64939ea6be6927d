"""The lab's cluster DNS server, in process on 127.0.0.1 (no root, no namespaces).

Two servers stand for cluster-1 and cluster-2; each Corefile is the stock kubeadm one, patched
with plan_forward_patch to forward the peer's domain to the other server (ip:port form), as
`crossnet up` does on the lab and on kind."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from crossnet.plumbing.corefile import plan_forward_patch
from crossnet.providers.lab import dns as lab_dns
from crossnet.providers.lab.dns import LabDnsConfigError, LabDnsServer, load_records
from crossnet.providers.lab.topology import stock_corefile  # kubeadm's Corefile as kind keeps it
from tests.conftest import ROOT

T = TypeVar("T")


def service(name: str, kind: str, cluster_ip: str | None = None, external_name: str | None = None,
            endpoints: list[dict[str, str | None]] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": "crossnet", "type": kind, "cluster_ip": cluster_ip,
            "external_name": external_name, "ports": [["tcp", 8080], ["udp", 8080]],
            "endpoints": endpoints or []}


CLUSTER_1 = {
    "services": [
        service("echo", "ClusterIP", "10.40.0.100", endpoints=[{"ip": "10.10.1.2", "hostname": "agent-worker"}]),
        service("echo-headless", "Headless", endpoints=[{"ip": "10.10.1.2", "hostname": "agent-worker"},
                                                        {"ip": "10.10.2.2", "hostname": None}]),
        service("big", "Headless", endpoints=[{"ip": f"10.10.3.{i}", "hostname": None} for i in range(1, 61)]),
        service("huge", "Headless", endpoints=[{"ip": f"10.10.4.{i}", "hostname": None} for i in range(1, 101)]),
    ],
    "pods": [{"ip": "10.10.1.2", "namespace": "crossnet"}, {"ip": "10.10.2.2", "namespace": "crossnet"}],
}
CLUSTER_2 = {
    "services": [
        service("echo", "ClusterIP", "10.50.0.100", endpoints=[{"ip": "10.20.1.2", "hostname": None}]),
        service("echo-c1", "ExternalName", external_name="echo.crossnet.svc.cluster-1.com"),
        service("huge-c1", "ExternalName", external_name="huge.crossnet.svc.cluster-1.com"),
    ],
    "pods": [{"ip": "10.20.1.2", "namespace": "crossnet"}],
}


# --------------------------------------------------------------------------- harness


class LoopThread:
    """An event loop in a thread: the servers run there, the tests query them as clients do."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 5.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)
        self.loop.close()


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.close()


Serve = Callable[..., tuple[LabDnsServer, int]]


@pytest.fixture
def serve(loop_thread: LoopThread, tmp_path: Path) -> Iterator[Serve]:
    """Start a server from Corefile text and records; stopped after the test."""
    started: list[LabDnsServer] = []

    def start(corefile: str, records: dict[str, Any], name: str = "dns", **options: Any) -> tuple[LabDnsServer, int]:
        server = LabDnsServer(*write_config(tmp_path / name, corefile, records), port=0, **options)
        started.append(server)
        return server, loop_thread.run(server.start())

    yield start
    for server in started:
        loop_thread.run(server.stop())


def write_config(directory: Path, corefile: str, records: dict[str, Any]) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Corefile").write_text(corefile)
    (directory / "records.json").write_text(json.dumps(records))
    return directory / "Corefile", directory / "records.json"


def ask(port: int, name: str, rdtype: str = "A", tcp: bool = False, edns: bool = True,
        timeout: float = 3.0) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    if tcp:
        return dns.query.tcp(query, "127.0.0.1", port=port, timeout=timeout)
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=timeout)


def addresses(response: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rrset in response.answer if rrset.rdtype == dns.rdatatype.A for r in rrset)


def wait_for_reload_check() -> None:
    time.sleep(lab_dns.RELOAD_CHECK_INTERVAL * 1.5)


class TwoClusters:
    def __init__(self, loop_thread: LoopThread, base: Path) -> None:
        self.servers: list[LabDnsServer] = []
        self.paths: list[Path] = []
        for name, records in (("cluster-1", CLUSTER_1), ("cluster-2", CLUSTER_2)):
            corefile, records_path = write_config(base / name, stock_corefile(f"{name}.com"), records)
            self.servers.append(LabDnsServer(corefile, records_path, port=0))
            self.paths.append(corefile)
        self.c1, self.c2 = (loop_thread.run(server.start()) for server in self.servers)
        for path, peer, port in ((self.paths[0], "cluster-2.com", self.c2), (self.paths[1], "cluster-1.com", self.c1)):
            patch = plan_forward_patch(path.read_text(), "test-run", {peer: [f"127.0.0.1:{port}"]})
            path.write_text(patch.patched)
        wait_for_reload_check()  # the next query on each server picks the patched Corefile up


@pytest.fixture(scope="module")
def clusters(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoClusters]:
    pair = TwoClusters(loop_thread, tmp_path_factory.mktemp("clusters"))
    yield pair
    for server in pair.servers:
        loop_thread.run(server.stop())


# --------------------------------------------------------------------------- own cluster


def test_own_service_name_is_its_cluster_ip(clusters: TwoClusters) -> None:
    response = ask(clusters.c1, "echo.crossnet.svc.cluster-1.com")
    assert dns.rcode.to_text(response.rcode()) == "NOERROR"
    assert addresses(response) == ["10.40.0.100"]
    assert response.answer[0].ttl == 30, "ttl from the kubernetes block"
    assert response.flags & dns.flags.AA


def test_headless_endpoint_and_pod_names(clusters: TwoClusters) -> None:
    assert addresses(ask(clusters.c1, "echo-headless.crossnet.svc.cluster-1.com")) == ["10.10.1.2", "10.10.2.2"]
    assert addresses(ask(clusters.c1, "agent-worker.echo-headless.crossnet.svc.cluster-1.com")) == ["10.10.1.2"]
    assert addresses(ask(clusters.c1, "10-10-2-2.echo-headless.crossnet.svc.cluster-1.com")) == ["10.10.2.2"]
    assert addresses(ask(clusters.c1, "10-10-1-2.crossnet.pod.cluster-1.com")) == ["10.10.1.2"]


def test_missing_name_is_nxdomain_and_other_types_nodata_with_the_soa(clusters: TwoClusters) -> None:
    missing = ask(clusters.c1, "nope.crossnet.svc.cluster-1.com")
    nodata = ask(clusters.c1, "echo.crossnet.svc.cluster-1.com", "AAAA")
    assert dns.rcode.to_text(missing.rcode()) == "NXDOMAIN"
    assert (dns.rcode.to_text(nodata.rcode()), nodata.answer) == ("NOERROR", [])
    for response in (missing, nodata):
        (soa,) = response.authority
        assert soa.name == dns.name.from_text("cluster-1.com.")
        assert soa[0].to_text().startswith("ns.dns.cluster-1.com. hostmaster.cluster-1.com. ")


def test_reverse_lookup_of_a_cluster_ip(clusters: TwoClusters) -> None:
    response = ask(clusters.c1, "100.0.40.10.in-addr.arpa", "PTR")
    assert [r.to_text() for r in response.answer[0]] == ["echo.crossnet.svc.cluster-1.com."]


# --------------------------------------------------------------------------- peer cluster


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_peer_name_is_forwarded_to_the_peer_dns(clusters: TwoClusters, tcp: bool) -> None:
    response = ask(clusters.c1, "echo.crossnet.svc.cluster-2.com", tcp=tcp)
    assert dns.rcode.to_text(response.rcode()) == "NOERROR"
    assert addresses(response) == ["10.50.0.100"]
    assert response.edns == 0, "the client's EDNS travels to the peer and back"


def test_forward_keeps_a_query_without_edns_without_edns(clusters: TwoClusters) -> None:
    response = ask(clusters.c1, "echo.crossnet.svc.cluster-2.com", edns=False)
    assert addresses(response) == ["10.50.0.100"]
    assert response.edns == -1


def test_peer_nxdomain_carries_the_peer_soa(clusters: TwoClusters) -> None:
    response = ask(clusters.c1, "nope.crossnet.svc.cluster-2.com")
    assert dns.rcode.to_text(response.rcode()) == "NXDOMAIN"
    (soa,) = response.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert (soa[0].mname.to_text(), soa[0].rname.to_text()) == ("ns.dns.cluster-2.com.", "hostmaster.cluster-2.com.")


@pytest.mark.parametrize("via", ["own-dns", "peer-dns"])
def test_external_name_to_the_other_cluster_is_cname_plus_a_in_one_answer(clusters: TwoClusters, via: str) -> None:
    port = clusters.c1 if via == "own-dns" else clusters.c2
    response = ask(port, "echo-c1.crossnet.svc.cluster-2.com")
    assert dns.rcode.to_text(response.rcode()) == "NOERROR"
    cname, a = response.answer
    assert cname.rdtype == dns.rdatatype.CNAME
    assert cname[0].to_text() == "echo.crossnet.svc.cluster-1.com."
    assert a.name == dns.name.from_text("echo.crossnet.svc.cluster-1.com.")
    assert addresses(response) == ["10.40.0.100"]


# --------------------------------------------------------------------------- block selection, forward failures


def test_names_outside_every_server_block_are_refused(serve: Serve) -> None:
    _, port = serve("cluster-1.com:53 {\n    kubernetes\n}\n", CLUSTER_1)
    assert addresses(ask(port, "echo.crossnet.svc.cluster-1.com")) == ["10.40.0.100"]
    assert dns.rcode.to_text(ask(port, "example.org").rcode()) == "REFUSED"


def test_most_specific_server_block_wins(serve: Serve) -> None:
    _, port = serve(".:53 {\n  hosts {\n    10.0.0.1 a.svc.cluster-1.com\n  }\n}\n"
                    "svc.cluster-1.com:53 {\n  hosts {\n    10.0.0.2 a.svc.cluster-1.com\n  }\n}\n", {})
    assert addresses(ask(port, "a.svc.cluster-1.com")) == ["10.0.0.2"]


def test_forward_to_resolv_conf_never_leaves_the_lab(serve: Serve, capfd: pytest.CaptureFixture[str]) -> None:
    _, port = serve(stock_corefile("cluster-1.com"), CLUSTER_1)
    started = time.monotonic()
    response = ask(port, "example.org")
    assert dns.rcode.to_text(response.rcode()) == "SERVFAIL"
    assert time.monotonic() - started < 0.5, "no upstream: SERVFAIL at once, not after a timeout"
    assert "the lab never reads /etc/resolv.conf" in capfd.readouterr().err


def test_dead_upstream_gives_servfail_after_the_forward_timeout(
    serve: Serve, capfd: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:  # bound, never answers
        black_hole.bind(("127.0.0.1", 0))
        dead = black_hole.getsockname()[1]
        _, port = serve(f"cluster-2.com:53 {{\n    errors\n    forward . 127.0.0.1:{dead}\n}}\n", {},
                        forward_timeout=0.3)
        started = time.monotonic()
        response = ask(port, "echo.crossnet.svc.cluster-2.com")
        elapsed = time.monotonic() - started
    assert dns.rcode.to_text(response.rcode()) == "SERVFAIL"
    assert 0.3 <= elapsed < 1.5
    assert f"127.0.0.1:{dead}/udp: no answer within 0.3s" in capfd.readouterr().err


def test_upstream_with_nothing_listening_gives_servfail_at_once(
    serve: Serve, capfd: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
        gone.bind(("127.0.0.1", 0))
        closed = gone.getsockname()[1]
    _, port = serve(f"cluster-2.com:53 {{\n    errors\n    forward . 127.0.0.1:{closed}\n}}\n", {})
    started = time.monotonic()
    response = ask(port, "echo.crossnet.svc.cluster-2.com")
    assert dns.rcode.to_text(response.rcode()) == "SERVFAIL"
    assert time.monotonic() - started < 1.0, "ICMP port unreachable ends the wait (as on CoreDNS), not the timeout"
    assert f"127.0.0.1:{closed}/udp: [Errno 111] Connection refused" in capfd.readouterr().err


def test_cache_answers_while_the_upstream_is_gone_unless_disabled(serve: Serve, loop_thread: LoopThread) -> None:
    upstream, up_port = serve("cluster-2.com:53 {\n    kubernetes\n}\n", CLUSTER_2, name="upstream")
    forward = f"    forward . 127.0.0.1:{up_port}\n}}\n"
    _, cached = serve("cluster-2.com:53 {\n    cache 30\n" + forward, {}, name="cached", forward_timeout=0.3)
    _, uncached = serve("cluster-2.com:53 {\n    cache 30 {\n        disable success cluster-2.com\n    }\n" + forward,
                        {}, name="uncached", forward_timeout=0.3)
    for port in (cached, uncached):
        assert addresses(ask(port, "echo.crossnet.svc.cluster-2.com")) == ["10.50.0.100"]
    loop_thread.run(upstream.stop())
    from_cache = ask(cached, "echo.crossnet.svc.cluster-2.com")
    assert addresses(from_cache) == ["10.50.0.100"]
    assert from_cache.answer[0].ttl <= 5, "the remaining TTL of the upstream answer (kubernetes default 5)"
    assert dns.rcode.to_text(ask(uncached, "echo.crossnet.svc.cluster-2.com").rcode()) == "SERVFAIL"


def test_hosts_inline_entries_and_fallthrough(serve: Serve) -> None:
    _, port = serve(".:53 {\n  hosts {\n    10.0.0.9 registry.lab  # the lab registry\n    fallthrough\n  }\n"
                    "  kubernetes cluster-1.com\n}\n", CLUSTER_1)
    assert addresses(ask(port, "registry.lab")) == ["10.0.0.9"]
    assert addresses(ask(port, "echo.crossnet.svc.cluster-1.com")) == ["10.40.0.100"]
    assert [r.to_text() for r in ask(port, "9.0.0.10.in-addr.arpa", "PTR").answer[0]] == ["registry.lab."]


# --------------------------------------------------------------------------- configuration errors and reload


@pytest.mark.parametrize(("text", "line", "plugin"), [
    (".:53 {\n    errors\n    rewrite name a b\n}\n", 3, "rewrite"),
    (".:53 {\n    whoami\n}\n", 2, "whoami"),
    (".:53 {\n    kubernetes cluster-1.com\n}\ncluster-2.com:53 {\n    errors\n    template IN A cluster-2.com\n}\n",
     6, "template"),
])
def test_unknown_plugin_is_an_error_naming_file_line_and_plugin(tmp_path: Path, text: str, line: int,
                                                                plugin: str) -> None:
    corefile, records = write_config(tmp_path, text, CLUSTER_1)
    with pytest.raises(LabDnsConfigError) as caught:
        LabDnsServer(corefile, records)
    assert str(caught.value).startswith(f"{corefile}:{line}: unknown plugin {plugin!r}")
    assert "remove it from the Corefile" in str(caught.value), "the message says the fix"


def test_package_docstring_names_every_plugin_it_accepts() -> None:
    doc = lab_dns.__doc__ or ""
    assert [p for p in sorted(lab_dns.KNOWN_PLUGINS) if not re.search(rf"\b{p}\b", doc)] == []
    assert "Any other plugin" in doc


def test_cli_exits_2_on_an_unknown_plugin(tmp_path: Path) -> None:
    corefile, records = write_config(tmp_path, ".:53 {\n    kubernetes cluster-1.com\n    whoami\n}\n", CLUSTER_1)
    done = subprocess.run([sys.executable, "-m", "crossnet.providers.lab.dns", "--corefile", str(corefile),
                           "--records", str(records), "--port", "0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 2
    assert f"{corefile}:3: unknown plugin 'whoami'" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_records_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "records.json"
    path.write_text(json.dumps({"services": [service("echo", "LoadBalancer")]}))
    with pytest.raises(LabDnsConfigError, match=r"records.json: services\[0\].type: 'LoadBalancer' is not one of"):
        load_records(path)
    path.write_text('{"services": [\n  {"name": "echo",}\n]}')
    with pytest.raises(LabDnsConfigError, match=r"records.json:2: invalid JSON"):
        load_records(path)


def test_cli_serves_after_signalling_ready(tmp_path: Path) -> None:
    corefile, records = write_config(tmp_path, stock_corefile("cluster-1.com"), CLUSTER_1)
    ready = tmp_path / "dns.ready"
    process = subprocess.Popen([sys.executable, "-m", "crossnet.providers.lab.dns", "--corefile", str(corefile),
                                "--records", str(records), "--listen", "127.0.0.1", "--port", "0",
                                "--ready", str(ready)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready.exists(), process.stderr.read() if process.poll() is not None and process.stderr else "timeout"
        port = json.loads(ready.read_text())["port"]
        assert addresses(ask(port, "echo.crossnet.svc.cluster-1.com")) == ["10.40.0.100"]
        assert addresses(ask(port, "echo.crossnet.svc.cluster-1.com", tcp=True)) == ["10.40.0.100"]
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(10)
    assert status == 0
    assert not ready.exists(), "the ready file goes with the server"


def test_reload_after_corefile_and_records_change(serve: Serve, tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    server, port = serve(".:53 {\n  hosts {\n    10.0.0.1 a.lab\n  }\n}\n", CLUSTER_1, name="reload")
    assert addresses(ask(port, "a.lab")) == ["10.0.0.1"]
    server.corefile_path.write_text(".:53 {\n  hosts {\n    10.0.0.2 a.lab\n    fallthrough\n  }\n"
                                    "  kubernetes cluster-1.com\n}\n")
    wait_for_reload_check()
    assert addresses(ask(port, "a.lab")) == ["10.0.0.2"]
    assert addresses(ask(port, "echo.crossnet.svc.cluster-1.com")) == ["10.40.0.100"]
    server.records_path.write_text(json.dumps({"services": [service("late", "ClusterIP", "10.40.0.7")]}))
    wait_for_reload_check()
    assert addresses(ask(port, "late.crossnet.svc.cluster-1.com")) == ["10.40.0.7"]
    server.corefile_path.write_text(".:53 {\n  hosts {\n    10.0.0.3 a.lab\n  }\n  bogus\n}\n")
    wait_for_reload_check()
    assert addresses(ask(port, "a.lab")) == ["10.0.0.2"], "a bad Corefile keeps the previous configuration"
    assert f"{server.corefile_path}:5: unknown plugin 'bogus'" in capfd.readouterr().err


def test_answers_from_the_records_are_sent_again_and_forwarded_ones_asked_again(serve: Serve) -> None:
    """An answer made from the records alone is kept (bytes, the new query's ID); a forwarded one
    is asked upstream every time, so a change behind a forward shows at once."""
    upstream, up_port = serve("cluster-2.com:53 {\n    kubernetes\n}\n", CLUSTER_2, name="upstream")
    server, port = serve("cluster-1.com:53 {\n    kubernetes\n}\n"
                         f"cluster-2.com:53 {{\n    forward . 127.0.0.1:{up_port}\n}}\n", CLUSTER_1, name="front")
    first, again = (ask(port, "echo.crossnet.svc.cluster-1.com") for _ in range(2))
    assert first.id != again.id and again.to_wire()[2:] == first.to_wire()[2:]
    assert len(server._answers) == 1, "the records' answer is kept"
    assert addresses(ask(port, "echo.crossnet.svc.cluster-2.com")) == ["10.50.0.100"]
    assert len(server._answers) == 1, "a forwarded answer is never kept"
    upstream.records_path.write_text(json.dumps({"services": [service("echo", "ClusterIP", "10.50.9.9")]}))
    wait_for_reload_check()
    assert addresses(ask(port, "echo.crossnet.svc.cluster-2.com")) == ["10.50.9.9"]


# --------------------------------------------------------------------------- truncation


def test_oversized_udp_answer_is_truncated_and_complete_over_tcp(clusters: TwoClusters) -> None:
    name = "big.crossnet.svc.cluster-1.com"
    truncated = ask(clusters.c1, name, edns=False)
    assert truncated.flags & dns.flags.TC
    assert len(truncated.to_wire()) <= 512
    assert len(addresses(ask(clusters.c1, name, tcp=True))) == 60
    large_buffer = dns.query.udp(dns.message.make_query(name, "A", use_edns=0, payload=4096), "127.0.0.1",
                                 port=clusters.c1, timeout=3.0)
    assert not large_buffer.flags & dns.flags.TC
    assert len(addresses(large_buffer)) == 60


def test_truncated_peer_answer_passes_through_the_forward(clusters: TwoClusters) -> None:
    """The peer's oversized answer crosses the forward as it would on kind: TC over UDP."""
    response = ask(clusters.c2, "big.crossnet.svc.cluster-1.com", edns=False)
    assert response.flags & dns.flags.TC
    assert len(addresses(ask(clusters.c2, "big.crossnet.svc.cluster-1.com", tcp=True))) == 60



def test_truncated_peer_answer_to_a_cname_chase_is_fetched_again_over_tcp(clusters: TwoClusters) -> None:
    """The server's own query (chasing huge-c1's CNAME into cluster-1.com) cannot retry like a
    client: the forward repeats a truncated UDP answer over TCP."""
    query = dns.message.make_query("huge-c1.crossnet.svc.cluster-2.com", "A", use_edns=0, payload=4096)
    response = dns.query.udp(query, "127.0.0.1", port=clusters.c2, timeout=3.0)
    assert not response.flags & dns.flags.TC
    assert len(addresses(response)) == 100


def test_a_dns_probe_records_the_answer_ttl_so_a_cached_answer_shows(clusters: TwoClusters) -> None:
    """The agent's DNS probe reports the answer's lowest TTL: a name the cache served a while ago
    comes back with less than the zone's own TTL, and the evidence can say it was cached."""
    from crossnet.agent.core import run_probe

    probe = {"id": "ttl", "protocol": "dns-udp", "qname": "echo.crossnet.svc.cluster-2.com.", "server": "127.0.0.1",
             "dns_port": clusters.c1, "timeout": 2.0, "search": []}
    first = asyncio.run(run_probe(probe))
    time.sleep(2.1)
    cached = asyncio.run(run_probe(probe))
    assert first["reached"] and cached["reached"], (first, cached)
    assert isinstance(first["ttl"], int) and isinstance(cached["ttl"], int)
    assert cached["ttl"] <= first["ttl"] - 2, (first["ttl"], cached["ttl"])
    assert f"TTL {cached['ttl']} s" in cached["detail"]


@pytest.mark.parametrize("protocol", ["dns-udp", "dns-tcp"])
def test_a_dns_probe_to_a_server_that_is_not_there_is_refused_at_once_naming_it(protocol: str) -> None:
    """No DNS server on the address (its pod gone, a wrong Service port): `refused` at once, the
    server named, as a stub resolver on a connected socket sees it -- not a timeout, not SERVFAIL."""
    from crossnet.agent.core import run_probe

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:  # a port nothing listens on
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
    probe = {"id": "gone", "protocol": protocol, "qname": "echo.crossnet.svc.cluster-1.com.", "server": "127.0.0.1",
             "dns_port": port, "timeout": 2.0, "search": []}
    result = asyncio.run(run_probe(probe))
    assert (result["reached"], result["error"]) == (False, "refused"), result
    assert result["latency_ms"] < 1000 and f"no DNS server listens on 127.0.0.1 port {port}" in result["detail"]


def test_an_answer_the_cache_stored_is_not_kept_so_its_ttl_counts_down(serve: Serve) -> None:
    """Behind `cache` (no `disable`), the second answer is the cache's, its TTL lower: the server
    must not send the first answer's bytes again (case of the name makes no difference)."""
    _, port = serve("cluster-1.com:53 {\n    cache 30\n    kubernetes cluster-1.com {\n        ttl 20\n    }\n}\n",
                    CLUSTER_1, name="cached")
    first = ask(port, "echo.crossnet.svc.cluster-1.com")
    time.sleep(1.2)
    later = ask(port, "echo.crossnet.svc.cluster-1.com")
    assert addresses(first) == addresses(later) == ["10.40.0.100"]
    assert later.answer[0].ttl < first.answer[0].ttl, (first.answer[0].ttl, later.answer[0].ttl)


def test_a_lost_udp_query_is_sent_again_within_the_probe_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stub resolver re-sends a UDP query it got no answer to; one datagram lost is not a timeout."""
    import crossnet.agent.lookup as lookup
    from crossnet.agent.core import run_probe

    monkeypatch.setattr(lookup, "UDP_RETRY", 0.3)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(5)
    seen: list[int] = []

    def answer_the_second() -> None:
        for _ in range(2):
            data, peer = server.recvfrom(4096)
            seen.append(len(data))
            if len(seen) == 2:
                reply = dns.message.make_response(dns.message.from_wire(data))
                reply.answer.append(dns.rrset.from_text(reply.question[0].name, 5, "IN", "A", "10.9.9.9"))
                server.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=answer_the_second, daemon=True)
    thread.start()
    probe = {"id": "lost", "protocol": "dns-udp", "qname": "x.example.", "server": "127.0.0.1",
             "dns_port": server.getsockname()[1], "timeout": 2.0, "search": []}
    try:
        result = asyncio.run(run_probe(probe))
    finally:
        thread.join(5)
        server.close()
    assert result["reached"] and result["answers"] == ["10.9.9.9"], result
    assert len(seen) == 2 and 250 <= result["latency_ms"] < 2000, (seen, result["latency_ms"])
