"""A bring-up that fails in any of the lab's scripts leaves nothing behind: no sandbox process, no
state directory (a failure injected into each script `LabProvider.up` runs, through `crossnet up`)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.lab_helpers import needs_lab, processes_mentioning

pytestmark = needs_lab

INJECT = """
import sys
import crossnet.providers.lab.topology as T
name = sys.argv[1]
original = getattr(T, name)
def broken(*args):
    return original(*args).replace("link set dev lo up", "link add name x0 type no-such-kind", 1)
setattr(T, name, broken)
from crossnet.cli import main
sys.exit(main(["up", "--state-dir", sys.argv[2]]))
"""


@pytest.mark.parametrize("script", ["underlay_script", "node_script", "pod_script"])
def test_a_bring_up_failing_in_any_script_leaves_nothing(script: str, tmp_path: Path) -> None:
    state_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", INJECT, script, str(state_dir)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "configure" in done.stderr, done.stderr[-800:]
    assert "Traceback" not in done.stderr
    deadline = time.monotonic() + 5
    while processes_mentioning(str(state_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(state_dir)) == []
    assert not state_dir.exists()
