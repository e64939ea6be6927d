"""Probe a suite's cells and judge them, the one way every caller does it (the pytest plugin,
xdist workers and `crossnet bench`): one batch per agent, all agents at once; a probe another
suite already ran in this process (same agent, same probe) is reused; expected-reachable cells
that failed are re-probed once, and a pass then is `flaky`. Probes report; the judge judges."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from crossnet.judge import judge
from crossnet.live import LiveCell, live_cell
from crossnet.model import Cell, ClusterSet, Judgement, Observation
from crossnet.providers.base import AgentClient

__all__ = ["SuiteRunner", "probe_cells"]

CONTROL_MARGIN = 5.0  # seconds the control request may take beyond the slowest probe
AGENT_CONCURRENCY = 256  # probes an agent runs at once per request (crossnet.agent.control); the rest wait


def probe_cells(
    lives: Sequence[LiveCell], client_for: Callable[[str], AgentClient], timeout: float
) -> dict[str, Observation]:
    by_agent: dict[str, list[LiveCell]] = {}
    for live in lives:
        by_agent.setdefault(live.agent, []).append(live)

    def run(agent: str) -> dict[str, Observation]:
        batch = by_agent[agent]
        try:
            waves = -(-len(batch) // AGENT_CONCURRENCY)  # a batch of only timeouts takes this many timeouts
            results = client_for(agent).probe([live.probe for live in batch], timeout * waves + CONTROL_MARGIN)
        except Exception as exc:  # noqa: BLE001 - an unreachable agent is an observation, not a crash
            failure = Observation(
                reached=False,
                error="agent-error",
                detail=f"agent {agent} could not be asked: {exc.__class__.__name__}: {exc}",
            )
            return {live.cell.id: failure for live in batch}
        observed: dict[str, Observation] = {}
        for result in results:
            fields = {k: v for k, v in result.items() if k in Observation.__dataclass_fields__}
            observed[str(result["id"])] = Observation.from_json(fields)
        missing = Observation(reached=False, error="agent-error", detail=f"agent {agent} returned no result")
        return {live.cell.id: observed.get(live.cell.id, missing) for live in batch}

    observations: dict[str, Observation] = {}
    if not by_agent:
        return observations
    with ThreadPoolExecutor(max_workers=min(32, len(by_agent))) as pool:
        for part in pool.map(run, sorted(by_agent)):
            observations.update(part)
    return observations


@dataclass
class SuiteRunner:
    """Judges the cells of a run suite by suite, keeping what was observed so later suites (SNAT)
    reuse it. `lives` holds every cell's live addresses once it was judged."""

    cluster_set: ClusterSet
    client_for: Callable[[str], AgentClient]
    timeout: float
    observed: dict[str, Observation] = field(default_factory=dict)  # by LiveCell.probe_key
    lives: dict[str, LiveCell] = field(default_factory=dict)

    def judge_cells(self, cells: Sequence[Cell]) -> dict[str, Judgement]:
        lives = {c.id: live_cell(c, self.cluster_set, self.timeout) for c in cells}
        fresh = probe_cells(
            [live for live in lives.values() if live.probe_key not in self.observed], self.client_for, self.timeout
        )
        self.observed.update({lives[i].probe_key: obs for i, obs in fresh.items()})
        first = {i: self.observed[live.probe_key] for i, live in lives.items()}
        judgements = {i: judge(lives[i], first[i]) for i in lives}
        again = [lives[i] for i, judged in judgements.items() if judged.verdict == "regression"]
        if again:  # expected reachable and failed: re-probed once; a pass now is `flaky`
            retried = probe_cells(again, self.client_for, self.timeout)
            judgements.update({i: judge(lives[i], first[i], retried[i]) for i in retried})
        self.lives.update(lives)
        return judgements
