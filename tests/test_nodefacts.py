"""Node facts through testinfra (crossnet.facts, crossnet.evidence, suites/test_plumbing.py): the planned facts
are data from the configs and the profile; on a fresh lab every one holds; a fault made by hand
fails exactly the fact that names it, with the expected value in the message; the evidence of a
failing path comes from both ends and never raises. The lab runs are started with `crossnet up`
once for the module; every fault is undone before the next test, and each test checks that only
its own fact failed (so a fault that leaked from another test shows)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from testinfra.host import Host

from crossnet.config import load_topology, resolve_setup
from crossnet.evidence import collect_evidence
from crossnet.facts import FactResult, NodeFact, _routes, check_fact, node_host, planned_facts, reading_once, route_text
from crossnet.lifecycle import Run, attach
from crossnet.model import ClusterSet, Topology
from crossnet.profile import Profile, load_profile
from crossnet.providers.base import ExecTarget
from crossnet.providers.exec_backend import ExecBackend
from crossnet.providers.fake import FakeProvider
from tests.lab_helpers import ROOT, crossnet, needs_lab

IP = re.compile(r"\d+\.\d+\.\d+\.\d+")


def setup_of(profile_name: str | None = None) -> tuple[Topology, Profile]:
    """The topology and profile as the plugin resolves them (the default topology's configs)."""
    paths, name = resolve_setup(ROOT / "kind-configs", None, None, profile_name)
    profile = load_profile(name)
    return load_topology(paths, allow_overlap=profile.globalnet, global_cidr=profile.plumbing.global_cidr), profile


def check_all(run: Run, facts: list[NodeFact]) -> dict[str, FactResult]:
    hosts: dict[tuple[str, str], Host] = {}
    results = {}
    for fact in facts:
        node = fact.node or run.cluster_set.cluster(fact.cluster).nodes[0].short
        host = hosts.setdefault((fact.cluster, node), node_host(run, fact.cluster, node))
        results[fact.id] = check_fact(host, fact, run)
    return results


def failing(results: dict[str, FactResult]) -> dict[str, str]:
    return {i: f"expected {r.expected}, found {r.observed}" for i, r in results.items() if not r.ok}


# ---------------------------------------------------------------- planned facts (no lab needed)


def test_planned_facts_of_the_default_profile() -> None:
    topology, profile = setup_of()
    facts = planned_facts(topology, profile)
    ids = [f.id for f in facts]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert facts == planned_facts(*setup_of())  # what every xdist worker collects
    # per node: ip_forward, rp_filter, masquerade, service-dnat and a route to each of the 3 peer
    # nodes; per cluster: the forward for the peer's domain
    assert len(facts) == 6 * (4 + 3) + 2 == 44
    for expected in ("cluster-1/worker:ip_forward", "cluster-1/worker:rp_filter",
                     "cluster-1/worker:route-to:cluster-2/worker2", "cluster-1/worker:masquerade",
                     "cluster-1/worker:service-dnat:echo", "cluster-1:corefile-forward:cluster-2.com",
                     "cluster-2:corefile-forward:cluster-1.com"):
        assert expected in ids, expected
    assert not [i for i in ids if "service-route-to" in i or "no-masquerade-to" in i]
    assert not [i for i in ids if IP.search(i)], "an id holds an address"
    assert {f.detail for f in facts if f.kind == "rp_filter"} == {str(profile.plumbing.rp_filter)}


def test_under_plumbing_none_the_facts_report_what_is_there() -> None:
    """--plumbing none: crossnet injected nothing, so its routes, masquerade exceptions and Corefile
    forwards are not required: the same subjects are observed (ids unchanged), ip_forward still must hold."""
    topology, profile = setup_of()
    facts = planned_facts(topology, profile, "none")
    ids = [f.id for f in facts]
    assert ids == sorted(ids) and facts == planned_facts(*setup_of(), "none")
    assert set(ids) <= {f.id for f in planned_facts(topology, profile)}
    assert "cluster-1:corefile-forward:cluster-2.com" in ids and "cluster-1/worker:route-to:cluster-2/worker2" in ids
    assert {f.kind for f in facts if not f.observe} == {"ip_forward"}
    svc = planned_facts(*setup_of("flat-routed-svc"), "none")
    assert "cluster-1/worker:service-route-to:cluster-2" in [f.id for f in svc]
    assert not [f for f in planned_facts(*setup_of("no-masquerade"), "none") if f.kind == "no-masquerade-to"]


def test_planned_facts_follow_the_profile() -> None:
    svc = [f.id for f in planned_facts(*setup_of("flat-routed-svc"))]
    assert "cluster-1/worker:service-route-to:cluster-2" in svc
    assert len([i for i in svc if ":service-route-to:" in i]) == 6
    nomasq = [f.id for f in planned_facts(*setup_of("no-masquerade"))]
    assert "cluster-2/control-plane:no-masquerade-to:cluster-1" in nomasq
    assert len([i for i in nomasq if ":no-masquerade-to:" in i]) == 6


# ---------------------------------------------------------------- the backend and evidence, scripted


class ScriptedProvider(FakeProvider):
    """A fake provider whose exec answers from a script: {command prefix: (rc, stdout, stderr)}
    or an exception to raise (a node that cannot be reached)."""

    def __init__(self, state_dir: Path, script: dict[str, tuple[int, str, str] | Exception]) -> None:
        super().__init__(state_dir)
        self.script = script
        self.calls: list[tuple[ExecTarget, list[str], float]] = []

    def exec(self, target: ExecTarget, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]:
        self.calls.append((target, argv, timeout))
        for prefix, answer in self.script.items():
            if argv[-1].startswith(prefix):
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return 0, "", ""


def scripted_run(tmp_path: Path, script: dict[str, tuple[int, str, str] | Exception]) -> tuple[Run, ScriptedProvider]:
    provider = ScriptedProvider(tmp_path, script)
    cluster_set: ClusterSet = provider.up(setup_of()[0])
    return Run(provider, cluster_set, owned=False), provider


def test_lab_backend_runs_through_the_provider_exec_with_a_timeout(tmp_path: Path) -> None:
    run, provider = scripted_run(tmp_path, {"echo": (0, "hi\n", "")})
    host = Host(ExecBackend(run.provider.exec, ExecTarget("cluster-1", "worker"), timeout=2.5))
    out = host.run("echo %s", "it's")
    assert (out.rc, out.stdout) == (0, "hi\n")
    assert provider.calls == [(ExecTarget("cluster-1", "worker"), ["sh", "-c", "echo 'it'\"'\"'s'"], 2.5)]
    assert node_host(run, "cluster-1", "worker").backend.hostname == "cluster-1/worker"


def test_a_node_is_read_once_for_all_its_facts(tmp_path: Path) -> None:
    """The plumbing suite judges a node's facts from one reading of it (reading_once): the routing
    table once for every route fact, each chain once; a route fact matches exactly its prefix,
    a host route written without its /32 included."""
    table = json.dumps([
        {"dst": "default", "gateway": "172.19.0.1", "dev": "eth0"},
        {"dst": "10.20.2.0/24", "gateway": "172.19.0.7", "dev": "eth0"},
        {"dst": "10.20.0.0/16", "gateway": "172.19.0.9", "dev": "eth0"},  # a shorter prefix: not that route
        {"dst": "10.40.0.10", "gateway": "172.19.0.7", "dev": "eth0"},  # a host route, as `ip -j` writes it
        {"type": "blackhole", "dst": "10.20.3.0/24"},
    ])
    run, provider = scripted_run(tmp_path, {"ip -j route show table main": (0, table, "")})
    host = reading_once(node_host(run, "cluster-1", "worker"))
    assert [r["gateway"] for r in _routes(host, "10.20.2.0/24")] == ["172.19.0.7"]
    assert [r["dst"] for r in _routes(host, "10.40.0.10/32")] == ["10.40.0.10/32"]
    assert [route_text(r) for r in _routes(host, "10.20.3.0/24")] == ["blackhole route 10.20.3.0/24"]
    assert _routes(host, "10.30.0.0/24") == []
    for _ in range(3):
        host.run("iptables -t nat -S KIND-MASQ-AGENT")
    commands = [argv[-1] for _, argv, _ in provider.calls]
    assert commands.count("ip -j route show table main") == 1
    assert commands.count("iptables -t nat -S KIND-MASQ-AGENT") == 1
    fresh = node_host(run, "cluster-1", "worker")  # evidence reads a node anew each time
    fresh.run("ip -j route show table main")
    assert [argv[-1] for _, argv, _ in provider.calls].count("ip -j route show table main") == 2


def test_evidence_says_what_is_missing_and_never_raises(tmp_path: Path) -> None:
    run, _ = scripted_run(tmp_path, {"conntrack": (127, "sh: 1: conntrack: not found\n", ""),
                                     "ip route": (0, "default via 172.19.0.1 dev eth0\n", "")})
    text = collect_evidence(run, ("cluster-1", "worker"), ("cluster-2", "worker2"), "10.10.1.2 10.20.2.2")
    assert "=== cluster-1/worker: ip route ===\ndefault via 172.19.0.1" in text
    assert "=== cluster-2/worker2: conntrack ===\nconntrack is not installed on this node" in text

    dead, _ = scripted_run(tmp_path / "dead", {"ip route": ConnectionRefusedError("ctl.sock refused")})
    text = collect_evidence(dead, ("cluster-1", "worker"), ("cluster-2", "worker2"), ("10.10.1.2",), "cluster-1")
    assert "=== cluster-1/worker: ip route ===\ncould not collect it: ConnectionRefusedError: ctl.sock refused" in text
    assert "cluster-1/worker: ip rule" not in text  # a dead node is not asked four more times
    assert "=== cluster-1: Corefile ===\n.:53 {" in text

    huge, _ = scripted_run(tmp_path / "huge", {"ip route": (0, "10.0.0.0/24 via 172.19.0.9\n" * 2000, "")})
    text = collect_evidence(huge, ("cluster-1", "worker"), ("cluster-1", "worker"))
    section = text.split("=== cluster-1/worker: ip route ===\n")[1].split("===")[0]
    assert len(section) < 4200 and "more characters)" in section
    assert text.count("=== cluster-1/worker: ip route ===") == 1  # one end when both are the same node


# ---------------------------------------------------------------- on a live lab




@pytest.fixture
def lab_run(module_lab: Path) -> Run:
    return attach(module_lab)  # owned=False: never torn down through this Run


def in_node(state: Path, where: str, *argv: str) -> str:
    return crossnet("exec", "--state-dir", str(state), where, "--", *argv).stdout


@needs_lab
def test_every_planned_fact_holds_on_a_fresh_lab(lab_run: Run) -> None:
    facts = planned_facts(*setup_of())
    started = time.perf_counter()
    results = check_all(lab_run, facts)
    assert failing(results) == {}
    assert time.perf_counter() - started < 5.0
    route = results["cluster-1/worker:route-to:cluster-2/worker2"]
    worker2 = lab_run.cluster_set.cluster("cluster-2").node("worker2")
    assert route.expected == route.observed == f"route {worker2.pod_cidr} via {worker2.ip}"


@needs_lab
def test_a_deleted_route_fails_exactly_its_fact(lab_run: Run, module_lab: Path) -> None:
    peer = lab_run.cluster_set.cluster("cluster-2").node("worker2")
    in_node(module_lab, "cluster-1/worker", "ip", "route", "del", peer.pod_cidr)
    try:
        failed = failing(check_all(lab_run, planned_facts(*setup_of())))
    finally:
        in_node(module_lab, "cluster-1/worker", "ip", "route", "replace", peer.pod_cidr, "via", peer.ip)
    assert list(failed) == ["cluster-1/worker:route-to:cluster-2/worker2"]
    message = failed["cluster-1/worker:route-to:cluster-2/worker2"]
    assert message.startswith(f"expected route {peer.pod_cidr} via {peer.ip}, found no route")
    assert "it would take: " in message and "via 172.19.0.1" in message  # the default route, not the peer


@needs_lab
def test_ip_forward_off_fails_that_node_only(lab_run: Run, module_lab: Path) -> None:
    in_node(module_lab, "cluster-2/worker", "sysctl", "-w", "net.ipv4.ip_forward=0")
    try:
        failed = failing(check_all(lab_run, planned_facts(*setup_of())))
    finally:
        in_node(module_lab, "cluster-2/worker", "sysctl", "-w", "net.ipv4.ip_forward=1")
    assert failed == {"cluster-2/worker:ip_forward": "expected net.ipv4.ip_forward = 1, found net.ipv4.ip_forward = 0"}


@needs_lab
def test_a_wrong_forward_ip_fails_the_corefile_fact(lab_run: Run) -> None:
    original = lab_run.provider.read_corefile("cluster-1")
    dns = lab_run.cluster_set.cluster("cluster-2").dns_server_ips[0]
    assert f"forward . {dns}" in original
    lab_run.provider.write_corefile("cluster-1", original.replace(f"forward . {dns}", "forward . 10.20.1.2"))
    try:
        failed = failing(check_all(lab_run, planned_facts(*setup_of())))
    finally:
        lab_run.provider.write_corefile("cluster-1", original)
    assert failed == {"cluster-1:corefile-forward:cluster-2.com":
                      f"expected cluster-2.com: forward . {dns}, found cluster-2.com: forward . 10.20.1.2"}


@needs_lab
def test_masquerade_without_its_postrouting_jump_fails(lab_run: Run, module_lab: Path) -> None:
    rules = in_node(module_lab, "cluster-1/worker2", "iptables", "-t", "nat", "-S", "POSTROUTING").splitlines()
    jump = shlex.split(next(r for r in rules if r.endswith("-j KIND-MASQ-AGENT")))[1:]  # without "-A"
    in_node(module_lab, "cluster-1/worker2", "iptables", "-t", "nat", "-D", *jump)
    try:
        failed = failing(check_all(lab_run, planned_facts(*setup_of())))
    finally:
        in_node(module_lab, "cluster-1/worker2", "iptables", "-t", "nat", "-A", *jump)  # it was the last rule
    assert list(failed) == ["cluster-1/worker2:masquerade"]
    assert "found no POSTROUTING jump to KIND-MASQ-AGENT" in failed["cluster-1/worker2:masquerade"]


@needs_lab
def test_lab_backend_times_out(lab_run: Run) -> None:
    host = Host(ExecBackend(lab_run.provider.exec, ExecTarget("cluster-1", "worker"), timeout=0.3))
    started = time.perf_counter()
    out = host.run("sleep 5")
    assert out.rc == 124 and "timed out" in out.stderr
    assert time.perf_counter() - started < 2.0


@needs_lab
def test_evidence_from_both_ends_of_a_dns_flow(lab_run: Run, module_lab: Path) -> None:
    clusters = lab_run.cluster_set
    src, dst = clusters.cluster("cluster-1").node("worker"), clusters.cluster("cluster-2").node("worker2")
    pod_src, pod_dst = src.pod_cidr.replace(".0/24", ".2"), dst.pod_cidr.replace(".0/24", ".2")
    in_node(module_lab, "cluster-1/worker/agent", "crossnet-agent", "probe", "udp", pod_dst, "8080")  # a flow to see
    text = collect_evidence(lab_run, ("cluster-1", "worker"), ("cluster-2", "worker2"), f"{pod_src} {pod_dst}",
                            dns_cluster="cluster-1")
    src_part, dst_part = text.split("=== cluster-2/worker2: ip route ===")
    assert src_part.startswith("=== cluster-1/worker: ip route ===\n")
    assert f"{dst.pod_cidr} via {dst.ip}" in src_part  # the route out ...
    assert f"{src.pod_cidr} via {src.ip}" in dst_part  # ... and the way back
    for where, part in (("cluster-1/worker", src_part), ("cluster-2/worker2", dst_part)):
        for title in ("ip rule", "rp_filter all/default", "iptables -t nat", f"conntrack for {pod_src} {pod_dst}"):
            assert f"=== {where}: {title} ===" in part, (where, title)
        assert "net.ipv4.conf.all.rp_filter = 0" in part and "net.ipv4.conf.default.rp_filter = 0" in part
        assert "-j KIND-MASQ-AGENT" in part and "-A KUBE-SERVICES -d " in part
    assert "-A KIND-MASQ-AGENT -d 10.10.0.0/16" in src_part and "-A KIND-MASQ-AGENT -d 10.20.0.0/16" in dst_part
    # the flow as each end saw it: sent from the pod, arriving from the sending node (kindnet masquerade)
    assert f"src={pod_src} dst={pod_dst}" in src_part and f"src={src.ip} dst={pod_dst}" in dst_part
    corefile = text.split("=== cluster-1: Corefile ===\n")[1]
    assert "cluster-2.com:53 {" in corefile
    assert f"forward . {lab_run.cluster_set.cluster('cluster-2').dns_server_ips[0]}" in corefile
    assert ":KUBE-SEP-" not in text  # chain declarations are left out; rules are kept


@needs_lab
def test_the_plumbing_suite_passes_end_to_end(module_lab: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "suites/test_plumbing.py",
                           "--attach", str(module_lab), "--reports", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "44 passed" in done.stdout
    cases = list(ET.parse(tmp_path / "junit.xml").getroot().iter("testcase"))
    assert len(cases) == 44
    case = next(c for c in cases if c.get("name", "").endswith("[cluster-1/worker:route-to:cluster-2/worker2]"))
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["expected"] == properties["observed"] == "route 10.20.2.0/24 via 172.19.0.7"
