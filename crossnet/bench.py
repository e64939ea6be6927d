"""`crossnet bench`: figures for each stage of a run on the lab (a benchmark prints numbers;
no test asserts on time)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from crossnet.lifecycle import bring_up, new_run_id, tear_down
from crossnet.options import load_setup
from crossnet.runner import SuiteRunner
from crossnet.suites import SUITES

__all__ = ["run_bench"]

# bgp_converged: part of topology_up under --topology bgp (BIRD started until every route is installed)
STAGES = ("topology_up", "bgp_converged", "agents_ready", "plumbing", "converged", "probe", "teardown", "total")


def _one_round(
    state_root: Path,
    topology_name: str | None,
    profile_name: str | None,
    timeout: float,
    kind_configs: list[str] | None = None,
) -> tuple[dict[str, float], int, dict[str, int]]:
    setup = load_setup(topology_name, kind_configs, profile_name)
    topology, profile, cells = setup.topology, setup.profile, setup.cells
    started = time.perf_counter()
    run_id = new_run_id()
    run = bring_up(topology, state_root / run_id, run_id, profile.plumbing, progress=lambda _m: None)
    try:
        run.timings["bgp_converged"] = float(run.provider.state.read().get("bgp_converged_s") or 0.0)
        probe_started = time.perf_counter()  # what `pytest suites/` does: suite by suite, reuse, re-probe
        runner = SuiteRunner(run.cluster_set, run.provider.agent_client, timeout)
        verdicts: dict[str, int] = {}
        for suite in SUITES:
            for judged in runner.judge_cells([c for c in cells if c.suite == suite]).values():
                verdicts[judged.verdict] = verdicts.get(judged.verdict, 0) + 1
        run.timings["probe"] = time.perf_counter() - probe_started
    finally:
        tear_down(run, progress=lambda _m: None)
    run.timings["total"] = time.perf_counter() - started
    return run.timings, len(cells), verdicts


def run_bench(
    rounds: int = 3,
    profile: str | None = None,
    topology: str | None = None,
    timeout: float = 2.0,
    kind_configs: list[str] | None = None,
) -> int:
    figures: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with tempfile.TemporaryDirectory(prefix="crossnet-bench-") as tmp:
        for number in range(1, rounds + 1):
            timings, cells, verdicts = _one_round(Path(tmp), topology, profile, timeout, kind_configs)
            for stage in STAGES:
                figures[stage].append(timings.get(stage, 0.0))
            print(f"round {number}: {cells} cells, verdicts {verdicts}, total {timings['total']:.3f}s", flush=True)
    print(f"\n{'stage':<14}{'median s':>10}{'min s':>10}{'max s':>10}")
    for stage in STAGES:
        values = figures[stage]
        if stage == "bgp_converged" and not any(values):
            continue  # not a bgp topology
        print(f"{stage:<14}{statistics.median(values):>10.3f}{min(values):>10.3f}{max(values):>10.3f}")
    probe = statistics.median(figures["probe"])
    print(f"\ncells {cells}; probing {cells / probe:.0f} cells/s (median round)")
    return 0
