"""The agent's own lateness measure (crossnet/agent/core.py LoopLag): what tells a starved agent
from a network timeout, and that an idle agent does not keep ticking."""

from __future__ import annotations

import asyncio
import time

import pytest

from crossnet.agent import core


def test_a_probe_during_which_the_loop_was_blocked_reports_the_lateness() -> None:
    async def scenario() -> tuple[float, float]:
        lag = core.LoopLag()
        quiet_from = lag.begin()
        await asyncio.sleep(0.1)
        quiet = lag.end(quiet_from)
        since = lag.begin()
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # the loop is held: the ticker wakes ~300 ms late
        await asyncio.sleep(0.05)
        return quiet, lag.end(since)

    quiet, blocked = asyncio.run(scenario())
    assert blocked >= 0.25
    assert quiet < 0.25


def test_the_ticker_stops_when_idle_and_starts_again_with_the_next_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.LoopLag, "IDLE_STOP", 0.1)

    async def scenario() -> tuple[bool, bool, bool]:
        lag = core.LoopLag()
        lag.end(lag.begin())
        running_at_first = lag.task is not None and not lag.task.done()
        await asyncio.sleep(0.3)
        stopped = lag.task is not None and lag.task.done()
        since = lag.begin()
        restarted = lag.task is not None and not lag.task.done()
        lag.end(since)
        return running_at_first, stopped, restarted

    assert asyncio.run(scenario()) == (True, True, True)


def test_a_long_probe_keeps_the_ticker_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.LoopLag, "IDLE_STOP", 0.05)

    async def scenario() -> bool:
        lag = core.LoopLag()
        since = lag.begin()
        await asyncio.sleep(0.3)  # longer than IDLE_STOP, still in flight
        alive = lag.task is not None and not lag.task.done()
        lag.end(since)
        return alive

    assert asyncio.run(scenario())


def test_a_stall_right_after_the_ticker_restarts_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first tick of a (re)started ticker counts from the probe's start: a loop held before the
    ticker's task first ran is lateness, not a quiet loop."""
    monkeypatch.setattr(core.LoopLag, "IDLE_STOP", 0.05)

    async def scenario() -> float:
        lag = core.LoopLag()
        lag.end(lag.begin())
        await asyncio.sleep(0.2)  # the ticker stopped
        since = lag.begin()
        time.sleep(0.4)  # held before the new ticker task ever ran
        await asyncio.sleep(0.05)
        return lag.end(since)

    assert asyncio.run(scenario()) >= 0.35
