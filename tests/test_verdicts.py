"""Every verdict kind arises from a real change to a running lab, and only where it should:
leak (a route that should not exist), source-mismatch (masquerade switched off), flaky (a
path that drops its first packet), optional, isolated and pass (regression: see
test_suites_can_fail.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tests.lab_helpers import crossnet, load_matrix, needs_lab, run_suites

pytestmark = needs_lab


def on(lab: Path, target: str, *argv: str) -> None:
    crossnet("exec", "--state-dir", str(lab), target, "--", *argv)


def probe(lab: Path, reports: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = run_suites(*args, "--attach", str(lab), "--reports", str(reports))
    cells = {c["id"]: c for c in load_matrix(reports)["cells"]}
    return done.returncode, cells


def test_a_route_to_the_peer_service_subnet_leaks(lab: Path, tmp_path: Path) -> None:
    rc, cells = probe(lab, tmp_path / "before", "suites/test_service.py")
    assert rc == 0
    isolated = {i for i, c in cells.items() if c["verdict"] == "isolated"}
    assert "pod:cluster-1/worker->cluster-2/echo:cluster-ip:tcp" in isolated
    # Route cluster-2's serviceSubnet through its control-plane, on cluster-1/worker only.
    on(lab, "cluster-1/worker", "ip", "route", "add", "10.50.0.0/16", "via", "172.19.0.5")
    rc, cells = probe(lab, tmp_path / "after", "suites/test_service.py")
    assert rc == 1
    leaks = {i for i, c in cells.items() if c["verdict"] == "leak"}
    assert leaks == {f"{kind}:cluster-1/worker->cluster-2/echo:cluster-ip:{proto}"
                     for kind in ("pod", "host") for proto in ("tcp", "udp")}
    assert {i for i, c in cells.items() if c["verdict"] == "isolated"} == isolated - leaks
    assert "expected isolated (flat-routed#1), got reached" in cells[sorted(leaks)[0]]["message"]
    # Last night vs tonight: `crossnet diff` names exactly the cells whose verdict changed.
    diff = crossnet("diff", str(tmp_path / "before" / "matrix.json"), str(tmp_path / "after" / "matrix.json"),
                    "--exit-code", check=False)
    assert diff.returncode == 1
    changed = {line.split()[-1] for line in diff.stdout.splitlines() if "<-" in line}
    assert changed == leaks and all("leak" in line and "isolated" in line for line in diff.stdout.splitlines()
                                    if "<-" in line), diff.stdout


def test_masquerade_off_is_a_source_mismatch(lab: Path, tmp_path: Path) -> None:
    on(lab, "cluster-1/worker", "iptables", "-t", "nat", "-I", "KIND-MASQ-AGENT", "1", "-d", "10.20.0.0/16",
       "-j", "RETURN")
    on(lab, "cluster-1/worker", "conntrack", "-F")
    rc, cells = probe(lab, tmp_path, "suites/test_pod_to_pod.py", "suites/test_snat.py")
    assert rc == 1
    mismatched = {i: c for i, c in cells.items() if c["verdict"] == "source-mismatch"}
    assert set(mismatched) == (
        {f"pod:cluster-1/worker->cluster-2/{n}:pod-ip:{p}:source" for n in ("control-plane", "worker", "worker2")
         for p in ("tcp", "udp")}
        | {f"pod:cluster-1/worker->cluster-2/{n}:echo-headless:headless:tcp:source"
           for n in ("control-plane", "worker", "worker2")})
    cell = mismatched["pod:cluster-1/worker->cluster-2/worker2:pod-ip:tcp:source"]
    assert (cell["source_ip"], cell["expected_source_ip"]) == ("10.10.1.2", "172.19.0.3")
    # Reachability itself did not change: the pod-to-pod suite still passes everywhere.
    assert all(c["verdict"] == "pass" for c in cells.values() if c["suite"] == "pod-to-pod")


def test_a_path_that_drops_its_first_packet_is_flaky(lab: Path, tmp_path: Path) -> None:
    # On cluster-1/worker, drop the first small UDP datagram its pod forwards to cluster-2/worker2's pod.
    on(lab, "cluster-1/worker", "iptables", "-I", "FORWARD", "-s", "10.10.1.2", "-d", "10.20.2.2", "-p", "udp",
       "--dport", "8080", "-m", "length", "--length", "0:200", "-m", "statistic", "--mode", "nth", "--every",
       "1000000", "--packet", "0", "-j", "DROP")
    rc, cells = probe(lab, tmp_path / "lenient", "suites/test_pod_to_pod.py")
    flaky = [i for i, c in cells.items() if c["verdict"] == "flaky"]
    assert flaky == ["pod:cluster-1/worker->cluster-2/worker2:pod-ip:udp"] and rc == 0
    assert cells[flaky[0]]["retried"] is True and "then reached on the re-probe" in cells[flaky[0]]["message"]
    on(lab, "cluster-1/worker", "iptables", "-R", "FORWARD", "1", "-s", "10.10.1.2", "-d", "10.20.2.2", "-p",
       "udp", "--dport", "8080", "-m", "length", "--length", "0:200", "-m", "statistic", "--mode", "nth",
       "--every", "1000000", "--packet", "0", "-j", "DROP")  # a fresh counter: the next first packet drops
    rc, cells = probe(lab, tmp_path / "strict", "suites/test_pod_to_pod.py", "--strict-flakes")
    assert rc == 1 and Counter(c["verdict"] for c in cells.values())["flaky"] == 1


def test_optional_cells_never_fail(lab: Path, tmp_path: Path) -> None:
    profile = tmp_path / "optional.yaml"
    profile.write_text("name: optional-svc\nrules:\n"
                       "  - match: {suite: service, target: cluster-ip, scope: peer-cluster}\n"
                       "    expect: {reachable: optional}\n    because: peer ClusterIPs are best effort here\n"
                       "  - match: {suite: service, form: external-name, scope: peer-cluster, protocol: tcp}\n"
                       "    expect: {reachable: optional}\n    because: it leads to a peer ClusterIP\n")
    on(lab, "cluster-2/control-plane", "ip", "route", "add", "10.40.0.0/16", "via", "172.19.0.2")
    rc, cells = probe(lab, tmp_path / "r", "suites/test_service.py", "--profile", str(profile))
    optional = {i: c for i, c in cells.items() if c["verdict"] == "optional"}
    # 12 vantages x tcp/udp to the peer's ClusterIP, and cluster-2's 6 vantages through the ExternalName
    assert rc == 0 and len(optional) == 12 * 2 + 6
    reached = {i for i, c in optional.items() if c["observed"] == "reached"}
    # Only cluster-2/control-plane (its pod and its host) has the new route.
    assert reached == {f"{kind}:cluster-2/control-plane->{dst}" for kind in ("pod", "host") for dst in (
        "cluster-1/echo:cluster-ip:tcp", "cluster-1/echo:cluster-ip:udp",
        "cluster-1:external-name:proxy-to-cluster-1:dns-name:tcp")}
