"""Helpers for the lab integration tests: run crossnet and pytest as a user would, and take
snapshots of the host to prove that a run left nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def lab_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces); run the tests as root to enable them"
    missing = [t for t in ("unshare", "nsenter", "ip", "iptables-restore", "sysctl") if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)}; `crossnet doctor` prints the install command"
    return None


needs_lab = pytest.mark.skipif(lab_unavailable_reason() is not None, reason=str(lab_unavailable_reason()))


@dataclass(frozen=True)
class HostSnapshot:
    links: frozenset[str]
    netns: frozenset[str]
    addresses: frozenset[str]


def host_snapshot() -> HostSnapshot:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    addrs = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return HostSnapshot(frozenset(line.split(":")[1].strip() for line in links.splitlines()),
                        frozenset(netns.split()), frozenset(" ".join(a.split()[1:4]) for a in addrs.splitlines()))


def processes_mentioning(text: str) -> list[str]:
    """Live (non-zombie) processes whose command line contains `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline.strip()}")
    return found


def assert_nothing_left(state_dir: Path, before: HostSnapshot, wait: float = 5.0) -> float:
    """Wait (bounded) until nothing of the run remains; return how long that took."""
    started = time.monotonic()
    while processes_mentioning(str(state_dir)) and time.monotonic() - started < wait:
        time.sleep(0.01)
    gone_after = time.monotonic() - started
    assert processes_mentioning(str(state_dir)) == [], "processes of the run are still alive"
    assert not state_dir.exists(), f"state directory {state_dir} remains: {list(state_dir.rglob('*'))[:10]}"
    after = host_snapshot()
    assert after.links == before.links, f"host links changed: {after.links ^ before.links}"
    assert after.netns == before.netns, f"host network namespaces changed: {after.netns ^ before.netns}"
    assert after.addresses == before.addresses, f"host addresses changed: {after.addresses ^ before.addresses}"
    return gone_after


def crossnet(*args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(BIN / "crossnet"), *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"crossnet {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def down(state: Path) -> None:
    """`crossnet down`; when that fails (the code under test broke), end the sandbox anyway through
    its recorded pid (SIGTERM to `unshare` ends the supervisor, which ends everything), then fail."""
    done = crossnet("down", "--state-dir", str(state), check=False)
    if done.returncode == 0:
        return
    try:
        pid = int(json.loads((state / "state.json").read_text())["sandbox_pid"])
        os.kill(pid, 9)  # `unshare` ignores SIGTERM; its death SIGTERMs the supervisor (--kill-child)
    except (OSError, ValueError, KeyError):
        pass
    raise AssertionError(f"crossnet down exited {done.returncode}:\n{done.stdout}\n{done.stderr}")


def pytest_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def run_suites(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(pytest_argv(*args), capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def load_matrix(reports: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((reports / "matrix.json").read_text())
    return data


def verdicts(matrix: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["verdict"] for c in matrix["cells"]}


def wait_for_phase(state_dir: Path, phase: str, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads((state_dir / "state.json").read_text()).get("phase") == phase:
                return
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            raise AssertionError(f"pytest ended before phase {phase}: {proc.communicate()}")
        time.sleep(0.01)
    raise AssertionError(f"phase {phase} not reached within {timeout}s")
