"""The session's probing, ahead of pytest: every suite's cells are probed and judged in one
background thread, suite after suite in the order the session runs them, while pytest works
through the items of the suites already judged.

At tens of thousands of cells pytest's own per-item work (setup, reports, JUnit) costs about as
much as the probing; done one after the other they add up, done side by side the slower one sets
the pace. Each suite is still one batch judged by `SuiteRunner` (later suites reuse what earlier
ones observed, as SNAT does), and an item waits for its own suite's batch only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future

from crossnet.model import Cell, Judgement
from crossnet.runner import SuiteRunner

__all__ = ["SuiteBatches", "SuiteBatchesStopped"]


class SuiteBatchesStopped(Exception):
    """The session ended (Ctrl-C, -x, teardown) before this suite was probed."""


class SuiteBatches:
    """Judges `suites` (name → cells, in run order) in a background thread; `judgements(suite)`
    waits for that suite's batch and returns it, or raises what its batch raised."""

    def __init__(self, runner: SuiteRunner, suites: Sequence[tuple[str, Sequence[Cell]]]) -> None:
        self.runner = runner
        self._order = [(name, list(cells)) for name, cells in suites]
        self._batches: dict[str, Future[dict[str, Judgement]]] = {name: Future() for name, _ in self._order}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._judge_all, name="crossnet-probing", daemon=True)
        self._thread.start()

    def _judge_all(self) -> None:
        for name, cells in self._order:
            batch = self._batches[name]
            if self._stopping.is_set():
                batch.set_exception(SuiteBatchesStopped(f"the session ended before suite {name} was probed"))
                continue
            try:
                batch.set_result(self.runner.judge_cells(cells))
            except BaseException as exc:  # noqa: BLE001 - handed to every item of the suite, raised there
                batch.set_exception(exc)

    def judgements(self, suite: str) -> dict[str, Judgement]:
        return self._batches[suite].result()

    def stop(self, wait_s: float = 5.0) -> None:
        """No further chunk of probes is sent and no further suite started; waits up to `wait_s`
        for the chunks in flight (each bounded by its probes' timeouts) so the process does not
        outlive its session probing, nor probe a topology being torn down."""
        self._stopping.set()
        self.runner.cancel.set()
        self._thread.join(wait_s)
