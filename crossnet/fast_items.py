"""A lean run of a passing cell's test: the same three reports pytest makes (setup, call,
teardown, through the same makereport and logreport hooks, so JUnit, the terminal, `-x`, `--lf`
and xdist see them as always), without pytest's per-item fixture and capture machinery.

Why: at 25,000 cells pytest's generic protocol (a fixture request per item, a new `request`
fixture definition per item, output capture set up and torn down three times) cost about 2 ms
of the main thread per item, more than the probing of the cell. A cell's test takes `cell` and
`judge_cell` and nothing else, so this module fills those two itself and calls the test function.

Only a cell whose judgement needs nothing else takes this path: every cell that fails, errors
or is skipped, an item with skip/xfail marks or any other fixture, and runs under `--pdb`,
`--trace` or `--setup-show/-only/-plan` go through pytest's own protocol unchanged (so a
failing cell's evidence is captured into its JUnit system-out as before)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from _pytest.runner import CallInfo

from crossnet import existing_mode
from crossnet.cell_checks import (
    ITEM_KEY,
    cell_of,
    current_run,
    failing_verdicts,
    judge_for,
    path_unreached_for_snat,
    suite_judgements,
)
from crossnet.model import Cell
from crossnet.runner import INFRASTRUCTURE_ERRORS

CELL_ARGS = ("cell", "judge_cell")
PLAIN_FIXTURES = {"cell", "judge_cell", "pytestconfig", "request"}  # what a cell test's closure holds
MARKS_NEEDING_PYTEST = {"skip", "skipif", "xfail", "usefixtures"}
OPTIONS_NEEDING_PYTEST = ("usepdb", "trace", "setupshow", "setuponly", "setupplan")


def lean_cell(item: pytest.Item) -> Cell | None:
    """The cell of an item that may take the lean path, or None (pytest's own protocol)."""
    cell = cell_of(item)
    if cell is None or not isinstance(item, pytest.Function):
        return None
    if tuple(item._fixtureinfo.argnames) != CELL_ARGS or not set(item.fixturenames) <= PLAIN_FIXTURES:
        return None
    if any(mark.name in MARKS_NEEDING_PYTEST for mark in item.iter_markers()):
        return None
    config = item.config
    if any(config.getoption(name, False) for name in OPTIONS_NEEDING_PYTEST):
        return None
    return cell


def _plainly_passing(item: pytest.Item, cell: Cell) -> bool:
    """Whether the cell's judgement is one its test passes without output, a skip or an error
    (it waits for the cell's suite batch, as the cell's setup would)."""
    run = current_run(item.config)
    if existing_mode.refused(run.provider, cell, run.cluster_set):
        return False
    judgement = suite_judgements(item, cell.suite).get(cell.id)
    if judgement is None or judgement.observation.error in INFRASTRUCTURE_ERRORS:
        return False
    return judgement.verdict not in failing_verdicts(item.config) and not path_unreached_for_snat(cell, judgement)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    cell = lean_cell(item)
    if cell is None:
        return None
    started, clock = time.time(), time.perf_counter()
    try:
        if not _plainly_passing(item, cell):
            return None  # pytest's protocol: its setup raises, skips or its call fails, with capture
    except Exception:  # noqa: BLE001 - the batch failed: pytest's protocol reports it as this cell's error
        return None
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    ihook.pytest_runtest_logreport(report=_report(item, "setup", started, clock, None))
    function: Any = item
    function.funcargs = {"cell": cell, "judge_cell": judge_for(item.config)}
    item.config.stash[ITEM_KEY] = item
    try:
        ihook.pytest_runtest_logreport(report=_phase(item, "call", item.runtest))
        if item.session.shouldfail or item.session.shouldstop:  # as pytest: tear everything down then
            nextitem = None
        teardown = _phase(item, "teardown", lambda: item.session._setupstate.teardown_exact(nextitem))
        ihook.pytest_runtest_logreport(report=teardown)
    finally:
        function.funcargs = None
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def _phase(item: pytest.Item, when: str, run: Any) -> pytest.TestReport:
    started, clock = time.time(), time.perf_counter()
    try:
        run()
    except BaseException:  # as pytest's CallInfo: a test outcome becomes its report
        excinfo = pytest.ExceptionInfo.from_current()
        if isinstance(excinfo.value, (KeyboardInterrupt, SystemExit)) or excinfo.errisinstance(pytest.exit.Exception):
            raise
        return _report(item, when, started, clock, excinfo)
    return _report(item, when, started, clock, None)


def _report(
    item: pytest.Item, when: Any, started: float, clock: float, excinfo: pytest.ExceptionInfo[BaseException] | None
) -> pytest.TestReport:
    call = CallInfo[None](None, excinfo, started, time.time(), time.perf_counter() - clock, when, _ispytest=True)
    report: pytest.TestReport = item.ihook.pytest_runtest_makereport(item=item, call=call)
    return report
