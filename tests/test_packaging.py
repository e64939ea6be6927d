"""An installable package: the wheel built from this checkout carries the suites, profiles, kind
configs and the report template, loads its pytest plugin by entry point, and — installed outside
the checkout — runs the lab matrix green with `crossnet verify`, writing reports/ where it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.lab_helpers import needs_lab


def test_the_package_list_names_every_package() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "crossnet").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return next(out.glob("crossnet-*.whl"))


def test_the_wheel_carries_what_a_run_needs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("crossnet/bundled/suites/test_dns.py", "crossnet/bundled/profiles/flat-routed.yaml",
                 "crossnet/bundled/kind_configs/cluster-1.yaml", "crossnet/report/templates/matrix.html.j2"):
        assert path in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "[pytest11]\ncrossnet.plugin = crossnet.plugin" in zipfile.ZipFile(wheel).read(entry_points).decode()


@needs_lab
def test_an_installed_wheel_runs_the_matrix_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    site, run = tmp_path / "site", Path(os.environ.get("TMPDIR", "/tmp")) / f"cn-wheel-{os.getpid()}"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run.mkdir()
    # The installed copy first; the dependencies from this venv's site-packages, without its .pth
    # files (so the checkout's editable crossnet stays out of the way).
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir())
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{deps}"}
    try:
        verify = subprocess.run([sys.executable, "-S", "-m", "crossnet.cli", "verify", "--provider", "lab", "-q",
                                 "-k", "pod_to_pod or dns"], cwd=run, env=env, capture_output=True, text=True,
                                timeout=600)
        out = verify.stdout + verify.stderr
        assert verify.returncode == 0, out[-3000:]
        assert str(site / "crossnet" / "bundled" / "suites") in out  # the installed suites ran, not the checkout's
        matrix = json.loads((run / "reports" / "matrix.json").read_text())
        verdicts = {c["verdict"] for c in matrix["cells"]}
        assert verdicts & {"pass", "isolated"} and not verdicts & {"regression", "leak", "source-mismatch"}, verdicts
        assert len(matrix["cells"]) > 300
    finally:
        subprocess.run(["rm", "-rf", str(run)], check=False)
