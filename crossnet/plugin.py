"""The pytest plugin: options, topology lifecycle on the controller, one test item per cell,
batched probing per suite, judging, and the reports.

Controller vs xdist workers (pytest-xdist: workers must collect identical items): the controller
brings the topology up in
`pytest_sessionstart` and tears it down in `pytest_sessionfinish`/`pytest_unconfigure`;
workers only read the state directory handed to them through `workerinput`. Cells are built
from the configs and the profile alone, sorted, so every worker collects the same items.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest

from crossnet import existing_mode, report
from crossnet.cell_checks import (
    BATCH_KEY,
    BATCHES_KEY,
    ITEM_KEY,
    RUN_KEY,
    RUNNER_KEY,
    STATE_KEY,
    ProbeInfrastructureError,
    cell_of,
    check_cell,
    current_run,
    judge_for,
    suite_judgements,
)
from crossnet.config import ConfigError
from crossnet.judge import counts_by_expectation
from crossnet.lifecycle import (
    attach,
    bring_up,
    default_state_dir,
    new_run_id,
    signals_deferred,
    sigterm_as_interrupt,
    tear_down,
)
from crossnet.model import Cell, Protocol, Scope, Topology, VantageKind
from crossnet.options import (
    Setup,
    add_options,
    fingerprint,
    load_setup,
    plumbing_mode,
    reports_dir_problem,
    setup_mismatch,
)
from crossnet.profile import Profile, ProfileError
from crossnet.providers.base import ProviderError, StateFile
from crossnet.providers.select import choose_provider
from crossnet.resources import SUITES as SUITES_DIR
from crossnet.resources import default_reports_dir
from crossnet.runner import INFRASTRUCTURE_ERRORS
from crossnet.suites import SUITES
from crossnet.suites import suite as suite_named

SETUP_KEY = pytest.StashKey[tuple[Topology, Profile, list[Cell]]]()
PROVIDER_KEY = pytest.StashKey[tuple[str, str]]()
CELLS_KEY = pytest.StashKey[list[dict[str, Any]]]()
FACTS_KEY = pytest.StashKey[list[dict[str, Any]]]()
COLLECTOR_KEY = pytest.StashKey["_CellCollector"]()
REPORTS_STARTED_KEY = pytest.StashKey[bool]()
LOADED_KEY = pytest.StashKey[Setup]()
STARTED_KEY = pytest.StashKey[float]()
GC_THRESHOLDS_KEY = pytest.StashKey[tuple[int, int, int]]()
FULL_GC_AFTER = 100  # middle-generation collections before a full one during a suites run (Python: 10)
HTML_MAX_CELLS = 3_000  # above it pytest-html's report.html is not written (matrix.html folds there too)
# the results bundle (vendor options, raw observations, the .tar.gz); the lean run of passing cells
pytest_plugins = ["crossnet.bundle.hooks", "crossnet.fast_items"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("crossnet", "crossnet: networking across Kubernetes clusters")
    add_options(
        group.addoption,
        "--provider",
        "--reuse",
        "--agent-image",
        "--plumbing",
        *existing_mode.FLAGS,
        "--kind-config",
        "--profile",
        "--topology",
        "--state-dir",
        "--probe-timeout",
    )
    group.addoption(
        "--attach",
        default=None,
        metavar="STATE_DIR",
        help="probe a run started by `crossnet up` instead of creating one (never torn down)",
    )
    group.addoption(
        "--reports",
        default=str(default_reports_dir()),
        metavar="DIR",
        help="where junit.xml, report.html, matrix.html/json and summary.md go (default reports/)",
    )
    group.addoption(
        "--strict-flakes", action="store_true", help="fail the run on flaky cells (failed, then passed on the re-probe)"
    )


def _runs_suites(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(arg.split("::")[0])
        path = path if path.is_absolute() else Path(config.invocation_params.dir) / path
        try:
            path.resolve().relative_to(SUITES_DIR)
            return True
        except ValueError:
            continue
    return False


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def _exit(message: str) -> None:
    """The provider failed (bring-up, attach): exit 3, apart from usage errors (4) and failing cells (1)."""
    pytest.exit(f"crossnet: {message}", returncode=pytest.ExitCode.INTERNAL_ERROR)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    # xdist's default "load" scheduling would split a suite's cells over workers; a suite is
    # probed in one batch, so keep each module on one worker (loadgroup would rename ids).
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", "no") == "no":
        config.option.dist = "loadscope"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for suite in SUITES:
        config.addinivalue_line("markers", f"{suite.replace('-', '_')}: cells of the {suite} suite")
    for mark in (*get_args(Protocol), *get_args(Scope), *get_args(VantageKind)):
        config.addinivalue_line("markers", f"{mark.replace('-', '_')}: a crossnet cell dimension")
    if not _runs_suites(config):
        return
    try:
        setup = existing_mode.load(config) or load_setup(
            config.getoption("topology"), config.getoption("kind_config"), config.getoption("profile")
        )
    except (ConfigError, ProfileError) as exc:
        raise pytest.UsageError(str(exc)) from None
    topology, profile, cells = setup.topology, setup.profile, setup.cells
    config.stash[LOADED_KEY] = setup
    config.stash[SETUP_KEY] = (topology, profile, cells)
    if _is_controller(config):
        try:
            if config.getoption("attach"):
                attached = StateFile(Path(config.getoption("attach"))).read().get("provider", "?")
                config.stash[PROVIDER_KEY] = (str(attached), f"attached to {config.getoption('attach')}")
            else:
                config.stash[PROVIDER_KEY] = choose_provider(config.getoption("provider"))
        except ProviderError as exc:
            raise pytest.UsageError(str(exc)) from None
    reports_dir = Path(config.getoption("reports"))
    if _is_controller(config) and not config.option.collectonly:  # listing the matrix writes no report
        why = reports_dir_problem(reports_dir)
        if why:
            raise pytest.UsageError(why)
        sigterm_as_interrupt()  # SIGTERM tears down and marks the reports interrupted, like Ctrl-C
        config.stash[CELLS_KEY], config.stash[FACTS_KEY] = [], []
        config.stash[COLLECTOR_KEY] = _CellCollector(config.stash[CELLS_KEY], config.stash[FACTS_KEY])
        config.pluginmanager.register(config.stash[COLLECTOR_KEY], "crossnet-cell-collector")
        config.stash[STARTED_KEY] = time.time()
        if not getattr(config.option, "xmlpath", None):
            config.option.xmlpath = str(reports_dir / "junit.xml")
        if hasattr(config.option, "htmlpath") and not config.option.htmlpath and len(cells) <= HTML_MAX_CELLS:
            config.option.htmlpath = str(reports_dir / "report.html")
            config.option.self_contained_html = True


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    setup = config.stash.get(SETUP_KEY, None)
    if setup is None:
        return None
    topology, profile, cells = setup
    loaded = config.stash.get(LOADED_KEY, None)
    notes = loaded.notes if loaded is not None else ()
    counts = counts_by_expectation(cells)
    provider, why = config.stash.get(PROVIDER_KEY, ("?", "workers read it from the state"))
    return [
        f"crossnet provider: {provider} ({why})",
        "crossnet topology: "
        + ", ".join(
            f"{c.name} pods {c.pod_subnet} svc {c.service_subnet} domain {c.dns_domain} ({len(c.nodes)} nodes)"
            for c in topology.clusters
        ),
        f"crossnet profile: {profile.name} ({profile.source_file})",
        f"crossnet cells: {len(cells)} (expected reachable {counts['yes']}, isolated {counts['no']}, "
        f"optional {counts['optional']}); probe timeout {config.getoption('probe_timeout')}s",
        *existing_mode.header(config),
        *(f"crossnet note: {note}" for note in notes),
    ]


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if SETUP_KEY not in config.stash or config.option.collectonly:  # listing the matrix brings nothing up
        return
    if not _is_controller(config):
        config.stash[STATE_KEY] = Path(config.workerinput["crossnet_state_dir"])  # type: ignore[attr-defined]
        return
    topology, profile, _ = config.stash[SETUP_KEY]
    # Until this run ends, its reports say it has not: an earlier run's green matrix never looks
    # current after a Ctrl-C, a failed bring-up or a kill -9 of this one.
    report.write_reports(_matrix(config, None), Path(config.getoption("reports")))
    config.stash[REPORTS_STARTED_KEY] = True
    mode = plumbing_mode(config.getoption("plumbing"))
    try:
        if config.getoption("attach"):
            run = attach(Path(config.getoption("attach")).resolve())
            why = setup_mismatch(run.provider.state.read().get("setup"), config.stash[LOADED_KEY], mode)
            if why:
                raise pytest.UsageError(f"--attach {config.getoption('attach')}: {why}")
        else:
            run_id = new_run_id()
            state_dir = Path(config.getoption("state_dir") or default_state_dir(run_id)).resolve()
            run = bring_up(
                topology,
                state_dir,
                run_id,
                profile.plumbing,
                provider=config.stash[PROVIDER_KEY][0],
                reuse=config.getoption("reuse"),
                agent_image=config.getoption("agent_image"),
                plumbing_mode=mode,
                existing=existing_mode.discovery_of(config),
                record={"setup": fingerprint(config.stash[LOADED_KEY], mode)},
                keep=lambda made: config.stash.__setitem__(RUN_KEY, made),  # Ctrl-C from here on: torn down
            )
    except ProviderError as exc:
        _exit(str(exc))
        return
    config.stash[RUN_KEY] = run
    config.stash[STATE_KEY] = run.state_dir


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    state_dir = node.config.stash.get(STATE_KEY, None)
    if state_dir is not None:
        node.workerinput["crossnet_state_dir"] = str(state_dir)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" not in metafunc.fixturenames:
        return
    suite = getattr(metafunc.module, "SUITE", None)
    setup = metafunc.config.stash.get(SETUP_KEY, None)
    if setup is None or suite is None:
        return
    cells = [c for c in setup[2] if c.suite == suite]
    if not cells:  # this suite asks nothing of the selected setup: say so instead of "empty parameter set"
        reason = suite_named(suite).skip_reason(setup[1])
        metafunc.parametrize("cell", [pytest.param(None, marks=pytest.mark.skip(reason=reason))], ids=["none"])
        return
    metafunc.parametrize("cell", cells, ids=[c.id for c in cells])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    marks: dict[str, pytest.MarkDecorator] = {}  # one decorator per name (pytest.mark.NAME costs, ×100,000)
    places: dict[Any, tuple[str, int | None]] = {}  # a suite's test function: where it is, read once
    for item in items:
        cell = cell_of(item)
        if cell is not None:
            for name in (cell.suite, cell.probe.protocol, cell.scope, cell.vantage.kind):
                if name not in marks:
                    marks[name] = getattr(pytest.mark, name.replace("-", "_"))
                item.add_marker(marks[name])
            _place(item, places)


def _place(item: pytest.Item, places: dict[Any, tuple[str, int | None]]) -> None:
    """Item.location as pytest computes it, with the file and line of the cells' shared test
    function looked up once (pytest reads them from the function's source for every item: ~3 s at
    25,000 items)."""
    if type(item) is not pytest.Function:
        return
    function = item.obj
    if function not in places:
        path, line, _ = item.location
        places[function] = (path, line)
    else:
        item.__dict__["location"] = (*places[function], item.getmodpath())  # Item.location is a cached_property


def pytest_collection_finish(session: pytest.Session) -> None:
    """The collected cells live until the end: out of the garbage collector's sight (gc.freeze), a
    large matrix's heap is not traversed again by every collection during the run. A full
    collection waits for 100 middle-generation ones instead of 10: what a run makes (reports,
    records) lives until its end too, and at 4 x 8 twenty full collections of it cost 8.4 s."""
    if _runs_suites(session.config):
        gc.freeze()
        session.config.stash[GC_THRESHOLDS_KEY] = young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_GC_AFTER)


def current_setup(config: pytest.Config) -> tuple[Topology, Profile, list[Cell]]:
    """The topology, profile and cells of this session (built from configs + profile only)."""
    return config.stash[SETUP_KEY]


JudgeCell = Callable[[Cell], None]


@pytest.hookimpl  # after pytest's skip/xfail marks (a skipped cell is never probed), before its fixtures
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a cell's test: probe its suite once (batched) and note the item for `judge_cell`. A
    cell that could not be probed (an agent or the sandbox gone, the harness starved) is a pytest
    *error* raised here, in setup: never a network verdict. (A hook, not a per-test fixture: at
    tens of thousands of cells pytest's per-item fixture machinery cost more than the probing.)"""
    cell = cell_of(item)
    if cell is None or "judge_cell" not in getattr(item, "fixturenames", ()):
        return
    item.config.stash[ITEM_KEY] = item
    run = current_run(item.config)
    existing_mode.skip_refused_vantage(run.provider, cell, run.cluster_set)
    judgement = suite_judgements(item, cell.suite)[cell.id]
    obs = judgement.observation
    if obs.error in INFRASTRUCTURE_ERRORS:
        raise ProbeInfrastructureError(f"not probed ({obs.error}): {obs.detail or judgement.message}")


@pytest.fixture(scope="session")
def judge_cell(pytestconfig: pytest.Config) -> JudgeCell:
    """The one fixture a suite needs: judges the running test's cell (probed in its setup)."""
    return judge_for(pytestconfig)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report_ = outcome.get_result()
    if call.when == "call" and hasattr(item, "crossnet_cell"):
        report_.crossnet_cell = item.crossnet_cell  # travels to the xdist controller with the report
    if call.when == "call" and hasattr(item, "crossnet_fact"):
        report_.crossnet_fact = item.crossnet_fact


class _CellCollector:
    """Registered on the controller only: gathers every judged cell, from this process or
    from xdist workers (the cell rides on the serialized report)."""

    def __init__(self, cells: list[dict[str, Any]], facts: list[dict[str, Any]]) -> None:
        self.cells, self.facts = cells, facts
        self.not_probed: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "setup" and report.failed and "ProbeInfrastructureError" in str(report.longrepr):
            self.not_probed.append(report.nodeid)
        if report.when != "call":
            return
        cell, fact = getattr(report, "crossnet_cell", None), getattr(report, "crossnet_fact", None)
        if cell is not None:
            self.cells.append(cell)
        if fact is not None:
            self.facts.append(fact)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not _is_controller(config) or SETUP_KEY not in config.stash:
        return
    with signals_deferred():  # the reports and the teardown finish even when Ctrl-C/SIGTERM come now
        _finish(config, exitstatus)


def _matrix(config: pytest.Config, exitstatus: int | None) -> dict[str, Any]:
    """The matrix document of this session so far; exitstatus None: the run has not ended yet."""
    judged, facts = config.stash.get(CELLS_KEY, []), config.stash.get(FACTS_KEY, [])
    _, profile, _ = config.stash[SETUP_KEY]
    run = config.stash.get(RUN_KEY, None)
    interrupted = exitstatus == int(pytest.ExitCode.INTERRUPTED)
    return {
        "schema": report.MATRIX_SCHEMA,
        "run": {
            "provider": run.cluster_set.provider if run else config.stash.get(PROVIDER_KEY, ("?", ""))[0],
            "profile": profile.name,
            "clusters": [c.name for c in config.stash[SETUP_KEY][0].clusters],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(config.stash[STARTED_KEY])),
            "duration_s": round(time.time() - config.stash[STARTED_KEY], 3),
            "exit_status": exitstatus,
            "interrupted": interrupted,
            # A run is complete when it ended with a verdict (0 all good, 1 failing cells); anything
            # else (interrupted, bring-up failed, still running or killed) must not look current.
            "complete": exitstatus in (int(pytest.ExitCode.OK), int(pytest.ExitCode.TESTS_FAILED)),
            "not_probed": len(config.stash[COLLECTOR_KEY].not_probed),
            "options": {
                "probe_timeout": config.getoption("probe_timeout"),
                "strict_flakes": bool(config.getoption("strict_flakes")),
            },
            "timings": {k: round(v, 4) for k, v in (run.timings if run else {}).items()},
            "discovery": existing_mode.matrix_record(run),
        },
        "cells": sorted(judged, key=lambda c: (c["suite"], c["id"])),
        "facts": sorted(facts, key=lambda f: str(f["id"])),
    }


def _no_html(cells: int) -> str:
    """report.html above HTML_MAX_CELLS (pytest-html: ~20 MB at 25,000 cells): where the results are."""
    return (
        "<!doctype html><meta charset=utf-8><title>crossnet: report.html not written</title>"
        f"<p>pytest-html's report is written when the setup's matrix has up to {HTML_MAX_CELLS:,} cells; this one "
        f"has {cells:,}. Every cell run is in <a href=matrix.html>matrix.html</a> (and matrix.json, junit.xml); pass "
        "<code>--html PATH</code> to have pytest-html's report anyway.</p>\n"
    )


def _finish(config: pytest.Config, exitstatus: int) -> None:
    if config.stash.get(REPORTS_STARTED_KEY, False):
        config.stash[REPORTS_STARTED_KEY] = False  # written once, with how the run ended
        matrix = _matrix(config, int(exitstatus))
        stub = hasattr(config.option, "htmlpath") and not config.option.htmlpath  # pytest-html left out
        extra = [("report.html", _no_html(len(config.stash[SETUP_KEY][2])))] if stub else []
        written = report.write_reports(matrix, Path(config.getoption("reports")), extra)
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            counts = report.counts(matrix)
            summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
            judged = f"{len(matrix['cells'])} cells: {summary}" if matrix["cells"] else "no cell was judged"
            terminal.write_line(f"crossnet matrix: {judged}")
            terminal.write_line("crossnet reports: " + ", ".join(str(p) for p in written))
    _tear_down(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    # After Ctrl-C/SIGTERM during bring-up pytest never calls sessionfinish: the reports still say
    # how the run ended, then the teardown runs.
    if config.stash.get(REPORTS_STARTED_KEY, False) and _is_controller(config):
        with signals_deferred():
            _finish(config, int(pytest.ExitCode.INTERRUPTED))
    _tear_down(config)
    if GC_THRESHOLDS_KEY in config.stash:  # as it was (pytest may run again in this process), with what
        gc.freeze()  # the run made out of sight: the process ends without a full collection of it (~2 s)
        gc.set_threshold(*config.stash[GC_THRESHOLDS_KEY])
        del config.stash[GC_THRESHOLDS_KEY]


def _tear_down(config: pytest.Config) -> None:
    batches = config.stash.get(BATCHES_KEY, None)
    if batches is not None:
        batches.stop()  # no further suite is probed against a topology going away
    run = config.stash.get(RUN_KEY, None)
    if run is None or not _is_controller(config):
        return
    del config.stash[RUN_KEY]
    tear_down(run)


__all__ = [  # the stash keys other modules read (the results bundle, tests) are re-exported from cell_checks
    "BATCH_KEY",
    "RUNNER_KEY",
    "RUN_KEY",
    "STATE_KEY",
    "JudgeCell",
    "ProbeInfrastructureError",
    "check_cell",
    "current_run",
    "current_setup",
    "judge_cell",
]
