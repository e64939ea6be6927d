"""Globalnet: allocation and validation as data, the Lighthouse answers, and the three-cluster
lab — green with every cross-cluster source equal to the sender's global egress IP; a removed
gateway SNAT gives source-mismatch/regression; a route sending the peer's real pod CIDR across
gives a leak."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossnet.config import ConfigError, load_topology
from crossnet.globalnet import allocate, gateway_node
from crossnet.profile import load_profile
from crossnet.suites import build_cells
from tests.lab_helpers import ROOT, assert_nothing_left, crossnet, host_snapshot, load_matrix, needs_lab, run_suites

CONFIGS = [ROOT / "kind-configs" / f"globalnet-{i}.yaml" for i in (1, 2, 3)]


def test_allocation_is_submariner_shaped() -> None:
    topology = load_topology(CONFIGS, global_cidr="242.0.0.0/8")
    first, second, third = allocate(topology)
    assert (first.cidr, second.cidr, third.cidr) == ("242.0.0.0/16", "242.1.0.0/16", "242.2.0.0/16")
    assert first.egress_ips == tuple(f"242.0.0.{i}" for i in range(1, 9))  # numGlobalIPs: 8
    assert second.service_ips == {"echo": "242.1.0.9"}
    assert list(second.pod_ips) == ["agent-control-plane", "agent-worker", "agent-worker2"]
    assert gateway_node(topology, "globalnet-1") == "worker"


def test_overlap_needs_globalnet_and_the_global_cidr_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_topology(CONFIGS)
    assert "--profile globalnet" in str(caught.value)
    with pytest.raises(ConfigError, match=r"overlaps the globalnet CIDR 10\.0\.0\.0/8"):
        load_topology(CONFIGS, global_cidr="10.0.0.0/8")
    with pytest.raises(ConfigError, match=r"holds 2 /16 slices for 3 clusters"):
        load_topology(CONFIGS, global_cidr="242.0.0.0/15")


def test_globalnet_cells_and_their_expectations() -> None:
    profile = load_profile("globalnet")
    topology = load_topology(CONFIGS, global_cidr=profile.plumbing.global_cidr)
    built = build_cells(topology, profile)
    cells = {c.id: c for c in built}
    assert len(cells) == len(built) == 882  # ids are unique
    assert not [c for c in cells.values() if c.suite in ("pod-to-pod", "dns", "service")]
    leak_check = cells["pod:globalnet-1/worker->globalnet-2/worker2:pod-ip:tcp"]
    assert (leak_check.expectation.reachable, leak_check.expectation.rule) == ("no", "globalnet#1")
    by_name = cells["host:globalnet-3/worker2->globalnet-1:cluster.clusterset:echo:dns-name:udp:source"]
    assert by_name.expectation.source == "global-egress"
    assert "pod:globalnet-1/worker->globalnet-1:nxdomain:private:dns-name:dns-udp" in cells


@pytest.fixture
def globalnet_lab(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    before = host_snapshot()
    crossnet("up", "--topology", "globalnet", "--state-dir", str(state))
    try:
        yield state
    finally:
        crossnet("down", "--state-dir", str(state))
        assert_nothing_left(state, before)


def probe(lab: Path, reports: Path) -> tuple[int, dict[str, dict[str, object]]]:
    done = run_suites("suites/test_globalnet.py", "suites/test_snat.py", "--topology", "globalnet", "--attach",
                      str(lab), "--reports", str(reports))
    return done.returncode, {str(c["id"]): c for c in load_matrix(reports)["cells"]}


@needs_lab
def test_three_clusters_through_globalnet(globalnet_lab: Path, tmp_path: Path) -> None:
    rc, cells = probe(globalnet_lab, tmp_path)
    assert rc == 0
    assert Counter(c["verdict"] for c in cells.values()) == {"pass": 738, "isolated": 144}
    egress = {"globalnet-1": "242.0.0.0/16", "globalnet-2": "242.1.0.0/16", "globalnet-3": "242.2.0.0/16"}
    sources = [c for c in cells.values() if c["suite"] == "snat"]
    assert len(sources) == 252 and all(
        ipaddress.ip_address(str(c["source_ip"])) in ipaddress.ip_network(egress[str(c["src"]).split("/")[0]])
        and int(str(c["source_ip"]).rsplit(".", 1)[1]) <= 8 for c in sources)
    answer = cells["pod:globalnet-1/worker->globalnet-2/worker:pod.cluster.clusterset:echo-headless:dns-name:dns-udp"]
    assert answer["answers"] == ["242.1.0.11"]  # agent-worker's GlobalIngressIP in globalnet-2's slice
    assert cells["pod:globalnet-1/worker->globalnet-1:nxdomain:private:dns-name:dns-udp"]["observed"] == "reached"


@needs_lab
def test_without_the_gateway_snat_sources_are_wrong_or_unreached(globalnet_lab: Path, tmp_path: Path) -> None:
    crossnet("exec", "--state-dir", str(globalnet_lab), "globalnet-1/worker", "--", "sh", "-c",
             "iptables -t nat -F SUBMARINER-GN-EGRESS && conntrack -F")
    rc, cells = probe(globalnet_lab, tmp_path)
    assert rc == 1
    broken = {i: c for i, c in cells.items() if c["verdict"] in ("source-mismatch", "regression")}
    assert broken and all(i.split(":")[1].startswith("globalnet-1/") for i in broken)
    # Every globalnet-1 path that reached out before now fails, one way or the other.
    assert not [i for i, c in cells.items() if i.split(":")[1].startswith("globalnet-1/") and c["verdict"] == "pass"
                and ("->globalnet-2" in i or "->globalnet-3" in i) and c["suite"] == "snat"]


@needs_lab
def test_a_route_for_the_peer_pod_cidr_leaks(globalnet_lab: Path, tmp_path: Path) -> None:
    # globalnet-2/worker2's pods (10.244.2.0/24, also globalnet-1's worker2) sent across to it from globalnet-1/worker
    crossnet("exec", "--state-dir", str(globalnet_lab), "globalnet-1/worker", "--", "ip", "route", "replace",
             "10.244.2.0/24", "via", "172.19.0.7")
    rc, cells = probe(globalnet_lab, tmp_path)
    assert rc == 1
    leaks = {i for i, c in cells.items() if c["verdict"] == "leak"}
    # The node's own traffic (from its node IP) crosses and comes back: a leak. Its pod's does not come
    # back: the peer answers the pod IP 10.244.1.2, which in globalnet-2 is globalnet-2's own pod.
    direct = {"host:globalnet-1/worker->globalnet-2/worker2:pod-ip:tcp"}
    assert cells["pod:globalnet-1/worker->globalnet-2/worker2:pod-ip:tcp"]["verdict"] == "isolated"
    # The ClusterIP may leak too, when kube-proxy happens to pick the worker2 endpoint (1 in 3).
    maybe = {f"{kind}:globalnet-1/worker->globalnet-2/echo:cluster-ip:tcp" for kind in ("pod", "host")}
    assert direct <= leaks <= direct | maybe


def ingress(name: str, target: str, ref: str, ip: str | None) -> dict[str, object]:
    """A GlobalIngressIP as Submariner writes it (submariner.io/v1)."""
    spec: dict[str, object] = {"target": target, "serviceRef": {"name": "echo-headless" if "Pod" in target else ref}}
    if target == "HeadlessServicePod":
        spec["podRef"] = {"name": ref}
    return {"apiVersion": "submariner.io/v1", "kind": "GlobalIngressIP",
            "metadata": {"name": name, "namespace": "crossnet-run"}, "spec": spec,
            "status": {"allocatedIP": ip} if ip else {"conditions": []}}


EGRESS = [{"apiVersion": "submariner.io/v1", "kind": "ClusterGlobalEgressIP",
           "metadata": {"name": "cluster-egress.submariner.io"}, "spec": {"numGlobalIPs": 8},
           "status": {"allocatedIPs": [f"242.1.0.{i}" for i in range(1, 9)]}}]


def test_kind_reads_the_allocation_from_submariners_objects() -> None:
    from crossnet.globalnet import GlobalnetObjectsError, allocation_from_objects

    objects = [ingress("echo", "ClusterIPService", "echo", "242.1.0.20"),
               ingress("pod-agent-worker", "HeadlessServicePod", "agent-worker", "242.1.0.31")]
    found = allocation_from_objects("globalnet-2", objects, EGRESS)
    assert (found.cidr, found.egress_range) == ("242.1.0.0/16", "242.1.0.1-242.1.0.8")
    assert found.service_ips == {"echo": "242.1.0.20"} and found.pod_ips == {"agent-worker": "242.1.0.31"}
    with pytest.raises(GlobalnetObjectsError, match=r"GlobalIngressIP echo has no status\.allocatedIP yet"):
        allocation_from_objects("globalnet-2", [ingress("echo", "ClusterIPService", "echo", None)], EGRESS)
    with pytest.raises(GlobalnetObjectsError, match=r"no ClusterGlobalEgressIP cluster-egress\.submariner\.io"):
        allocation_from_objects("globalnet-2", objects, [])
    with pytest.raises(GlobalnetObjectsError, match=r"outside the cluster's slice 242\.1\.0\.0/16"):
        allocation_from_objects("globalnet-2", [ingress("echo", "ClusterIPService", "echo", "242.7.0.1")], EGRESS)
    partial = [{**EGRESS[0], "status": {"allocatedIPs": ["242.1.0.1"]}}]
    with pytest.raises(GlobalnetObjectsError, match="1 of 8 IPs allocated"):
        allocation_from_objects("globalnet-2", objects, partial)


def test_reports_carry_the_global_ip(tmp_path: Path) -> None:
    from crossnet import report

    cell = {"id": "pod:globalnet-1/worker->globalnet-2/echo:global-ip:tcp", "suite": "globalnet",
            "src": "globalnet-1/worker", "src_kind": "pod", "dst": "globalnet-2/echo", "dst_kind": "global-ip",
            "protocol": "tcp", "expected": "yes", "verdict": "pass", "observed": "reached", "global_ip": "242.1.0.9"}
    html = report.render_html({"schema": report.MATRIX_SCHEMA, "run": {"provider": "lab", "profile": "globalnet",
                               "clusters": ["globalnet-1", "globalnet-2"]}, "cells": [cell]})
    assert "global IP" in html and "242.1.0.9" in html
