"""The code stays `ruff` and `mypy --strict` clean: part of the project's tests so that the
one test command of the README (and CI) enforces it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def test_ruff_is_clean() -> None:
    done = subprocess.run([str(BIN / "ruff"), "check", "crossnet", "suites", "fixtures", "tests", "conftest.py"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_is_clean() -> None:
    done = subprocess.run([str(BIN / "mypy"), "--strict", "crossnet", "suites", "fixtures"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_package_has_one_formatting_style() -> None:
    done = subprocess.run([str(BIN / "ruff"), "format", "--check", "crossnet"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr + "\nfix: .venv/bin/ruff format crossnet"
