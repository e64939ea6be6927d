"""The pytest plugin's front door, without bringing anything up: `--collect-only` lists the matrix
(header, ids, skip reasons from the suite registry) as any user, creating no state and writing no
report; options are checked before anything starts; `--attach` checks the run it is given."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crossnet.profile import load_profile
from crossnet.suites import SUITES, suite
from tests.conftest import ROOT
from tests.lab_helpers import needs_lab, run_suites

pytest_plugins = ["pytester"]


def test_collect_only_lists_the_matrix_and_brings_nothing_up(tmp_path: Path) -> None:
    done = run_suites("suites/", "--collect-only", "-q", "--provider", "lab", "--reports", str(tmp_path / "reports"),
                      "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    assert len(ids) > 1000 and len(set(ids)) == len(ids)
    assert not re.search(r"\d+\.\d+\.\d+\.\d+", "".join(ids))  # ids never hold an IP (--lf works)
    assert not (tmp_path / "state").exists() and not (tmp_path / "reports").exists()


def test_the_header_names_provider_topology_profile_and_cells(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(str(ROOT / "suites" / "test_dns.py"), "--collect-only", "--provider",
                                           "lab", "--probe-timeout", "1.5", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([
        "crossnet provider: lab (--provider lab)",
        "crossnet topology: cluster-1 pods 10.10.0.0/16 svc 10.40.0.0/16 domain cluster-1.com (3 nodes), cluster-2 *",
        "crossnet profile: flat-routed (*flat-routed.yaml)",
        "crossnet cells: * probe timeout 1.5s",
    ])


@needs_lab
def test_a_suite_the_setup_does_not_ask_for_is_skipped_with_the_registry_reason(tmp_path: Path) -> None:
    done = run_suites("suites/test_globalnet.py", "-rs", "--provider", "lab", "--reports", str(tmp_path))
    reason = suite("globalnet").skip_reason(load_profile("flat-routed"))
    assert done.returncode == 0 and "1 skipped" in done.stdout and reason[:60] in done.stdout, done.stdout[-1500:]
    assert set(SUITES) == {p.stem.removeprefix("test_").replace("_", "-") for p in (ROOT / "suites").glob("test_*.py")
                           } - {"plumbing"}


def test_an_unknown_topology_or_provider_is_a_usage_error(tmp_path: Path) -> None:
    for args in (["--topology", "mesh"], ["--provider", "cloud"]):
        done = run_suites("suites/", "--collect-only", *args, "--reports", str(tmp_path))
        assert done.returncode == 4 and "invalid choice" in done.stderr and "Traceback" not in done.stderr


def test_attach_to_a_directory_without_a_run_is_one_clear_error(tmp_path: Path) -> None:
    done = run_suites("suites/test_dns.py", "--attach", str(tmp_path), "--reports", str(tmp_path / "r"))
    out = done.stdout + done.stderr
    assert done.returncode in (3, 4) and "no crossnet state" in out and "Traceback" not in out
