"""Probing and judging the cells of a pytest session (the plugin's per-cell work): every suite's
batch started once (crossnet.suite_batches), one cell judged per test with its JUnit properties,
its matrix record, its repro command and, when it fails, the node evidence of its path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crossnet import existing_mode
from crossnet.evidence import collect_evidence, path_ends
from crossnet.judge import cell_record
from crossnet.lifecycle import Run, attach
from crossnet.live import LiveCell, repro_command, state_dir_implied
from crossnet.model import FAILING_VERDICTS, Cell, Judgement
from crossnet.runner import SuiteRunner
from crossnet.suite_batches import SuiteBatches

RUN_KEY = pytest.StashKey[Run]()
STATE_KEY = pytest.StashKey[Path]()
BATCH_KEY = pytest.StashKey[dict[str, dict[str, Judgement]]]()
RUNNER_KEY = pytest.StashKey[SuiteRunner]()
BATCHES_KEY = pytest.StashKey[SuiteBatches]()
EVIDENCE_KEY = pytest.StashKey[dict[str, str]]()
IMPLIED_KEY = pytest.StashKey[dict[Path, bool]]()


class ProbeInfrastructureError(Exception):
    """A cell could not be probed (agent down, API error): a JUnit error, not a failure."""


ITEM_KEY = pytest.StashKey[pytest.Item]()  # the cell test running now (judge_cell judges it)


def current_run(config: pytest.Config) -> Run:
    """The live run: owned by the controller, attached (read-only) on an xdist worker."""
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        run = attach(config.stash[STATE_KEY])
        config.stash[RUN_KEY] = run
    return run


def cell_of(item: pytest.Item) -> Cell | None:
    cell = getattr(getattr(item, "callspec", None), "params", {}).get("cell")
    return cell if isinstance(cell, Cell) else None


def suite_judgements(item: pytest.Item, suite: str) -> dict[str, Judgement]:
    """Every cell of `suite` this process runs, probed in one batch and judged (crossnet.runner),
    once per suite and process. The first call starts every suite's batch in the background, in
    the session's order (crossnet.suite_batches): pytest's work on one suite overlaps the probing
    of the next."""
    config = item.config
    cache = config.stash.setdefault(BATCH_KEY, {})
    if suite not in cache:
        batches = config.stash.get(BATCHES_KEY, None)
        if batches is None:
            batches = config.stash[BATCHES_KEY] = start_batches(item.session)
            config.stash[RUNNER_KEY] = batches.runner
        try:
            cache[suite] = batches.judgements(suite)
        except Exception as exc:  # noqa: BLE001 - every item of the suite: an error of its own, not a verdict
            # A new exception per item: re-raising the batch's one would grow its traceback each time.
            raise ProbeInfrastructureError(
                f"suite {suite} could not be probed: {exc.__class__.__name__}: {exc}"
            ) from None
    return cache[suite]


def failing_verdicts(config: pytest.Config) -> set[str]:
    """The verdicts that fail a cell's test in this session (`flaky` too under --strict-flakes)."""
    return set(FAILING_VERDICTS) | ({"flaky"} if config.getoption("strict_flakes") else set())


def path_unreached_for_snat(cell: Cell, judgement: Judgement) -> bool:
    """A SNAT cell whose path was not reached: not a source question (its test is skipped)."""
    return cell.suite == "snat" and judgement.verdict == "regression"


def judge_for(config: pytest.Config) -> Callable[[Cell], None]:
    """What the `judge_cell` fixture gives a cell's test: judge the running test's own cell."""

    def judge(cell: Cell) -> None:
        __tracebackhide__ = True
        item = config.stash.get(ITEM_KEY, None)
        if item is None or cell_of(item) is not cell:
            raise pytest.UsageError("judge_cell(cell) judges the running test's own `cell` parameter only")
        check_cell(item, cell)

    return judge


def start_batches(session: pytest.Session) -> SuiteBatches:
    config = session.config
    run = current_run(config)
    runner = SuiteRunner(run.cluster_set, run.provider.agent_client, float(config.getoption("probe_timeout")))
    by_suite: dict[str, list[Cell]] = {}
    for cell in (cell_of(item) for item in session.items):
        if cell is not None and not existing_mode.refused(run.provider, cell, run.cluster_set):
            by_suite.setdefault(cell.suite, []).append(cell)
    return SuiteBatches(runner, list(by_suite.items()))


def check_cell(item: pytest.Item, cell: Cell) -> None:
    """Judge one cell and fail with one actionable line plus the repro command."""
    __tracebackhide__ = True
    config = item.config
    judgement = suite_judgements(item, cell.suite)[cell.id]
    live = config.stash[RUNNER_KEY].lives[cell.id]
    dst_name = current_run(config).cluster_set.name(cell.target.label)
    record = cell_record(live, judgement, item.nodeid, dst_name, _repro(config, live.repro))
    obs = judgement.observation
    item.user_properties += [
        ("src", f"{cell.vantage.label} {live.src_ip}"),
        ("dst", live.dst_addr),
        ("protocol", record["protocol"]),
        ("expected", cell.expectation.reachable),
        ("observed", record["observed"]),
        ("source-ip", obs.source_ip or ""),
        ("latency", f"{obs.latency_ms:.3f}ms" if obs.latency_ms is not None else ""),
        ("rule", cell.expectation.rule),
        ("verdict", judgement.verdict),
    ] + ([("global-ip", live.global_ip)] if live.global_ip else [])
    if path_unreached_for_snat(cell, judgement):
        pytest.skip(
            f"the path was not reached ({judgement.message}); its source IP is judged once the path's own cell passes"
        )
    node: Any = item
    node.crossnet_cell = record  # pytest_runtest_makereport puts it on the report
    if judgement.verdict in failing_verdicts(config):
        evidence = _evidence(config, cell, live)
        record["evidence"] = evidence
        print(evidence)  # JUnit system-out of this cell (junit_logging = system-out)
        pytest.fail(f"{judgement.verdict}: {judgement.message}\n  repro: {record['repro']}", pytrace=False)


def _repro(config: pytest.Config, repro: str) -> str:
    """live.repro_command where pytest ran; whether the run's state directory must be named is
    looked up once per session (it globs the state directories)."""
    state_dir, where = current_run(config).state_dir, Path(config.invocation_params.dir)
    implied = config.stash.setdefault(IMPLIED_KEY, {})
    if state_dir not in implied:
        implied[state_dir] = state_dir_implied(state_dir, where)
    return repro_command(repro, state_dir, where, implied[state_dir])


def _evidence(config: pytest.Config, cell: Cell, live: LiveCell) -> str:
    """Node evidence from both ends of a failing cell's path, collected once per path and run."""
    run = current_run(config)
    src, dst, dns = path_ends(run.cluster_set, cell)
    flow = (live.src_ip, live.dst_addr.split(":")[0].split(" ")[0])
    key = f"{src}|{dst}|{dns}|{flow}"
    cache = config.stash.setdefault(EVIDENCE_KEY, {})
    if key not in cache:
        cache[key] = collect_evidence(run, src, dst, flow, dns)
    return cache[key]


__all__ = [
    "BATCHES_KEY",
    "BATCH_KEY",
    "ITEM_KEY",
    "RUNNER_KEY",
    "RUN_KEY",
    "STATE_KEY",
    "ProbeInfrastructureError",
    "cell_of",
    "check_cell",
    "current_run",
    "failing_verdicts",
    "judge_for",
    "path_unreached_for_snat",
    "start_batches",
    "suite_judgements",
]
