"""The bgp topology: Calico without encapsulation, clusters joined by BGP through a top-of-rack
switch, an office host and an enterprise DNS behind it. The configuration text and the cells are
checked as data; then the lab runs real BIRD and unbound, each profile's matrix holds, and each
fault of the field gives exactly its cells: BIRD stopped on an ingress node, the service range
withdrawn, a disabled pool removed, an enterprise DNS forward zone removed."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from crossnet.bgp import cluster_as, ingress_nodes
from crossnet.config import ConfigError, load_topology
from crossnet.model import Cluster, NodeSpec
from crossnet.options import load_setup
from crossnet.plumbing.bgp import BgpSpeaker, bird_conf, nat_outgoing_rules, unbound_conf
from crossnet.profile import ProfileError, load_profile
from crossnet.providers.lab.bgp import missing_tools
from crossnet.suites import suite
from tests.lab_helpers import (
    assert_nothing_left,
    crossnet,
    down,
    host_snapshot,
    lab_unavailable_reason,
    load_matrix,
    run_suites,
    verdicts,
)

BGP = load_setup("bgp", None, None)
needs_bgp_lab = pytest.mark.skipif(
    bool(lab_unavailable_reason() or missing_tools()), reason=str(lab_unavailable_reason() or missing_tools())
)


# ------------------------------------------------------------------------------ as data


def test_the_kind_configs_declare_calico_clusters_with_an_ingress_node() -> None:
    assert [c.name for c in BGP.topology.clusters] == ["bgp-1", "bgp-2"]
    assert [cluster_as(BGP.topology, c.name) for c in BGP.topology.clusters] == [64513, 64514]
    assert [[n.short for n in ingress_nodes(c)] for c in BGP.topology.clusters] == [["worker"], ["worker"]]
    assert BGP.profile.name == "bgp-flat" and BGP.profile.plumbing.bgp is not None


def test_a_bad_label_is_a_config_error_and_a_cluster_without_one_uses_its_first_worker(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: x\nnodes:\n  - role: control-plane\n"
                   "  - role: worker\n    labels: {'bad key!': 'true', ok: {nested: 1}}\n")
    with pytest.raises(ConfigError) as caught:
        load_topology([bad, bad])
    text = str(caught.value)
    assert "nodes[1].labels" in text and "'bad key!'" in text and "is not a Kubernetes label value" in text
    plain = Cluster("y", "10.9.0.0/16", "10.99.0.0/16", "y.com", (
        NodeSpec("y", "control-plane", "control-plane"), NodeSpec("y", "worker", "worker"),
        NodeSpec("y", "worker2", "worker", (("crossnet.io/bgp-ingress", "false"),))))
    assert [n.short for n in ingress_nodes(plain)] == ["worker"]
    labelled = Cluster("z", "10.9.0.0/16", "10.99.0.0/16", "z.com", (
        NodeSpec("z", "control-plane", "control-plane"), NodeSpec("z", "worker", "worker"),
        NodeSpec("z", "worker2", "worker", (("crossnet.io/bgp-ingress", "true"),))))
    assert [n.short for n in ingress_nodes(labelled)] == ["worker2"]


def test_profile_bgp_keys_are_validated_together(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nglobalnet: true\nplumbing:\n  bgp: {switch_as: 70000, keep_source: maybe, peers: 2}\n"
                    "defaults: {reachable: yes}\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    text = str(caught.value)
    for fragment in ("switch_as is 70000", "keep_source is 'maybe'", "unknown key 'peers'", "drop global_cidr"):
        assert fragment in text, text
    path.write_text("name: p\nplumbing:\n  bgp: {switch_as: 64514}\ndefaults: {reachable: yes}\n")
    with pytest.raises(ProfileError, match=r"switch_as is 64514; .* a cluster's AS"):
        load_profile(str(path))
    assert load_profile("bgp-flat-svc").plumbing.bgp.advertise_service_ips  # type: ignore[union-attr]
    assert load_profile("bgp-flat-keep-source").plumbing.bgp.keep_source  # type: ignore[union-attr]


def test_bird_and_unbound_configs_say_what_calico_and_the_field_guide_do() -> None:
    node = bird_conf(BgpSpeaker("bgp-1.worker", "172.19.0.3", 64513, ("10.30.1.0/24",), ("10.130.0.0/16",),
                                ("172.19.0.2",), (("172.19.255.254", 65200),)))
    assert "route 10.30.1.0/24 blackhole;" in node and "protocol static announced" in node
    assert "neighbor 172.19.0.2 as 64513; direct;" in node and "neighbor 172.19.255.254 as 65200;" in node
    assert "hold time 3; keepalive time 1;" in node  # lab timers: default ones cost ~6 s per bring-up
    assert 'if proto = "own_blocks" then accept' in node  # the service range is announced, never installed
    for hostile in (BgpSpeaker("x", "172.19.0.3; }", 1), BgpSpeaker("x", "172.19.0.3", 0),
                    BgpSpeaker("x", "172.19.0.3", 1, blocks=("10.0.0.0/8 blackhole; }",))):
        with pytest.raises(ValueError):
            bird_conf(hostile)
    conf = unbound_conf("192.168.200.53", "/s/edns", [("bgp-1.com", ("10.30.0.3",))], "/s/edns/c")
    assert 'forward-zone:\n  name: "bgp-1.com"\n  forward-addr: 10.30.0.3' in conf
    assert 'local-zone: "." refuse' in conf and 'local-zone: "bgp-1.com." transparent' in conf
    assert 'module-config: "iterator"' in conf  # no validator: a private zone would time out
    with pytest.raises(ValueError):
        unbound_conf("192.168.200.53", "/s", [('x.com"\nserver:', ("10.0.0.1",))], "/s/c")
    assert nat_outgoing_rules("10.30.0.0/16", ("10.31.0.0/16",))[-2:] == [
        "-A cali-nat-outgoing -s 10.30.0.0/16 -d 10.31.0.0/16 -j RETURN",
        "-A cali-nat-outgoing -s 10.30.0.0/16 -j MASQUERADE",
    ]


def test_the_external_suite_asks_from_and_to_the_office() -> None:
    cells = [c for c in BGP.cells if c.suite == "external"]
    by_direction = Counter("in" if c.vantage.kind == "external" else "out" for c in cells)
    # in: per cluster ClusterIP (2) + echo name (4) + headless name (2) + per node pod (5) + NodePort (2) + own name (1)
    assert by_direction == {"in": 2 * (8 + 3 * 8), "out": 2 * 3 * 2 * 3}
    isolated = {c.id for c in cells if c.expectation.reachable == "no"}
    assert isolated == {c.id for c in cells if c.target.kind == "cluster-ip"
                        or (c.target.form == "full" and c.probe.protocol in ("tcp", "udp"))}
    assert "external:office/host->bgp-1/worker:pod-ip:icmp" in {c.id for c in cells}
    assert "pod:bgp-2/worker->office/host:external-host:tcp" in {c.id for c in cells}
    assert "--topology bgp" in suite("external").skip_reason(load_profile("flat-routed"))
    assert not [c for c in load_setup("routed", None, None).cells if c.suite == "external"]


# ------------------------------------------------------------------------------ the lab


def _up(tmp_path: Path, profile: str) -> Path:
    state = tmp_path / "s"
    crossnet("up", "--topology", "bgp", "--profile", profile, "--state-dir", str(state))
    return state


def _attached(state: Path, tmp_path: Path, profile: str, *args: str) -> dict[str, str]:
    reports = tmp_path / f"r{time.monotonic_ns()}"
    run_suites("suites/", "--topology", "bgp", "--profile", profile, "--attach", str(state), "--reports",
               str(reports), *args)
    return verdicts(load_matrix(reports))


def _exec(state: Path, target: str, command: str) -> str:
    return crossnet("exec", "--state-dir", str(state), target, "--", "sh", "-c", command).stdout


def _bird_control(state: Path, netns: str) -> str:
    return str(json.loads((state / "state.json").read_text())["bgp"]["bird"][netns]["control"])


def _wait(state: Path, target: str, command: str, want: bool) -> None:
    """Poll until `command` succeeds (want) or fails (not want) in target: BGP converging."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ok = crossnet("exec", "--state-dir", str(state), target, "--", "sh", "-c", command, check=False).returncode == 0
        if ok == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{target}: `{command}` did not become {want}")


@needs_bgp_lab
@pytest.mark.parametrize("profile", ["bgp-flat", "bgp-flat-svc", "bgp-flat-keep-source"])
def test_each_profile_holds_on_the_lab_and_leaves_nothing(tmp_path: Path, profile: str) -> None:
    before = host_snapshot()
    done = run_suites("suites/", "--topology", "bgp", "--profile", profile, "--state-dir", str(tmp_path / "s"),
                      "--reports", str(tmp_path / "r"))
    assert done.returncode == 0, done.stdout[-3000:]
    assert "BGP joins the clusters" in done.stderr
    cells = verdicts(load_matrix(tmp_path / "r"))
    office_to_cluster_ip = cells["external:office/host->bgp-1/echo:cluster-ip:tcp"]
    assert office_to_cluster_ip == ("pass" if profile == "bgp-flat-svc" else "isolated")
    assert cells["external:office/host->bgp-2/worker2:pod-ip:tcp-1400b"] == "pass"
    assert cells["pod:bgp-1/worker2->bgp-2/worker2:pod-ip:tcp:source"] == "pass"  # node-ip, or preserved
    assert cells["pod:bgp-1/worker2->office/host:external-host:tcp:source"] == "pass"  # SNATed to the node
    assert_nothing_left(tmp_path / "s", before)


@needs_bgp_lab
def test_bird_stopped_on_an_ingress_node_cuts_the_office_and_the_peer_and_the_facts_name_the_session(
    tmp_path: Path,
) -> None:
    state = _up(tmp_path, "bgp-flat")
    try:
        _exec(state, "bgp-1/worker", f"birdc -s {_bird_control(state, 'bgp-1.worker')} down")
        _wait(state, "office/tor", "ip route show proto bird | grep -q 10.30.0.0/24", want=False)
        cells = _attached(state, tmp_path, "bgp-flat")
        into_bgp1 = {i: v for i, v in cells.items() if i.startswith(("external:", "pod:bgp-2/")) and "->bgp-1/" in i
                     and ":pod-ip:" in i and not i.endswith(":source")}
        assert into_bgp1 and set(into_bgp1.values()) == {"regression"}, Counter(into_bgp1.values())
        into_bgp2 = {i: v for i, v in cells.items() if i.startswith("external:") and "->bgp-2/" in i
                     and ":pod-ip:" in i}
        assert into_bgp2 and set(into_bgp2.values()) == {"pass"}
        matrix = load_matrix(max(tmp_path.glob("r*")))
        cut_off = "external:office/host->bgp-1/worker:pod-ip:tcp"
        evidence = next(c["evidence"] for c in matrix["cells"] if c["id"] == cut_off)
        assert "office/tor: BGP sessions (birdc show protocols)" in evidence and "the switch's routes" in evidence
        assert "bgp-1/worker: BGP sessions" not in evidence or "Established" not in evidence.split("office/tor")[0]
        facts = {f["id"]: f for f in matrix["facts"]}
        session = facts["office/tor:bgp-session:bgp-1/worker"]
        assert not session["ok"] and "Established" not in session["observed"], session
        assert facts["office/tor:bgp-session:bgp-2/worker"]["ok"]
    finally:
        down(state)


@needs_bgp_lab
def test_a_withdrawn_service_range_fails_exactly_the_office_cells_to_that_clusterip(tmp_path: Path) -> None:
    state = _up(tmp_path, "bgp-flat-svc")
    try:
        for node in ("control-plane", "worker", "worker2"):
            _exec(state, f"bgp-1/{node}", f"birdc -s {_bird_control(state, f'bgp-1.{node}')} disable announced")
        _wait(state, "office/tor", "ip route show proto bird | grep -q 10.130.0.0/16", want=False)
        cells = _attached(state, tmp_path, "bgp-flat-svc", "-k", "test_external")
        failing = {i for i, v in cells.items() if v != "pass"}
        assert failing == {i for i in cells if i.startswith("external:") and (
            i.startswith("external:office/host->bgp-1/echo:cluster-ip") or i.startswith(
                "external:office/host->bgp-1:full:echo:dns-name:tcp") or i.startswith(
                "external:office/host->bgp-1:full:echo:dns-name:udp"))}, failing
        assert {cells[i] for i in failing} == {"regression"}
    finally:
        down(state)


@needs_bgp_lab
def test_a_removed_disabled_pool_gives_source_mismatch_on_exactly_the_cross_cluster_source_cells(
    tmp_path: Path,
) -> None:
    state = _up(tmp_path, "bgp-flat-keep-source")
    try:
        for node in ("control-plane", "worker", "worker2"):
            _exec(state, f"bgp-2/{node}", "iptables -t nat -D cali-nat-outgoing -s 10.31.0.0/16 -d 10.30.0.0/16 "
                                          "-j RETURN && conntrack -F 2>/dev/null; true")
        cells = _attached(state, tmp_path, "bgp-flat-keep-source", "-k", "test_snat")
        wrong = {i for i, v in cells.items() if v != "pass"}
        assert wrong == {i for i in cells if i.startswith("pod:bgp-2/") and "->bgp-1/" in i
                         and (":pod-ip:" in i or ":headless:" in i)}, wrong
        assert {cells[i] for i in wrong} == {"source-mismatch"}
    finally:
        down(state)


@needs_bgp_lab
def test_a_removed_forward_zone_fails_exactly_that_domains_office_dns_cells(tmp_path: Path) -> None:
    state = _up(tmp_path, "bgp-flat")
    try:
        conf = json.loads((state / "state.json").read_text())["bgp"]["unbound"]["conf"]
        _exec(state, "office/dns", f"unbound-control -c {conf} forward_remove bgp-1.com")
        cells = _attached(state, tmp_path, "bgp-flat", "-k", "test_external")
        failing = {i for i, v in cells.items() if v not in ("pass", "isolated")}
        assert failing == {i for i in cells if i.startswith("external:office/host->bgp-1") and (
            ":dns-udp" in i or ":dns-tcp" in i or ":headless:" in i)}, failing
        assert {cells[i] for i in failing} == {"regression"}
    finally:
        down(state)


def test_a_provider_without_the_office_network_skips_its_cells_saying_why() -> None:
    from crossnet.existing_mode import refused
    from crossnet.providers.lab.clusterset import live_cluster_set
    from crossnet.providers.lab.topology import plan_lab

    without_office = live_cluster_set(plan_lab(BGP.topology))
    outbound = next(c for c in BGP.cells if c.target.kind == "external-host")
    why = refused(object(), outbound, without_office)
    assert why is not None and "'office'" in why and "--provider lab" in why
    inside = next(c for c in BGP.cells if c.suite == "pod-to-pod")
    assert refused(object(), inside, without_office) is None


def test_a_node_of_the_target_cluster_is_its_ip_or_its_pod_gateway_whatever_its_pod_cidr_looks_like() -> None:
    from dataclasses import replace

    from crossnet.live import live_cell
    from crossnet.providers.lab.bgp import outside_cluster
    from crossnet.providers.lab.clusterset import live_cluster_set
    from crossnet.providers.lab.topology import plan_lab

    cluster_set = replace(live_cluster_set(plan_lab(BGP.topology)), outside=(outside_cluster(),))
    cell = next(c for c in BGP.cells if c.id == "external:office/host->bgp-1/worker:echo:node-port:tcp:source")
    assert "10.30.1.1" in live_cell(cell, cluster_set, 2.0).target_node_ips  # bgp-1/worker's pod gateway
    bgp1 = cluster_set.cluster("bgp-1")
    cidrs = ["fd00::/64", "", "10.30.2.7/24"]  # IPv6, none, host bits set: never a crash
    odd = replace(bgp1, nodes=tuple(replace(n, pod_cidr=c) for n, c in zip(bgp1.nodes, cidrs, strict=True)))
    weird = replace(cluster_set, clusters=(odd, cluster_set.cluster("bgp-2")))
    assert live_cell(cell, weird, 2.0).target_node_ips == ("172.19.0.2", "172.19.0.3", "172.19.0.4", "10.30.2.1")
