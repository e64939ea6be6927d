"""What the project's tests share: the checkout's root, the default topology and profile, and one
lab fixture (`crossnet up` before, `crossnet down` and a check that nothing is left after),
parametrised by the arguments of `crossnet up` (`@pytest.mark.parametrize("lab", [[...]],
indirect=True)`; default: the routed topology with its profile)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The interruption tests send SIGINT to the runs they start. A shell that starts a job in the
# background without job control (`nohup … &`, some CI runners) leaves SIGINT ignored, and a
# process started with SIGINT ignored keeps it ignored across exec: those runs would never see
# the Ctrl-C. A handler of our own is reset to the default in every child instead.
if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
KIND_CONFIGS = ROOT / "kind-configs"
DEFAULT_CONFIGS = (KIND_CONFIGS / "cluster-1.yaml", KIND_CONFIGS / "cluster-2.yaml")


def _lab(state: Path, up_args: list[str]) -> Iterator[Path]:
    from tests.lab_helpers import assert_nothing_left, crossnet, down, host_snapshot

    before = host_snapshot()
    up = crossnet("up", "--provider", "lab", "--state-dir", str(state), *up_args)
    assert str(state / "state.json") in up.stdout and f"--attach {state}" in up.stdout
    try:
        yield state
    finally:
        down(state)
        assert_nothing_left(state, before)


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A running lab (its state directory) for one test; `request.param`: extra `crossnet up` args."""
    yield from _lab(tmp_path / "state", list(getattr(request, "param", [])))


@pytest.fixture(scope="module")
def module_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running lab shared by the tests of a module (each test undoes what it changes)."""
    yield from _lab(tmp_path_factory.mktemp("lab") / "state", list(getattr(request, "param", [])))
