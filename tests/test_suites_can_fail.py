"""The suites can fail, and fail exactly where the fault is: a removed node route breaks only
the cells that depend on it; a wrong forward IP in a Corefile breaks only that cluster's
peer-domain DNS cells. Each fault is made by hand on a run started with `crossnet up`."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from crossnet.providers.lab.provider import LabProvider
from tests.lab_helpers import crossnet, load_matrix, needs_lab, run_suites

pytestmark = needs_lab


def failures_in_junit(reports: Path) -> dict[str, str]:
    failures = {}
    for case in ET.parse(reports / "junit.xml").getroot().iter("testcase"):
        failure = case.find("failure")
        if failure is not None:
            cell_id = re.search(r"\[(.*)\]$", case.get("name", ""))
            assert cell_id is not None
            failures[cell_id.group(1)] = failure.get("message", "") + (failure.text or "")
    return failures


def system_outs(reports: Path) -> dict[str, str]:
    outs = {}
    for case in ET.parse(reports / "junit.xml").getroot().iter("testcase"):
        out = case.find("system-out")
        name = re.search(r"\[(.*)\]$", case.get("name", ""))
        if out is not None and name is not None:
            outs[name.group(1)] = out.text or ""
    return outs


def test_removed_route_fails_exactly_the_cells_behind_it(lab: Path, tmp_path: Path) -> None:
    status = crossnet("status", "--state-dir", str(lab)).stdout
    assert re.search(r"worker2\s+worker\s+172\.19\.0\.7\s+podCIDR 10\.20\.2\.0/24", status), status
    crossnet("exec", "--state-dir", str(lab), "cluster-1/worker", "--", "ip", "route", "del", "10.20.2.0/24")
    routes = crossnet("exec", "--state-dir", str(lab), "cluster-1/worker", "--", "ip", "route").stdout
    assert "10.20.2.0/24" not in routes and "10.20.1.0/24 via 172.19.0.6" in routes

    done = run_suites("suites/test_pod_to_pod.py", "--attach", str(lab), "--reports", str(tmp_path))
    assert done.returncode == 1
    cells = load_matrix(tmp_path)["cells"]
    regressed = {c["id"] for c in cells if c["verdict"] == "regression"}
    # Only cluster-1/worker (its pod and its host) to the pod on cluster-2/worker2 need that route:
    # replies come back to the sender's node IP, which the underlay reaches directly.
    expected = {f"{kind}:cluster-1/worker->cluster-2/worker2:pod-ip:{proto}"
                for kind in ("pod", "host") for proto in ("tcp", "udp", "icmp", "tcp-1400b", "udp-1400b")}
    assert regressed == expected
    assert all(c["verdict"] == "pass" for c in cells if c["id"] not in expected)
    failures = failures_in_junit(tmp_path)
    assert set(failures) == expected
    tcp = failures["pod:cluster-1/worker->cluster-2/worker2:pod-ip:tcp"]
    assert "cluster-1/worker pod 10.10.1.2 -> cluster-2 pod cluster-2/worker2 10.20.2.2:8080/tcp" in tcp
    assert "expected reachable (flat-routed#defaults)" in tcp
    repro = f"repro: crossnet exec --state-dir {lab} cluster-1/worker/agent -- crossnet-agent probe tcp 10.20.2.2 8080"
    assert repro in tcp
    # The evidence comes from both ends of the path, in JUnit's system-out and in the matrix.
    evidence = next(c for c in cells if c["id"] == "pod:cluster-1/worker->cluster-2/worker2:pod-ip:tcp")["evidence"]
    for needle in ("=== cluster-1/worker: ip route ===", "=== cluster-2/worker2: ip route ===",
                   "=== cluster-1/worker: iptables -t nat ===", "-A KIND-MASQ-AGENT", "rp_filter",
                   "=== cluster-1/worker: conntrack for 10.10.1.2 10.20.2.2 ==="):
        assert needle in evidence, needle
    assert "10.20.2.0/24" not in evidence.split("=== cluster-1/worker: ip rule")[0]  # the missing route, seen
    assert evidence in system_outs(tmp_path)["pod:cluster-1/worker->cluster-2/worker2:pod-ip:tcp"]
    # The plumbing suite names the cause: exactly that route on that node.
    plumbing = run_suites("suites/test_plumbing.py", "--attach", str(lab), "--reports", str(tmp_path / "p"))
    assert plumbing.returncode == 1
    assert failures_in_junit(tmp_path / "p").keys() == {"cluster-1/worker:route-to:cluster-2/worker2"}
    assert "expected route 10.20.2.0/24 via 172.19.0.7, found no route" in plumbing.stdout
    # The repro command really reproduces it (and the probe reports what it saw).
    repro = crossnet("exec", "--state-dir", str(lab), "cluster-1/worker/agent", "--", "crossnet-agent",
                     "probe", "tcp", "10.20.2.2", "8080", "--timeout", "1", check=False)
    assert repro.returncode == 1 and '"reached": false' in repro.stdout


def test_wrong_forward_ip_fails_only_peer_domain_dns_cells(lab: Path, tmp_path: Path) -> None:
    provider = LabProvider.attach(lab)
    corefile = provider.read_corefile("cluster-1")
    assert "forward . 10.20.0.3" in corefile  # cluster-2's DNS server pod
    # Point cluster-1's forward for cluster-2.com at a cluster-2 pod that serves no DNS.
    provider.write_corefile("cluster-1", corefile.replace("forward . 10.20.0.3", "forward . 10.20.1.2"))

    done = run_suites("suites/test_dns.py", "--attach", str(lab), "--reports", str(tmp_path))
    assert done.returncode == 1
    cells = load_matrix(tmp_path)["cells"]
    failed = {c["id"] for c in cells if c["verdict"] != "pass"}
    expected = {c["id"] for c in cells if c["id"].startswith("pod:cluster-1/") and "->cluster-2:" in c["id"]}
    # 3 pods x ((full, fqdn, nxdomain, external) x 2 protocols + the padded full name x 2)
    assert failed == expected and len(expected) == 3 * (4 * 2 + 2)
    observed = {c["observed"] for c in cells if c["id"] in expected}
    assert observed <= {"servfail", "timeout"}, observed
    evidence = next(c for c in cells if c["id"] in expected)["evidence"]
    assert "=== cluster-1: Corefile ===" in evidence and "forward . 10.20.1.2" in evidence
    provider.write_corefile("cluster-1", corefile)
