"""`pytest suites/` on the lab, end to end: the matrix, the reports, xdist, and cleanup after a
passing run, a failing run, Ctrl-C and kill -9 (the run must leave nothing behind)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.lab_helpers import (
    ROOT,
    assert_nothing_left,
    host_snapshot,
    load_matrix,
    needs_lab,
    pytest_argv,
    run_suites,
    verdicts,
    wait_for_phase,
)

pytestmark = needs_lab


@pytest.fixture(scope="module")
def green_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    base = tmp_path_factory.mktemp("green")
    state, reports = base / "state", base / "reports"
    before = host_snapshot()
    done = run_suites("suites/", "--state-dir", str(state), "--reports", str(reports))
    assert_nothing_left(state, before)
    return state, reports, done


def test_default_run_is_a_green_matrix_with_every_report(green_run: tuple[Path, Path, Any]) -> None:
    _, reports, done = green_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    matrix = load_matrix(reports)
    counts = Counter(c["verdict"] for c in matrix["cells"])
    assert set(counts) == {"pass", "isolated"} and sum(counts.values()) >= 250
    # Under flat-routed exactly the peer ClusterIPs (and the ExternalName that leads to one) are isolated.
    def crosses(cell_id: str) -> bool:
        src, dst = re.match(r"\w+:([\w-]+)/.*->([\w-]+)[/:]", cell_id).groups()  # type: ignore[union-attr]
        return bool(src != dst)

    assert {c["id"] for c in matrix["cells"] if c["verdict"] == "isolated"} == {
        c["id"] for c in matrix["cells"] if crosses(c["id"])
        and (c["dst_kind"] == "cluster-ip" or (c["protocol"] == "tcp" and "proxy-to" in c["id"]))}
    assert {c["suite"] for c in matrix["cells"]} == {"pod-to-pod", "dns", "service", "snat"}
    # The operators' finding comes out of measurement: across clusters the node IP, within a cluster the pod IP.
    cells = {c["id"]: c for c in matrix["cells"]}
    cross = cells["pod:cluster-1/worker->cluster-2/worker2:pod-ip:tcp:source"]
    assert (cross["verdict"], cross["source_ip"], cross["src_ip"]) == ("pass", "172.19.0.3", "10.10.1.2")
    assert cells["pod:cluster-1/worker->cluster-1/worker2:pod-ip:udp:source"]["source_ip"] == "10.10.1.2"
    for name in ("junit.xml", "report.html", "matrix.html", "matrix.json", "summary.md"):
        assert (reports / name).stat().st_size > 0, name
    cases = ET.parse(reports / "junit.xml").getroot().iter("testcase")
    props = [{p.get("name"): p.get("value") for p in case.iter("property")} for case in cases]
    props = [p for p in props if "src" in p]  # the plumbing suite's facts are not matrix cells
    assert len(props) == len(matrix["cells"])
    assert not [c["dst"] for c in matrix["cells"] if "{ns}" in c["dst"]]
    wanted = {"src", "dst", "protocol", "expected", "observed", "source-ip", "latency", "rule"}
    assert all(wanted <= set(p) for p in props)
    html = (reports / "report.html").read_text()
    assert "<script src=\"http" not in html and "test_pod_to_pod" in html  # self-contained pytest-html
    assert "crossnet provider: lab" in done.stdout  # the header says what ran


def test_xdist_gives_the_same_cells_and_verdicts(green_run: tuple[Path, Path, Any], tmp_path: Path) -> None:
    _, reports, _ = green_run
    before = host_snapshot()
    done = run_suites("suites/", "-n", "2", "--state-dir", str(tmp_path / "state"), "--reports", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:]
    assert verdicts(load_matrix(tmp_path)) == verdicts(load_matrix(reports))
    assert done.stdout.count("lab topology up") <= 1  # one topology, owned by the controller
    assert_nothing_left(tmp_path / "state", before)


def test_failing_run_leaves_nothing(tmp_path: Path) -> None:
    profile = tmp_path / "wrong.yaml"
    profile.write_text("name: wrong\nrules:\n  - match: {suite: pod-to-pod, scope: peer-cluster}\n"
                       "    expect: {reachable: no}\n    because: deliberately wrong, to make the run fail\n")
    before = host_snapshot()
    done = run_suites("suites/test_pod_to_pod.py", "--profile", str(profile), "--state-dir", str(tmp_path / "s"),
                      "--reports", str(tmp_path / "r"))
    assert done.returncode == 1, done.stdout[-2000:]
    counts = Counter(verdicts(load_matrix(tmp_path / "r")).values())
    assert counts["leak"] == 12 * 3 * 5  # 12 vantages x 3 peer pods x (tcp, udp, icmp, tcp and udp 1400 bytes)
    assert_nothing_left(tmp_path / "s", before)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_run_leaves_nothing(tmp_path: Path, sig: signal.Signals) -> None:
    state = tmp_path / "state"
    before = host_snapshot()
    # A test that holds the session open comes first, so the signal surely lands mid-run.
    argv = pytest_argv("tests/data/hold_run_open.py", "suites/", "--state-dir", str(state),
                       "--reports", str(tmp_path / "r"))
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CROSSNET_TEST_HOLD": "60"})
    wait_for_phase(state, "ready", proc)
    started = time.monotonic()
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=60)
    gone = assert_nothing_left(state, before)
    print(f"{sig.name}: pytest exited {proc.returncode}; run gone {time.monotonic() - started:.3f}s after the "
          f"signal (processes {gone:.3f}s after exit)")
    if sig == signal.SIGINT:
        assert proc.returncode == 2, out[-2000:] + err[-2000:]  # pytest's "interrupted"
        assert "torn down" in err
    else:
        assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("profile", ["flat-routed-svc", "no-masquerade"])
def test_the_other_profiles_hold_on_the_lab(tmp_path: Path, profile: str) -> None:
    before = host_snapshot()
    done = run_suites("suites/test_service.py", "suites/test_snat.py", "suites/test_plumbing.py", "--profile",
                      profile, "--state-dir", str(tmp_path / "s"), "--reports", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:]
    cells = {c["id"]: c for c in load_matrix(tmp_path)["cells"]}
    if profile == "flat-routed-svc":  # peer ClusterIPs pass: routed through the peer's gateway node
        assert cells["pod:cluster-1/worker->cluster-2/echo:cluster-ip:tcp"]["verdict"] == "pass"
        assert not [c for c in cells.values() if c["verdict"] != "pass"]
    else:  # the peer pod sees the sender's pod IP
        cell = cells["pod:cluster-1/worker->cluster-2/worker2:echo-headless:headless:tcp:source"]
        assert (cell["verdict"], cell["source_ip"], cell["expected_source"]) == ("pass", "10.10.1.2", "preserved")
    assert_nothing_left(tmp_path / "s", before)
