"""Run probes in batches: one request per agent, all agents at once, every probe of a batch
concurrently inside its agent. Returns observations; it never judges."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from crossnet.matrix import LiveCell
from crossnet.model import Observation
from crossnet.providers.base import AgentClient

__all__ = ["probe_cells"]

CONTROL_MARGIN = 5.0  # seconds the control request may take beyond the slowest probe
AGENT_CONCURRENCY = 256  # probes an agent runs at once per request (crossnet.agent.control); the rest wait


def probe_cells(lives: Sequence[LiveCell], client_for: Callable[[str], AgentClient],
                timeout: float) -> dict[str, Observation]:
    by_agent: dict[str, list[LiveCell]] = {}
    for live in lives:
        by_agent.setdefault(live.agent, []).append(live)

    def run(agent: str) -> dict[str, Observation]:
        batch = by_agent[agent]
        try:
            waves = -(-len(batch) // AGENT_CONCURRENCY)  # a batch of only timeouts takes this many timeouts
            results = client_for(agent).probe([live.probe for live in batch], timeout * waves + CONTROL_MARGIN)
        except Exception as exc:  # noqa: BLE001 - an unreachable agent is an observation, not a crash
            failure = Observation(reached=False, error="agent-error",
                                  detail=f"agent {agent} could not be asked: {exc.__class__.__name__}: {exc}")
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
