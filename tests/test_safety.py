"""Safe to run as root on a shared machine: crossnet never deletes or signals what it did not
create, gives other local users no way in, refuses broken or hostile state and options with one
clear line, and tells usage errors from provider failures by its exit code."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossnet.model import Cluster, NodeSpec, Topology
from crossnet.providers.base import ProviderError, StateFile
from crossnet.providers.lab.topology import plan_lab
from crossnet.providers.statedir import OWNER_MARK, StateDirError, claim_state_dir, release_state_dir
from tests.lab_helpers import BIN, ROOT, crossnet, needs_lab, run_suites

NOBODY = 65534


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path (a unix socket path holds at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="cn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lab_up(short_tmp: Path) -> Iterator[Path]:
    """A detached lab (crossnet up) under umask 000, ended at the end of the test; its parent
    directory can be traversed by other users (so only crossnet's own modes keep them out)."""
    tmp_path = short_tmp
    os.chmod(tmp_path, 0o755)
    state_dir = tmp_path / "run"
    old = os.umask(0)
    try:
        done = subprocess.run([str(BIN / "crossnet"), "up", "--provider", "lab", "--state-dir", str(state_dir)],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    yield state_dir
    crossnet("down", "--state-dir", str(state_dir), check=False)


# ---------------------------------------------------------------- never touch what is not ours


def test_an_existing_directory_is_refused_and_left_untouched(tmp_path: Path) -> None:
    user_dir = tmp_path / "precious"
    user_dir.mkdir()
    (user_dir / "thesis.tex").write_text("years of work")
    with pytest.raises(StateDirError, match="not made by crossnet"):
        claim_state_dir(user_dir, "run-1")
    assert (user_dir / "thesis.tex").read_text() == "years of work"
    assert release_state_dir(user_dir, "run-1") is False and user_dir.exists()


@needs_lab
def test_up_and_suites_refuse_an_existing_state_dir_and_keep_it(tmp_path: Path) -> None:
    user_dir = tmp_path / "precious"
    user_dir.mkdir()
    (user_dir / "keep").write_text("mine")
    up = crossnet("up", "--provider", "lab", "--state-dir", str(user_dir), check=False)
    assert up.returncode == 2 and "not made by crossnet" in up.stderr and "Traceback" not in up.stderr
    suites = run_suites("suites/test_dns.py", "--provider", "lab", "--state-dir", str(user_dir),
                        "--reports", str(tmp_path / "reports"))
    assert suites.returncode == 3 and "not made by crossnet" in suites.stdout + suites.stderr
    assert (user_dir / "keep").read_text() == "mine" and sorted(p.name for p in user_dir.iterdir()) == ["keep"]


@needs_lab
def test_a_running_labs_directory_is_refused_with_use_attach(lab_up: Path, tmp_path: Path) -> None:
    suites = run_suites("suites/test_dns.py", "--provider", "lab", "--state-dir", str(lab_up),
                        "--reports", str(tmp_path / "reports"))
    out = suites.stdout + suites.stderr
    assert suites.returncode == 3 and f"--attach {lab_up}" in out, out[-2000:]
    status = crossnet("status", "--state-dir", str(lab_up))
    assert "phase ready" in status.stdout and "is gone" not in status.stdout  # the lab still runs


def test_release_removes_only_this_runs_directory_and_a_parent_it_made(tmp_path: Path) -> None:
    existing_parent = tmp_path / "mine"
    existing_parent.mkdir()
    claim_state_dir(existing_parent / "run", "run-1")
    assert release_state_dir(existing_parent / "run", "run-2") is False  # another run's mark: untouched
    assert release_state_dir(existing_parent / "run", "run-1") is True
    assert existing_parent.is_dir(), "a parent crossnet did not create was removed"
    claim_state_dir(tmp_path / ".crossnet" / "run", "run-1")
    claim_state_dir(tmp_path / ".crossnet" / "sibling", "run-2")
    release_state_dir(tmp_path / ".crossnet" / "run", "run-1")
    assert (tmp_path / ".crossnet" / "sibling").is_dir()  # the made parent stays while a sibling lives in it
    release_state_dir(tmp_path / ".crossnet" / "sibling", "run-2")
    assert (tmp_path / ".crossnet").is_dir()  # run-2 did not make the parent: it is not its to remove


@needs_lab
def test_a_users_empty_crossnet_directory_survives_a_run(short_tmp: Path) -> None:
    tmp_path = short_tmp
    (tmp_path / ".crossnet").mkdir()
    up = subprocess.run([str(BIN / "crossnet"), "up", "--provider", "lab"], capture_output=True, text=True,
                        cwd=tmp_path, timeout=120)
    assert up.returncode == 0, up.stderr
    down = subprocess.run([str(BIN / "crossnet"), "down", "--all"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert down.returncode == 0, down.stderr
    assert (tmp_path / ".crossnet").is_dir() and list((tmp_path / ".crossnet").iterdir()) == []


def _fake_lab_state(state_dir: Path, pid: int, identity: str | None, **extra: object) -> None:
    claim_state_dir(state_dir, "stale-run")
    StateFile(state_dir).write({"provider": "lab", "run_id": "stale-run", "sandbox_pid": pid,
                                "sandbox_identity": identity, "phase": "ready", **extra})


def test_down_never_signals_a_process_that_is_not_the_recorded_sandbox(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        _fake_lab_state(tmp_path / "run", bystander.pid, "12345")  # pid reused: a different start time
        started = time.monotonic()
        done = crossnet("down", "--state-dir", str(tmp_path / "run"), check=False)
        assert bystander.poll() is None, f"crossnet down killed an unrelated process: {done.stderr}"
        assert time.monotonic() - started < 10
        assert not (tmp_path / "run").exists()  # ours (owner mark): removed
    finally:
        bystander.kill()
        bystander.wait()


# ---------------------------------------------------------------- no way in for other users


@needs_lab
def test_under_umask_000_everything_that_grants_root_is_private(lab_up: Path) -> None:
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [lab_up, lab_up / "ctl.sock", lab_up / "state.json",
                                                              lab_up / OWNER_MARK, *(lab_up / "agents").iterdir()]}
    assert modes[lab_up.name] == 0o700
    assert {name: mode for name, mode in modes.items() if name != lab_up.name and mode & 0o077} == {}, modes
    client = ("import contextlib, socket, sys\n"
              "s = socket.socket(socket.AF_UNIX)\n"
              "s.connect(sys.argv[1])\n"
              "with contextlib.suppress(BrokenPipeError):  # a refusal may come before the request is sent\n"
              "    s.sendall(b'{\"op\": \"exec\", \"netns\": null, \"argv\": [\"id\", \"-u\"]}\\n')\n"
              "print(s.recv(4096).decode())\n")
    probe = [sys.executable, "-c", client, str(lab_up / "ctl.sock")]
    refused = as_nobody(*probe)
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    # Even with the directory and socket opened up by someone, the supervisor checks who is calling.
    os.chmod(lab_up, 0o755)
    os.chmod(lab_up / "ctl.sock", 0o666)
    try:
        denied = as_nobody(*probe)
        assert "permission denied: uid 65534" in denied.stdout and '"rc"' not in denied.stdout, denied
    finally:
        os.chmod(lab_up, 0o700)
        os.chmod(lab_up / "ctl.sock", 0o600)
    with socket.socket(socket.AF_UNIX) as own:  # root still gets in
        own.connect(str(lab_up / "ctl.sock"))
        own.sendall(b'{"op": "ping"}\n')
        assert b'"pid"' in own.recv(4096)


# ---------------------------------------------------------------- state.json: validated before use


@pytest.mark.parametrize("content", [b"", b"{\"schema\": \"crossnet.state/v1\", \"prov", b"[1, 2]", b"\xff\xfe",
                                     b"[" * 100000, b'{"schema": "crossnet.state/v1", "provider": "lab", '
                                     b'"run_id": "x; rm -rf /"}'],
                         ids=["empty", "truncated", "not-an-object", "binary", "deeply-nested", "unsafe-run-id"])
def test_a_broken_state_file_is_one_clear_error_everywhere(tmp_path: Path, content: bytes) -> None:
    state_dir = tmp_path / "run"
    claim_state_dir(state_dir, "run-1")
    (state_dir / "state.json").write_bytes(content)
    with pytest.raises(ProviderError, match=str(state_dir / "state.json")):
        StateFile(state_dir).read()
    for args in (["status"], ["exec"]):
        done = crossnet(*args, "--state-dir", str(state_dir), *(["cluster-1/worker", "--", "true"] if args == ["exec"]
                                                                 else []), check=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert str(state_dir / "state.json") in done.stderr
    suites = run_suites("suites/test_dns.py", "--attach", str(state_dir), "--reports", str(tmp_path / "reports"))
    assert suites.returncode in (3, 4) and "Traceback" not in suites.stdout + suites.stderr
    down = crossnet("down", "--state-dir", str(state_dir), check=False)
    assert down.returncode == 0 and not state_dir.exists(), down.stderr  # ours by its owner mark: removed


def test_a_state_file_with_a_foreign_undo_is_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / "run"
    claim_state_dir(state_dir, "run-1")
    evil = {"node_commands": [{"cluster": "cluster-1", "node": "worker", "label": "x",
                               "undo": ["rm", "-rf", "/"]}], "routes": [], "corefiles": {}}
    StateFile(state_dir).write({"provider": "lab", "run_id": "run-1", "phase": "ready", "plumbing": evil})
    with pytest.raises(ProviderError, match="undo crossnet does not write"):
        StateFile(state_dir).read()
    assert stat.S_IMODE((state_dir / "state.json").stat().st_mode) == 0o600


@needs_lab
def test_down_all_goes_on_past_a_broken_run(short_tmp: Path) -> None:
    tmp_path = short_tmp
    up = subprocess.run([str(BIN / "crossnet"), "up", "--provider", "lab"], capture_output=True, text=True,
                        cwd=tmp_path, timeout=120)
    assert up.returncode == 0, up.stderr
    broken = tmp_path / ".crossnet" / "broken"
    claim_state_dir(broken, "broken")
    (broken / "state.json").write_text("{not json")
    foreign = tmp_path / ".crossnet" / "not-ours"
    foreign.mkdir()
    (foreign / "state.json").write_text("{}")
    down = subprocess.run([str(BIN / "crossnet"), "down", "--all"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert "Traceback" not in down.stderr and down.returncode == 0, down.stderr
    assert sorted(p.name for p in (tmp_path / ".crossnet").iterdir()) == ["not-ours"]


# ---------------------------------------------------------------- names never reach a command unvalidated


@pytest.mark.parametrize("name", ["bad\nname", "a;b", "a$(id)", "a b", "UPPER_case"])
def test_the_lab_refuses_a_name_that_is_not_dns_1123(name: str) -> None:
    cluster = Cluster(name=name, pod_subnet="10.10.0.0/16", service_subnet="10.40.0.0/16", dns_domain="c.com",
                      nodes=(NodeSpec(name, "control-plane", "control-plane"),), source_file="x.yaml")
    with pytest.raises(ProviderError, match="not a DNS-1123 name"):
        plan_lab(Topology(clusters=(cluster,)))


# ---------------------------------------------------------------- options and exit codes


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
def test_a_probe_timeout_must_be_positive_and_finite(value: str, tmp_path: Path) -> None:
    done = run_suites("suites/test_dns.py", f"--probe-timeout={value}", "--reports", str(tmp_path))
    assert done.returncode == 4 and "--probe-timeout" in done.stderr and repr(value) in done.stderr
    assert list(tmp_path.iterdir()) == []
    exec_ = crossnet("exec", "--timeout", value, "cluster-1/worker", "--", "true", check=False)
    assert exec_.returncode == 2 and "--timeout" in exec_.stderr


def test_usage_errors_are_clear_and_exit_2(tmp_path: Path) -> None:
    bench = crossnet("bench", "--rounds", "0", check=False)
    assert bench.returncode == 2 and "at least 1" in bench.stderr and "Traceback" not in bench.stderr
    (tmp_path / "afile").write_text("")
    reports = run_suites("suites/test_dns.py", "--reports", str(tmp_path / "afile"))
    assert reports.returncode == 4 and "is a file, not a directory" in reports.stderr
    assert "Traceback" not in reports.stdout + reports.stderr
    version = crossnet("--version")
    assert version.stdout.startswith("crossnet ") and version.stdout.split()[1][0].isdigit()


def test_a_provider_failure_exits_3_not_like_a_bad_flag(tmp_path: Path) -> None:
    missing_tools = {**os.environ, "PATH": str(tmp_path)}  # no unshare: the lab cannot start
    done = subprocess.run([str(BIN / "crossnet"), "up", "--provider", "lab", "--state-dir", str(tmp_path / "s")],
                          capture_output=True, text=True, cwd=ROOT, env=missing_tools, timeout=60)
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "s").exists()


@needs_lab
def test_a_non_root_user_gets_one_line_not_a_traceback() -> None:
    tmp_path = Path(tempfile.mkdtemp(prefix="crossnet-nobody-", dir="/tmp"))  # reachable by nobody
    os.chmod(tmp_path, 0o777)
    up = as_nobody(str(BIN / "crossnet"), "up", "--provider", "lab", "--state-dir", str(tmp_path / "s"))
    assert up.returncode in (2, 3) and "Traceback" not in up.stderr, up.stderr
    assert "root" in up.stderr and not (tmp_path / "s").exists()
    suites = as_nobody(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(ROOT / "suites" / "test_dns.py"),
                       "--provider", "lab", "--reports", str(tmp_path / "r"), "--state-dir", str(tmp_path / "s2"))
    assert suites.returncode in (3, 4) and "Traceback" not in suites.stdout + suites.stderr, suites.stdout[-2000:]
    shutil.rmtree(tmp_path)
