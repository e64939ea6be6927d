"""Probing ahead of pytest (crossnet/suite_batches.py): suites judged in order in one background
thread, an item waits only for its own suite, a failed batch is an infrastructure error for each
of its items, and stopping sends nothing more."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from crossnet.options import load_setup
from crossnet.providers.lab.clusterset import live_cluster_set
from crossnet.providers.lab.topology import plan_lab
from crossnet.runner import SuiteRunner
from crossnet.suite_batches import SuiteBatches
from crossnet.wire import ProbeResult, ProbeSpec


def _world() -> tuple[Any, dict[str, list[Any]]]:
    setup = load_setup("routed", None, None)
    cluster_set = live_cluster_set(plan_lab(setup.topology))
    suites: dict[str, list[Any]] = {}  # two batches of pod-to-pod cells, as two suites would be
    for cell in setup.cells:
        if cell.suite == "pod-to-pod" and cell.expectation.reachable == "yes" and cell.probe.protocol in ("tcp", "udp"):
            suites.setdefault("pod-to-pod" if cell.probe.protocol == "tcp" else "dns", []).append(cell)
    return cluster_set, {name: cells[:8] for name, cells in suites.items()}


def _answering(log: list[str], delay: float = 0.0) -> Any:
    def client(agent: str) -> Any:
        def probe(probes: list[ProbeSpec], timeout: float) -> list[ProbeResult]:
            time.sleep(delay)
            log.extend(str(p["id"]) for p in probes)
            return [{"id": p["id"], "reached": True, "error": None, "loop_lag_ms": 0.0} for p in probes]

        return SimpleNamespace(probe=probe)

    return client


def test_suites_are_judged_in_the_given_order_and_each_waits_only_for_its_own() -> None:
    cluster_set, suites = _world()
    log: list[str] = []
    order = [("pod-to-pod", suites["pod-to-pod"]), ("dns", suites["dns"])]
    batches = SuiteBatches(SuiteRunner(cluster_set, _answering(log), 2.0), order)
    first = batches.judgements("pod-to-pod")
    assert set(first) == {c.id for c in suites["pod-to-pod"]}
    second = batches.judgements("dns")
    assert set(second) == {c.id for c in suites["dns"]}
    probed_first = {c.id for c in suites["pod-to-pod"]}
    assert set(log[: len(probed_first)]) <= probed_first  # pod-to-pod's probes went out before dns's
    batches.stop()


def test_a_batch_that_raises_hands_its_exception_to_its_suite_only() -> None:
    cluster_set, suites = _world()

    class Exploding(SuiteRunner):
        def judge_cells(self, cells: Any) -> Any:
            if cells and cells[0].probe.protocol == "tcp":
                raise RuntimeError("the sandbox went away")
            return super().judge_cells(cells)

    runner = Exploding(cluster_set, _answering([]), 2.0)
    batches = SuiteBatches(runner, [("pod-to-pod", suites["pod-to-pod"]), ("dns", suites["dns"])])
    with pytest.raises(RuntimeError, match="sandbox went away"):
        batches.judgements("pod-to-pod")
    assert set(batches.judgements("dns")) == {c.id for c in suites["dns"]}


def test_stop_sends_no_further_chunk_and_starts_no_further_suite() -> None:
    cluster_set, suites = _world()
    log: list[str] = []
    started = threading.Event()

    def client(agent: str) -> Any:
        def probe(probes: list[ProbeSpec], timeout: float) -> list[ProbeResult]:
            started.set()
            time.sleep(0.3)
            log.extend(str(p["id"]) for p in probes)
            return [{"id": p["id"], "reached": True, "error": None, "loop_lag_ms": 0.0} for p in probes]

        return SimpleNamespace(probe=probe)

    many = [c for c in load_setup("routed", None, None).cells if c.suite == "pod-to-pod" and c.probe.protocol == "icmp"]
    runner = SuiteRunner(cluster_set, client, 2.0)
    batches = SuiteBatches(runner, [("pod-to-pod", many), ("dns", suites["dns"])])
    assert started.wait(5)
    began = time.monotonic()
    batches.stop(wait_s=5.0)
    assert time.monotonic() - began < 2.0  # only the chunks in flight finish
    sent = len(log)
    time.sleep(1.0)
    assert len(log) == sent < len(many)  # the rest of the suite was never sent
    assert not any(i in log for i in (c.id for c in suites["dns"]))
    with pytest.raises(Exception, match="session ended"):
        batches.judgements("dns")
