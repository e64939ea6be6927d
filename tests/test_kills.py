"""Kills timed at the four worst moments leave nothing behind: at the start of the sandbox, during
bring-up, during probing and during teardown, by SIGKILL, SIGTERM and Ctrl-C (SIGINT), of
`pytest suites/` and of `crossnet up`. After each kill: no process of the run, no state directory,
no host link, address or network namespace that was not there before. The test prints its counts.

Each moment gets KILLS_PER_MOMENT trials, the signals taking turns; CROSSNET_KILLS overrides the
count (e.g. 50 for a soak)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.lab_helpers import BIN, ROOT, assert_nothing_left, down, host_snapshot, needs_lab

KILLS_PER_MOMENT = int(os.environ.get("CROSSNET_KILLS", "20"))
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
SUITE = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(ROOT / "suites" / "test_pod_to_pod.py"),
         "-k", "icmp and same_cluster", "--provider", "lab", "-q"]


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cn-kill-", dir="/tmp"))  # short: unix socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Watched:
    """A process whose combined output is read line by line in the background."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, ready: Callable[[], bool], timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def end(self, sig: int) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
        self.reader.join(timeout=5)
        return "".join(self.lines)


def state_dirs(work: Path) -> list[Path]:
    try:
        return sorted((work / ".crossnet").iterdir())
    except FileNotFoundError:  # not made yet, or removed by the run's end
        return []


def trial(work: Path, argv: list[str], moment: Callable[[Watched, Path], bool], sig: int) -> tuple[bool, str]:
    """Run `argv` in `work`, kill it with `sig` when `moment` says so, then check nothing is left.
    Returns (killed at the moment, output); raises AssertionError naming what was left."""
    before = host_snapshot()
    watched = Watched([*argv, "--reports", str(work / "reports")] if argv is SUITE else argv, work)
    hit = moment(watched, work)
    output = watched.end(sig)
    for state_dir in state_dirs(work) or [work / ".crossnet" / "none"]:
        try:
            assert_nothing_left(state_dir, before, wait=10.0)
        except AssertionError as exc:
            if (state_dir / "state.json").exists():  # a failed trial leaves no running lab behind either
                with contextlib.suppress(AssertionError, OSError, subprocess.SubprocessError):
                    down(state_dir)
            raise AssertionError(f"{signal.Signals(sig).name} left something: {exc}\n{output[-1500:]}") from None
    return hit, output


def at_sandbox_start(watched: Watched, work: Path) -> bool:
    """The state directory has just been created: the sandbox is being started."""
    return watched.wait_for(lambda: bool(state_dirs(work)))


def during_bring_up(delays: Iterator[float]) -> Callable[[Watched, Path], bool]:
    def moment(watched: Watched, work: Path) -> bool:
        found = watched.wait_for(lambda: any((d / "state.json").exists() for d in state_dirs(work)))
        time.sleep(next(delays))
        return found and not watched.said("peer names resolve")
    return moment


def during_probing(watched: Watched, _work: Path) -> bool:
    found = watched.wait_for(lambda: watched.said("peer names resolve"))
    time.sleep(0.02)
    return found and not watched.said("crossnet matrix:")


def during_teardown(watched: Watched, _work: Path) -> bool:
    return watched.wait_for(lambda: watched.said("crossnet reports:")) and not watched.said("torn down")


def _run_moment(workdir: Path, name: str, argv: list[str], moment: Callable[[Watched, Path], bool]) -> None:
    hits = 0
    for number in range(KILLS_PER_MOMENT):
        work = workdir / f"{name}-{number}"
        work.mkdir()
        hit, _ = trial(work, argv, moment, SIGNALS[number % len(SIGNALS)])
        hits += hit
    print(f"\n{name}: {KILLS_PER_MOMENT} kills (SIGKILL, SIGTERM, SIGINT in turn), {hits} at the intended moment, "
          "0 leftovers")
    assert hits >= KILLS_PER_MOMENT // 2, f"only {hits} kills landed {name}; the timing of this test is off"


@needs_lab
def test_kills_at_sandbox_start_leave_nothing(workdir: Path) -> None:
    _run_moment(workdir, "pytest at sandbox start", SUITE, at_sandbox_start)
    _run_moment(workdir, "crossnet up at sandbox start", [str(BIN / "crossnet"), "up", "--provider", "lab"],
                at_sandbox_start)


@needs_lab
def test_kills_during_bring_up_leave_nothing(workdir: Path) -> None:
    delays = iter([0.02 * (n % 15) for n in range(1000)])
    _run_moment(workdir, "pytest during bring-up", SUITE, during_bring_up(delays))
    _run_moment(workdir, "crossnet up during bring-up", [str(BIN / "crossnet"), "up", "--provider", "lab"],
                during_bring_up(delays))


@needs_lab
def test_kills_during_probing_leave_nothing(workdir: Path) -> None:
    _run_moment(workdir, "pytest during probing", SUITE, during_probing)


@needs_lab
def test_kills_during_teardown_leave_nothing(workdir: Path) -> None:
    _run_moment(workdir, "pytest during teardown", SUITE, during_teardown)


@needs_lab
def test_sigterm_tears_down_like_ctrl_c(workdir: Path) -> None:
    """SIGTERM is not a silent death: the run tears down in order and says it was interrupted."""
    hit, output = trial(workdir, SUITE, during_probing, signal.SIGTERM)
    assert hit, output[-2000:]
    assert "torn down" in output, output[-2000:]
    assert "Traceback" not in output
    # An interrupted run never leaves a matrix that looks current.
    summary = (workdir / "reports" / "summary.md").read_text()
    assert summary.startswith("**the run did not complete** (exit status 2, interrupted)"), summary[:300]


@needs_lab
def test_a_killed_run_leaves_reports_that_say_so(workdir: Path) -> None:
    hit, _ = trial(workdir, SUITE, during_probing, signal.SIGKILL)
    assert hit
    summary = (workdir / "reports" / "summary.md").read_text()
    assert summary.startswith("**the run did not complete** (still running, or killed"), summary[:300]


@needs_lab
def test_ctrl_c_during_teardown_waits_for_it(workdir: Path) -> None:
    def twice_in_teardown(watched: Watched, work: Path) -> bool:
        hit = during_teardown(watched, work)
        watched.proc.send_signal(signal.SIGINT)
        return hit

    hit, output = trial(workdir, SUITE, twice_in_teardown, signal.SIGINT)
    assert "torn down" in output and "Traceback" not in output, output[-2000:]
    assert hit or "teardown in progress" not in output
