"""`crossnet bench`: figures for each stage of a run on the lab (a benchmark prints numbers;
no test asserts on time)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from crossnet.config import load_topology, resolve_setup
from crossnet.lifecycle import bring_up, new_run_id, tear_down
from crossnet.matrix import build_cells, judge, live_cell
from crossnet.probes import probe_cells
from crossnet.profile import load_profile

__all__ = ["run_bench"]

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("topology_up", "agents_ready", "plumbing", "converged", "probe", "teardown", "total")


def _one_round(state_root: Path, topology_name: str | None,
               profile_name: str | None) -> tuple[dict[str, float], int, dict[str, int]]:
    paths, profile_name = resolve_setup(ROOT, topology_name, None, profile_name)
    profile = load_profile(profile_name)
    topology = load_topology(paths, allow_overlap=profile.globalnet, global_cidr=profile.plumbing.global_cidr)
    cells = build_cells(topology, profile)
    started = time.perf_counter()
    run_id = new_run_id()
    run = bring_up(topology, state_root / run_id, run_id, profile.plumbing, progress=lambda _m: None)
    try:
        probe_started = time.perf_counter()
        lives = [live_cell(c, run.cluster_set, 2.0) for c in cells]
        observed = probe_cells(lives, run.provider.agent_client, 2.0)
        run.timings["probe"] = time.perf_counter() - probe_started
        verdicts: dict[str, int] = {}
        for live in lives:
            verdict = judge(live, observed[live.cell.id]).verdict
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
    finally:
        tear_down(run, progress=lambda _m: None)
    run.timings["total"] = time.perf_counter() - started
    return run.timings, len(cells), verdicts


def run_bench(rounds: int = 3, profile: str | None = None, topology: str | None = None) -> int:
    figures: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with tempfile.TemporaryDirectory(prefix="crossnet-bench-") as tmp:
        for number in range(1, rounds + 1):
            timings, cells, verdicts = _one_round(Path(tmp), topology, profile)
            for stage in STAGES:
                figures[stage].append(timings.get(stage, 0.0))
            print(f"round {number}: {cells} cells, verdicts {verdicts}, total {timings['total']:.3f}s", flush=True)
    print(f"\n{'stage':<14}{'median s':>10}{'min s':>10}{'max s':>10}")
    for stage in STAGES:
        values = figures[stage]
        print(f"{stage:<14}{statistics.median(values):>10.3f}{min(values):>10.3f}{max(values):>10.3f}")
    probe = statistics.median(figures["probe"])
    print(f"\ncells {cells}; probing {cells / probe:.0f} cells/s (median round)")
    return 0
