"""A passing cell's lean run (crossnet/fast_items.py) reports exactly what pytest's own protocol
does -- the same JUnit testcases, outcomes, properties and failures, the same matrix -- while a
failing cell, a cell with skip/xfail marks and `-x` still go through pytest's protocol, and
`-p no:crossnet.fast_items` turns the lean run off."""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from tests.conftest import ROOT
from tests.lab_helpers import crossnet, load_matrix, needs_lab, pytest_argv, run_suites, verdicts

VARYING = {"latency"}  # measured anew by each run


def junit_cases(reports: Path) -> dict[str, dict[str, Any]]:
    cases = {}
    for case in ET.parse(reports / "junit.xml").getroot().iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        message = next((child.get("message", "") for child in case if child.tag in ("failure", "error", "skipped")), "")
        properties = [(p.get("name"), p.get("value")) for p in case.iter("property") if p.get("name") not in VARYING]
        cases[f"{case.get('classname')}::{case.get('name')}"] = {
            "outcome": outcome, "message": message, "properties": properties,
            "system-out": case.find("system-out") is not None,
        }
    return cases


def setups(done: subprocess.CompletedProcess[str]) -> int:
    found = re.search(r"item-counter: (\d+) items through pytest's setup phase", done.stdout)
    assert found, done.stdout[-2000:]
    return int(found.group(1))


@needs_lab
def test_lean_and_pytest_protocol_report_the_same_cells(lab: Path, tmp_path: Path) -> None:
    crossnet("exec", "--state-dir", str(lab), "cluster-1/worker", "--", "ip", "route", "del", "10.20.2.0/24")
    runs = {}
    for name, extra in (("lean", []), ("pytest", ["-p", "no:crossnet.fast_items"])):
        runs[name] = run_suites("suites/test_pod_to_pod.py", "--attach", str(lab), "--reports", str(tmp_path / name),
                                "-p", "tests.item_counter", *extra)
        assert runs[name].returncode == 1, runs[name].stdout[-2000:]
    lean, standard = junit_cases(tmp_path / "lean"), junit_cases(tmp_path / "pytest")
    assert len(lean) == 360 and lean == standard
    failing = {name for name, case in lean.items() if case["outcome"] == "failure"}
    assert len(failing) == 10 and all(lean[name]["system-out"] for name in failing)  # evidence still captured
    assert verdicts(load_matrix(tmp_path / "lean")) == verdicts(load_matrix(tmp_path / "pytest"))
    # Only the failing cells took pytest's setup phase on the lean run; every cell did without it.
    assert setups(runs["lean"]) == 10 and setups(runs["pytest"]) == 360
    # -x: the first failing cell stops the run, as with pytest's protocol.
    stopped = run_suites("suites/test_pod_to_pod.py", "--attach", str(lab), "--reports", str(tmp_path / "x"), "-x")
    assert stopped.returncode == 1 and re.search(r"1 failed, \d+ passed", stopped.stdout), stopped.stdout[-1500:]
    assert int(re.search(r"1 failed, (\d+) passed", stopped.stdout).group(1)) < 350  # type: ignore[union-attr]


@needs_lab
def test_skip_and_xfail_marks_are_honoured(lab: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        pytest_argv("suites/test_dns.py", "--attach", str(lab), "--reports", str(tmp_path), "-p", "tests.item_counter",
                    "-rsx"),
        capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "CROSSNET_TEST_MARKS": "1"},
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert "1 skipped" in done.stdout and "skipped by the user's conftest" in done.stdout
    assert "1 xpassed" in done.stdout  # the xfail-marked cell ran (pytest's protocol) and passed
    assert setups(done) == 1  # the xfail-marked cell; the skipped one never reaches setup's body


def test_cell_locations_are_pytests_own(tmp_path: Path) -> None:
    """crossnet fills in Item.location for the cells (their test function's file and line read once);
    every one equals what pytest computes itself."""
    done = run_suites("suites/", "--collect-only", "-q", "--provider", "lab", "-p", "tests.item_counter",
                      "--reports", str(tmp_path / "reports"), "--state-dir", str(tmp_path / "state"))
    found = re.search(r"item-counter: (\d+) locations filled, (\d+) differ", done.stdout)
    assert done.returncode == 0 and found, done.stdout[-2000:]
    assert int(found.group(1)) > 900 and found.group(2) == "0"
