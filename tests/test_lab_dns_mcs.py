"""Multi-Cluster Services in the lab DNS: the `multicluster` plugin (ServiceImports under
clusterset.local, as coredns/multicluster answers them for Karmada), the `header` plugin and the
RA flag, and the agent's SRV probes and `ra` field, end to end against the server in process."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from crossnet.agent.__main__ import main as agent_main
from crossnet.agent.core import run_probe
from crossnet.agent.validate import BadRequest, validate_probe
from crossnet.model import Observation
from crossnet.providers.lab.dns import LabDnsConfigError, LabDnsServer
from crossnet.providers.lab.topology import stock_corefile
from crossnet.wire import ProbeResult
from tests.test_lab_dns import LoopThread, addresses, ask, wait_for_reload_check, write_config

ZONE = "clusterset.local"
ECHO = f"echo.crossnet.svc.{ZONE}"
HEADLESS = f"echo-headless.crossnet.svc.{ZONE}"
PORTS = [["tcp", 8080, "echo"], ["udp", 8080, "echo"]]
RECORDS: dict[str, Any] = {
    "services": [  # the cluster's own Services: `private` is not exported, so it is not imported
        {"name": "echo", "namespace": "crossnet", "type": "ClusterIP", "cluster_ip": "10.40.0.100", "endpoints": []},
        {"name": "private", "namespace": "crossnet", "type": "ClusterIP", "cluster_ip": "10.40.0.101"},
    ],
    "serviceimports": [
        {"name": "echo", "namespace": "crossnet", "type": "ClusterSetIP", "ips": ["10.41.0.200"], "ports": PORTS,
         "endpoints": []},
        {"name": "echo-headless", "namespace": "crossnet", "type": "Headless", "ips": [], "ports": PORTS,
         "endpoints": [{"ip": "10.10.1.2", "hostname": "agent-worker", "cluster": "mcs-1"},
                       {"ip": "10.20.1.2", "hostname": None, "cluster": "mcs-2"}]},
    ],
}


def mcs_corefile(domain: str = "cluster-1.com", extra: str = "") -> str:
    """The stock kubeadm Corefile with `multicluster clusterset.local` below `kubernetes`, as the
    mcs topology writes it."""
    stock = stock_corefile(domain)
    marker = "    prometheus :9153\n"
    assert marker in stock
    return stock.replace(marker, f"    multicluster {ZONE}\n{extra}{marker}")


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.close()


class Servers:
    def __init__(self, loop_thread: LoopThread, base: Path) -> None:
        self.loop_thread, self.base = loop_thread, base
        self.started: list[LabDnsServer] = []

    def start(self, corefile: str, records: dict[str, Any], name: str = "dns") -> tuple[LabDnsServer, int]:
        server = LabDnsServer(*write_config(self.base / name, corefile, records), port=0, forward_timeout=0.5)
        self.started.append(server)
        return server, self.loop_thread.run(server.start())


@pytest.fixture
def servers(loop_thread: LoopThread, tmp_path: Path) -> Iterator[Servers]:
    made = Servers(loop_thread, tmp_path)
    yield made
    for server in made.started:
        loop_thread.run(server.stop())


@pytest.fixture(scope="module")
def mcs(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One cluster's DNS with the mcs Corefile: its port."""
    server = LabDnsServer(*write_config(tmp_path_factory.mktemp("mcs"), mcs_corefile(), RECORDS), port=0)
    port = loop_thread.run(server.start())
    yield port
    loop_thread.run(server.stop())


def rcode(response: dns.message.Message) -> str:
    return dns.rcode.to_text(response.rcode())


def rdatas(response: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(f"{rrset.name} {r.to_text()}" for rrset in getattr(response, section) for r in rrset)


def srv(response: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rrset in response.answer if rrset.rdtype == dns.rdatatype.SRV for r in rrset)


# --------------------------------------------------------------------------- A, SRV, per-pod names


def test_a_clusterset_ip_import_answers_its_ip_authoritatively(mcs: int) -> None:
    response = ask(mcs, ECHO)
    assert (rcode(response), addresses(response)) == ("NOERROR", ["10.41.0.200"])
    assert response.flags & dns.flags.AA
    assert response.answer[0].ttl == 5, "the multicluster plugin's TTL"
    assert addresses(ask(mcs, "ECHO.Crossnet.svc.ClusterSet.Local")) == ["10.41.0.200"], "names are case-blind"


def test_a_headless_import_answers_every_endpoint(mcs: int) -> None:
    assert addresses(ask(mcs, HEADLESS)) == ["10.10.1.2", "10.20.1.2"]
    assert addresses(ask(mcs, HEADLESS, tcp=True)) == ["10.10.1.2", "10.20.1.2"]


def test_per_pod_names_are_hostname_dot_cluster(mcs: int) -> None:
    assert addresses(ask(mcs, f"agent-worker.mcs-1.{HEADLESS}")) == ["10.10.1.2"]
    assert addresses(ask(mcs, f"10-20-1-2.mcs-2.{HEADLESS}")) == ["10.20.1.2"], "no hostname: the IP with dashes"
    assert rcode(ask(mcs, f"agent-worker.mcs-2.{HEADLESS}")) == "NXDOMAIN", "the pod is in mcs-1, not mcs-2"
    assert rcode(ask(mcs, f"agent-worker.{HEADLESS}")) == "NXDOMAIN", "a pod name needs its cluster"


def test_srv_of_a_clusterset_ip_import_points_at_the_service_name(mcs: int) -> None:
    response = ask(mcs, f"_echo._tcp.{ECHO}", "SRV")
    assert rcode(response) == "NOERROR"
    assert srv(response) == [f"0 100 8080 {ECHO}."]
    assert rdatas(response, "additional") == [f"{ECHO}. 10.41.0.200"], "the target's address rides along"
    assert srv(ask(mcs, f"_echo._udp.{ECHO}", "SRV")) == [f"0 100 8080 {ECHO}."]
    assert rcode(ask(mcs, f"_http._tcp.{ECHO}", "SRV")) == "NXDOMAIN", "no such port"
    assert rcode(ask(mcs, f"_echo._sctp.{ECHO}", "SRV")) == "NXDOMAIN", "no such protocol"


def test_srv_of_a_headless_import_points_at_each_pod(mcs: int) -> None:
    response = ask(mcs, f"_echo._tcp.{HEADLESS}", "SRV")
    assert srv(response) == [f"0 50 8080 10-20-1-2.mcs-2.{HEADLESS}.", f"0 50 8080 agent-worker.mcs-1.{HEADLESS}."]
    assert rdatas(response, "additional") == [
        f"10-20-1-2.mcs-2.{HEADLESS}. 10.20.1.2",
        f"agent-worker.mcs-1.{HEADLESS}. 10.10.1.2",
    ]


def test_not_imported_service_is_nxdomain_with_the_zone_soa(mcs: int) -> None:
    assert addresses(ask(mcs, "private.crossnet.svc.cluster-1.com")) == ["10.40.0.101"], "it exists locally"
    for name in (f"private.crossnet.svc.{ZONE}", f"echo.nowhere.svc.{ZONE}", f"echo.crossnet.nope.{ZONE}"):
        response = ask(mcs, name)
        assert (rcode(response), response.answer) == ("NXDOMAIN", []), name
        (soa,) = response.authority
        assert soa.name == dns.name.from_text(ZONE) and soa.rdtype == dns.rdatatype.SOA
    assert rcode(ask(mcs, f"private.crossnet.svc.{ZONE}", "SRV")) == "NXDOMAIN"


def test_aaaa_of_an_imported_name_is_nodata(mcs: int) -> None:
    for name in (ECHO, HEADLESS, f"agent-worker.mcs-1.{HEADLESS}", f"crossnet.svc.{ZONE}", ZONE):
        response = ask(mcs, name, "AAAA")
        assert (rcode(response), response.answer) == ("NOERROR", []), name
        assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


def test_names_outside_the_zone_go_on_to_the_next_plugins(mcs: int) -> None:
    assert addresses(ask(mcs, "echo.crossnet.svc.cluster-1.com")) == ["10.40.0.100"]
    assert rcode(ask(mcs, "example.org")) == "SERVFAIL", "forward . /etc/resolv.conf: never leaves the lab"


def test_fallthrough_hands_unknown_imports_to_the_forward(servers: Servers) -> None:
    _, upstream = servers.start(f"{ZONE}:53 {{\n    hosts {{\n        10.9.9.9 private.crossnet.svc.{ZONE}\n"
                                "    }\n}\n", {}, name="upstream")
    tail = f"    forward . 127.0.0.1:{upstream}\n}}\n"
    _, plain = servers.start(f".:53 {{\n    multicluster {ZONE}\n" + tail, RECORDS, name="plain")
    _, falling = servers.start(f".:53 {{\n    multicluster {ZONE} {{\n        fallthrough\n    }}\n" + tail, RECORDS,
                               name="falling")
    assert rcode(ask(plain, f"private.crossnet.svc.{ZONE}")) == "NXDOMAIN"
    assert addresses(ask(falling, f"private.crossnet.svc.{ZONE}")) == ["10.9.9.9"]
    assert addresses(ask(falling, ECHO)) == ["10.41.0.200"], "an import is still answered"


def test_noendpoints_hides_pods_and_headless_imports(servers: Servers) -> None:
    _, port = servers.start(f".:53 {{\n    multicluster {ZONE} {{\n        noendpoints\n    }}\n}}\n", RECORDS)
    assert addresses(ask(port, ECHO)) == ["10.41.0.200"]
    assert rcode(ask(port, HEADLESS)) == "NXDOMAIN"
    assert rcode(ask(port, f"agent-worker.mcs-1.{HEADLESS}")) == "NXDOMAIN"


def test_records_are_reloaded(servers: Servers) -> None:
    server, port = servers.start(mcs_corefile(), RECORDS)
    late = {"name": "late", "namespace": "crossnet", "type": "ClusterSetIP", "ips": ["10.41.0.7"], "ports": PORTS}
    assert rcode(ask(port, f"late.crossnet.svc.{ZONE}")) == "NXDOMAIN"
    server.records_path.write_text(json.dumps({**RECORDS, "serviceimports": [*RECORDS["serviceimports"], late]}))
    wait_for_reload_check()
    assert addresses(ask(port, f"late.crossnet.svc.{ZONE}")) == ["10.41.0.7"]


# --------------------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(("zone", "where"), [
    ("cluster-2.com", "is the kubernetes plugin's zone"),
    ("svc.cluster-2.com", "is inside the kubernetes zone cluster-2.com"),
])
def test_multicluster_in_the_kubernetes_zone_is_an_error_naming_the_line(tmp_path: Path, zone: str,
                                                                         where: str) -> None:
    text = mcs_corefile("cluster-2.com").replace(f"multicluster {ZONE}", f"multicluster {zone}")
    line = text.splitlines().index(f"    multicluster {zone}") + 1
    corefile, records = write_config(tmp_path, text, RECORDS)
    with pytest.raises(LabDnsConfigError) as caught:
        LabDnsServer(corefile, records)
    message = str(caught.value)
    assert message.startswith(f"{corefile}:{line}: multicluster zone {zone} {where}: the kubernetes plugin would "
                              "answer first"), message
    assert "use clusterset.local" in message


def test_multicluster_in_a_zone_kubernetes_falls_through_for_is_accepted(tmp_path: Path) -> None:
    text = ".:53 {\n    kubernetes cluster-2.com {\n        fallthrough\n    }\n    multicluster cluster-2.com\n}\n"
    LabDnsServer(*write_config(tmp_path, text, RECORDS))


@pytest.mark.parametrize(("block", "line", "problem"), [
    (f"    multicluster {ZONE} {{\n        ttl 30\n    }}\n", 3, "unknown multicluster option 'ttl'"),
    ("    header {\n        response set ad\n    }\n", 3, "header flag 'ad' is not one of aa, ra, rd"),
    ("    header {\n        respond set ra\n    }\n", 3, "header rule 'respond set ra' is not"),
    ("    header {\n        response set\n    }\n", 3, "header rule 'response set' is not"),
    ("    header\n", 2, "header needs at least one rule"),
])
def test_bad_options_are_errors_naming_the_line(tmp_path: Path, block: str, line: int, problem: str) -> None:
    corefile, records = write_config(tmp_path, f".:53 {{\n{block}}}\n", RECORDS)
    with pytest.raises(LabDnsConfigError) as caught:
        LabDnsServer(corefile, records)
    assert str(caught.value).startswith(f"{corefile}:{line}: {problem}"), str(caught.value)


@pytest.mark.parametrize(("imports", "field"), [
    ([{"name": "e", "namespace": "n", "type": "ClusterIP", "ips": ["10.0.0.1"]}], r"serviceimports\[0\].type"),
    ([{"name": "e", "namespace": "n", "type": "ClusterSetIP", "ips": []}], r"serviceimports\[0\].ips"),
    ([{"name": "e", "namespace": "n", "type": "Headless", "ports": [["icmp", 1]]}], r"serviceimports\[0\].ports\[0\]"),
    ([{"name": "e", "namespace": "n", "type": "Headless", "endpoints": [{"ip": "10.0.0.1"}]}],
     r"serviceimports\[0\].endpoints\[0\].cluster"),
])
def test_bad_serviceimports_name_the_field(tmp_path: Path, imports: list[dict[str, Any]], field: str) -> None:
    corefile, records = write_config(tmp_path, mcs_corefile(), {"serviceimports": imports})
    with pytest.raises(LabDnsConfigError, match=rf"records.json: {field}: "):
        LabDnsServer(corefile, records)


# --------------------------------------------------------------------------- the RA flag and the header plugin


def test_own_answers_carry_no_ra_like_coredns(mcs: int) -> None:
    for name, rdtype in ((ECHO, "A"), (f"_echo._tcp.{ECHO}", "SRV"), ("echo.crossnet.svc.cluster-1.com", "A"),
                         (f"private.crossnet.svc.{ZONE}", "A"), ("nope.crossnet.svc.cluster-1.com", "A"),
                         ("example.org", "A")):
        response = ask(mcs, name, rdtype)
        assert not response.flags & dns.flags.RA, (name, dns.flags.to_text(response.flags))
        assert response.flags & dns.flags.RD, "RD is copied from the query"


def test_header_response_set_ra_sets_it_and_clear_clears(servers: Servers) -> None:
    _, with_ra = servers.start(mcs_corefile(extra="    header {\n        response set ra\n    }\n"), RECORDS, "ra")
    _, legacy = servers.start(mcs_corefile(extra="    header {\n        set ra\n        clear aa rd\n    }\n"),
                              RECORDS, "legacy")
    for name in (ECHO, "echo.crossnet.svc.cluster-1.com", f"private.crossnet.svc.{ZONE}"):
        assert ask(with_ra, name).flags & dns.flags.RA, name
    response = ask(legacy, ECHO)
    assert response.flags & dns.flags.RA and not response.flags & (dns.flags.AA | dns.flags.RD)


def test_a_forwarded_answer_keeps_the_upstreams_ra(servers: Servers) -> None:
    records = {"services": [{"name": "echo", "namespace": "crossnet", "type": "ClusterIP", "cluster_ip": "10.50.0.1"}]}
    _, plain = servers.start("cluster-2.com:53 {\n    kubernetes\n}\n", records, "plain")
    header = "    header {\n        response set ra\n    }\n"
    _, recursive = servers.start(f"cluster-2.com:53 {{\n{header}    kubernetes\n}}\n", records, "recursive")
    for upstream, ra in ((plain, False), (recursive, True)):
        _, port = servers.start(f".:53 {{\n    forward . 127.0.0.1:{upstream}\n}}\n", {}, f"via-{upstream}")
        response = ask(port, "echo.crossnet.svc.cluster-2.com")
        assert addresses(response) == ["10.50.0.1"]
        assert bool(response.flags & dns.flags.RA) is ra


def test_formerr_carries_no_ra(mcs: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff", ("127.0.0.1", mcs))  # a cut question
        reply = sock.recv(512)
    assert reply[:2] == b"\x12\x34"
    assert reply[3] & 0x0F == dns.rcode.FORMERR and not reply[3] & 0x80, reply[:4].hex()
    assert reply[2] & 0x81 == 0x81, "QR, and RD copied"


# --------------------------------------------------------------------------- the agent: SRV probes and `ra`


def probe(port: int, qname: str, **fields: Any) -> dict[str, Any]:
    spec = {"id": "p", "protocol": "dns-udp", "qname": qname, "server": "127.0.0.1", "dns_port": port,
            "timeout": 2.0, "search": [], **fields}
    result = asyncio.run(run_probe(validate_probe(spec)))
    assert set(result) <= set(ProbeResult.__annotations__), set(result) - set(ProbeResult.__annotations__)
    return result


@pytest.mark.parametrize("protocol", ["dns-udp", "dns-tcp"])
def test_agent_srv_probe_reports_srv_answers_and_ra(mcs: int, protocol: str) -> None:
    result = probe(mcs, f"_echo._tcp.{ECHO}.", qtype="SRV", protocol=protocol)
    assert result["reached"] and result["rcode"] == "NOERROR", result
    assert result["answers"] == [f"srv:0 100 8080 {ECHO}."]
    assert result["ra"] is False
    headless = probe(mcs, f"_echo._tcp.{HEADLESS}.", qtype="SRV", protocol=protocol)
    assert sorted(headless["answers"]) == [f"srv:0 50 8080 10-20-1-2.mcs-2.{HEADLESS}.",
                                           f"srv:0 50 8080 agent-worker.mcs-1.{HEADLESS}."]


def test_agent_a_probe_through_the_search_list(mcs: int) -> None:
    result = probe(mcs, "echo.crossnet.svc", search=["crossnet.svc.cluster-1.com", "svc.cluster-1.com", ZONE])
    assert result["answers"] == ["10.41.0.200"], "found by the clusterset.local search domain"
    assert result["ra"] is False


def test_agent_reports_ra_of_answers_and_denials(servers: Servers) -> None:
    _, with_ra = servers.start(mcs_corefile(extra="    header {\n        response set ra\n    }\n"), RECORDS)
    assert probe(with_ra, f"{ECHO}.")["ra"] is True
    assert probe(with_ra, f"_echo._tcp.{ECHO}.", qtype="srv")["ra"] is True
    denied = probe(with_ra, f"private.crossnet.svc.{ZONE}.")
    assert (denied["reached"], denied["error"], denied["ra"]) == (False, "nxdomain", True)
    failed = probe(with_ra, "example.org.")
    assert (failed["error"], failed["ra"]) == ("servfail", True)


def test_agent_reports_no_ra_when_no_response_came() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        result = probe(black_hole.getsockname()[1], "echo.example.", timeout=0.3)
    assert result["error"] == "timeout" and "ra" not in result


def test_agent_cli_asks_srv(mcs: int, capsys: pytest.CaptureFixture[str]) -> None:
    status = agent_main(["probe", "dns-udp", f"_echo._tcp.{ECHO}.", "--server", "127.0.0.1", "--dns-port", str(mcs),
                         "--qtype", "SRV"])
    printed = json.loads(capsys.readouterr().out)
    assert status == 0 and printed["answers"] == [f"srv:0 100 8080 {ECHO}."] and printed["ra"] is False
    with pytest.raises(SystemExit):
        agent_main(["probe", "tcp", ECHO, "8080", "--server", "127.0.0.1", "--qtype", "SRV"])
    with pytest.raises(SystemExit):
        agent_main(["probe", "dns-udp", ECHO, "--server", "127.0.0.1", "--qtype", "AAAA"])


@pytest.mark.parametrize(("spec", "problem"), [
    ({"qtype": "AAAA"}, "probe.qtype: must be one of A, SRV"),
    ({"qtype": 33}, "probe.qtype: must be one of A, SRV"),
    ({"qtype": "SRV", "protocol": "tcp", "port": 8080}, "probe.qtype: tcp to a name resolves A records"),
])
def test_qtype_is_validated(spec: dict[str, Any], problem: str) -> None:
    base = {"protocol": "dns-udp", "qname": ECHO, "server": "127.0.0.1"}
    with pytest.raises(BadRequest, match=problem):
        validate_probe({**base, **spec})


def test_qtype_is_kept_normalized_and_optional() -> None:
    base = {"protocol": "dns-udp", "qname": ECHO, "server": "127.0.0.1"}
    assert validate_probe({**base, "qtype": "srv"})["qtype"] == "SRV"
    assert "qtype" not in validate_probe(base), "an A probe is what it always was"


def test_observation_loads_with_and_without_ra() -> None:
    assert Observation.from_json({"reached": True, "answers": ["10.41.0.200"], "ra": True}).ra is True
    assert Observation.from_json({"reached": True, "answers": ["10.41.0.200"]}).ra is None
