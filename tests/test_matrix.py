"""Cells, live addresses and the judge, without any namespace (pure functions)."""

from __future__ import annotations

import re
from dataclasses import replace

from crossnet.config import load_topology
from crossnet.judge import judge
from crossnet.live import live_cell
from crossnet.model import Expectation, Observation
from crossnet.profile import load_profile
from crossnet.providers.lab.clusterset import live_cluster_set
from crossnet.providers.lab.topology import plan_lab
from crossnet.suites import build_cells
from tests.conftest import ROOT

TOPOLOGY = load_topology([ROOT / "kind-configs" / "cluster-1.yaml", ROOT / "kind-configs" / "cluster-2.yaml"])
PROFILE = load_profile("flat-routed")
CELLS = {c.id: c for c in build_cells(TOPOLOGY, PROFILE)}
CLUSTER_SET = live_cluster_set(plan_lab(TOPOLOGY))


def live(cell_id: str, **expect: str):  # type: ignore[no-untyped-def]
    cell = CELLS[cell_id]
    if expect:
        cell = replace(cell, expectation=Expectation(**{**cell.expectation.__dict__, **expect}))
    return live_cell(cell, CLUSTER_SET, 2.0)


PEER_TCP = "pod:cluster-1/worker->cluster-2/worker2:pod-ip:tcp"


def test_cell_ids_are_stable_unique_and_hold_no_ip() -> None:
    again = [c.id for c in build_cells(TOPOLOGY, PROFILE)]
    assert again == sorted(CELLS, key=lambda i: (CELLS[i].suite, i))
    assert len(set(again)) == len(again) >= 300
    assert not [i for i in again if re.search(r"\d+\.\d+\.\d+\.\d+", i)]  # --lf and history need it


def test_live_cell_addresses_and_repro() -> None:
    cell = live(PEER_TCP)
    assert cell.agent == "cluster-1/worker/agent" and cell.src_ip == "10.10.1.2" and cell.node_ip == "172.19.0.3"
    assert cell.probe["dst"] == "10.20.2.2" and cell.probe["expect_agents"] == ["cluster-2/worker2/agent"]
    assert cell.repro == "crossnet exec cluster-1/worker/agent -- crossnet-agent probe tcp 10.20.2.2 8080"
    dns = live("pod:cluster-1/worker->cluster-2:external-name:proxy-to-cluster-1:dns-name:dns-udp")
    assert dns.expected_answers == ("10.40.0.100",)  # the ExternalName points back at cluster-1's echo
    assert dns.probe["server"] == "10.40.0.10" and dns.probe["search"][0] == "crossnet.svc.cluster-1.com"


def test_service_targets_and_resolve_then_connect() -> None:
    node_port = live("host:cluster-2/worker->cluster-1/worker2:echo:node-port:udp")
    assert (node_port.probe["dst"], node_port.probe["port"]) == ("172.19.0.4", 30080)
    assert node_port.probe["expect_agents"] == [f"cluster-1/{n}/agent" for n in ("control-plane", "worker", "worker2")]
    headless = live("pod:cluster-1/worker->cluster-2/worker:echo-headless:headless:tcp")
    assert headless.probe["qname"] == "agent-worker.echo-headless.crossnet.svc.cluster-2.com"
    assert headless.probe["expect_agents"] == ["cluster-2/worker/agent"] and "dst" not in headless.probe
    assert "--server 10.40.0.10" in headless.repro
    external = CELLS["pod:cluster-2/worker->cluster-1:external-name:proxy-to-cluster-1:dns-name:tcp"]
    assert (external.scope, external.expectation.reachable) == ("peer-cluster", "no")  # peer ClusterIP, unrouted
    large = live("pod:cluster-1/worker->cluster-2/worker2:pod-ip:udp-1400b")
    assert large.probe["payload"] == 1400 and large.repro.endswith("--payload 1400")


def test_verdicts() -> None:
    cell = live(PEER_TCP + ":source")  # expected reachable, source node-ip (172.19.0.3)
    ok = Observation(reached=True, source_ip="172.19.0.3", latency_ms=0.4)
    assert judge(cell, ok).verdict == "pass"
    assert judge(cell, replace(ok, source_ip="10.10.1.2")).verdict == "source-mismatch"
    timeout = Observation(reached=False, error="timeout", latency_ms=2000.0)
    bad = judge(cell, timeout)
    assert bad.verdict == "regression"
    assert bad.message.startswith("cluster-1/worker pod 10.10.1.2 -> cluster-2 pod cluster-2/worker2 "
                                  "10.20.2.2:8080/tcp: expected reachable (flat-routed#4), got timeout after 2.0s")
    assert judge(cell, timeout, retry=ok).verdict == "flaky"
    assert judge(cell, timeout, retry=timeout).verdict == "regression"
    assert judge(live(PEER_TCP), replace(ok, source_ip="10.10.1.2")).verdict == "pass"  # source: snat's question
    isolated = live(PEER_TCP, reachable="no")
    assert judge(isolated, timeout).verdict == "isolated"
    assert judge(isolated, ok).verdict == "leak"
    assert judge(live(PEER_TCP, reachable="optional"), timeout).verdict == "optional"


def test_dns_answers_are_judged_exactly() -> None:
    cell = live("pod:cluster-1/worker->cluster-2:full:echo:dns-name:dns-tcp")
    right = Observation(reached=True, answers=("10.50.0.100",), rcode="NOERROR")
    assert judge(cell, right).verdict == "pass"
    wrong = judge(cell, replace(right, answers=("10.50.0.99",)))
    assert wrong.verdict == "regression" and "wrong-answer" in wrong.message
    nx = live("pod:cluster-1/worker->cluster-2:nxdomain:does-not-exist:dns-name:dns-udp")
    assert judge(nx, Observation(reached=False, error="nxdomain", rcode="NXDOMAIN")).verdict == "pass"
    assert judge(nx, Observation(reached=False, error="servfail", rcode="SERVFAIL")).verdict == "regression"
    assert judge(nx, right).verdict == "regression"
