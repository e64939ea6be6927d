"""Bad input gets one clear message naming the problem and the fix: never a traceback, never a
half-built topology."""

from __future__ import annotations

from pathlib import Path

from tests.lab_helpers import ROOT, crossnet, host_snapshot, needs_lab, run_suites


def test_overlapping_configs_are_refused_before_anything_is_built(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text((ROOT / "kind-configs" / "cluster-2.yaml").read_text().replace("10.20.0.0/16", "10.10.0.0/16"))
    configs = ["--kind-config", str(ROOT / "kind-configs" / "cluster-1.yaml"), "--kind-config", str(other)]
    before = host_snapshot()
    done = crossnet("up", "--state-dir", str(tmp_path / "state"), *configs, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{other}: networking.podSubnet: 10.10.0.0/16 overlaps cluster-1's podSubnet" in done.stderr
    assert "fix: choose non-overlapping subnets" in done.stderr
    assert not (tmp_path / "state").exists() and host_snapshot() == before
    suites = run_suites("suites/", "--state-dir", str(tmp_path / "state"), *configs)
    assert suites.returncode == 4 and "Traceback" not in suites.stdout + suites.stderr
    assert "overlaps cluster-1's podSubnet" in suites.stderr


def test_unknown_profile_and_missing_run_are_clear(tmp_path: Path) -> None:
    done = run_suites("suites/", "--profile", "nope")
    assert done.returncode == 4 and "known profiles: bgp-flat, " in done.stderr and "flat-routed" in done.stderr
    assert "Traceback" not in done.stderr
    exec_ = crossnet("exec", "--state-dir", str(tmp_path), "cluster-1/worker", "--", "true", check=False)
    assert exec_.returncode == 2 and "no crossnet state" in exec_.stderr and "crossnet up" in exec_.stderr


def test_bad_exec_target_names_the_known_ones(tmp_path: Path) -> None:
    bad = crossnet("exec", "--state-dir", str(tmp_path), "worker", "--", "true", check=False)
    assert bad.returncode == 2 and "is not <cluster>/<node>[/<pod>]" in bad.stderr


@needs_lab
def test_doctor_checks_the_machine() -> None:
    done = crossnet("doctor", check=False)
    assert done.returncode == 0, done.stdout
    assert "[ok] iptables-restore (iptables)" in done.stdout and "all good" in done.stdout


def test_provider_kind_without_kind_says_what_to_do(tmp_path: Path) -> None:
    import os
    import subprocess

    from tests.lab_helpers import pytest_argv

    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no kind binary there
    done = subprocess.run(pytest_argv("suites/", "--provider", "kind", "--state-dir", str(tmp_path / "s")),
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3 and "Traceback" not in done.stdout + done.stderr
    assert "the kind binary (kind) is not on PATH" in done.stdout + done.stderr
    assert "--provider lab" in done.stdout + done.stderr and not (tmp_path / "s").exists()
