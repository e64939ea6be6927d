"""Probe a suite's cells and judge them, the one way every caller does it (the pytest plugin,
xdist workers and `crossnet bench`): one batch per agent, all agents at once; a probe another
suite already ran in this process (same agent, same probe) is reused; expected-reachable cells
that failed are re-probed once, and a pass then is `flaky`. Probes report; the judge judges."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from crossnet.agent.cover import cover_waves
from crossnet.agent.icmp import LADDER_SECONDS
from crossnet.agent.results import SMALL_PACKET
from crossnet.judge import judge
from crossnet.live import LiveCell, live_cell
from crossnet.model import Cell, ClusterSet, Judgement, Observation
from crossnet.providers.base import AgentClient

__all__ = ["INFRASTRUCTURE_ERRORS", "PACING", "Pacing", "SuiteRunner", "probe_cells"]

CONTROL_MARGIN = 5.0  # seconds the control request may take beyond the slowest probe
STARVED_FRACTION = 0.25  # loop lag (share of the timeout) that makes a timeout the agent's, not the network's
STARVED_RETRIES = 2
# The harness (or the machine it runs on), not the network, failed: never a network verdict.
INFRASTRUCTURE_ERRORS = frozenset({"agent-error", "starved", "no-buffer", "slow"})
AGENT_CONCURRENCY = 256  # probes an agent runs at once per request (crossnet.agent.control); the rest wait


@dataclass(frozen=True)
class Pacing:
    """How hard a run may push the network it measures (and the harness itself): probes go to an
    agent in chunks; at most `workers` chunks are in flight at once across all agents (so at most
    workers x chunk probes), at most `per_dns_server` of the chunks that ask a DNS server at once
    per server and `dns_total` overall, and an agent never gets a second chunk before its first is
    answered. A chunk's probes are spread over targets, so no target gets more than a few at once;
    Service cells (each connects until every endpoint answered) and by-name cells (each asks a DNS
    server, which may forward to another) go in chunks of a third the size.
    Cells expected to be unreachable (they mostly wait out their timeout) travel in larger chunks
    of their own, at most `workers` of them at once, beside the others."""

    chunk: int = 24
    quiet_chunk: int = 128  # cells expected isolated: they send little and mostly wait
    workers: int = 12
    per_dns_server: int = 3
    # Chunks asking any DNS server at once, across all: a by-name probe also loads the peer's DNS it
    # is forwarded to (and a CNAME chased further), which per-server bounds cannot see.
    dns_total: int = 4


PACING = Pacing()
Chunk = tuple[str, list[LiveCell]]


def _spread(batch: list[LiveCell]) -> list[LiveCell]:
    """Interleave the probes of a batch by target, so consecutive probes aim at different ones."""
    by_target: dict[str, list[LiveCell]] = {}
    for live in batch:
        by_target.setdefault(str(live.probe.get("qname") or live.probe.get("dst")), []).append(live)
    queues = [by_target[key] for key in sorted(by_target)]
    spread: list[LiveCell] = []
    while queues:
        spread += [queue.pop(0) for queue in queues]
        queues = [queue for queue in queues if queue]
    return spread


def _chunks(lives: Sequence[LiveCell], pacing: Pacing) -> tuple[list[Chunk], list[Chunk]]:
    """(loud, quiet) chunks of (agent, probes). Loud: agents taking turns, so every agent progresses
    from the start. Quiet: the cells expected isolated, which mostly wait out their timeout; they run
    beside the loud ones from the start instead of after them."""
    per_agent: dict[str, list[list[LiveCell]]] = {}
    by_agent: dict[str, list[LiveCell]] = {}
    quiet: list[Chunk] = []
    for live in lives:
        by_agent.setdefault(live.agent, []).append(live)
    for agent, batch in sorted(by_agent.items()):
        loud = _spread([live for live in batch if live.cell.expectation.reachable != "no"])
        # Service cells make tens of connections each, by-name ones load DNS servers: smaller chunks.
        heavy = [live for live in loud if live.probe.get("cover") or live.probe.get("server")]
        plain = [live for live in loud if not (live.probe.get("cover") or live.probe.get("server"))]
        small = max(1, pacing.chunk // 3)
        per_agent[agent] = [plain[i : i + pacing.chunk] for i in range(0, len(plain), pacing.chunk)]
        per_agent[agent] += [heavy[i : i + small] for i in range(0, len(heavy), small)]
        for by_name in (False, True):  # by-name ones ask a DNS server first: small chunks keep that burst small
            size = pacing.chunk // 3 if by_name else pacing.quiet_chunk
            waiting = _spread(
                [
                    live
                    for live in batch
                    if live.cell.expectation.reachable == "no" and bool(live.probe.get("server")) == by_name
                ]
            )
            quiet += [(agent, waiting[i : i + size]) for i in range(0, len(waiting), size)]
    ordered: list[Chunk] = []
    while any(per_agent.values()):
        for agent in sorted(per_agent):
            if per_agent[agent]:
                ordered.append((agent, per_agent[agent].pop(0)))
    return ordered, quiet


class _Gates:
    """The scheduler's bounds: one chunk per agent at a time, `per_dns_server` chunks per DNS server."""

    def __init__(self, pacing: Pacing) -> None:
        self.pacing = pacing
        self.lock = threading.Condition()
        self.busy_agents: set[str] = set()
        self.dns_load: dict[str, int] = {}

    def _free(self, agent: str, servers: set[str]) -> bool:
        dns_chunks = sum(self.dns_load.values()) if servers else 0
        return (
            agent not in self.busy_agents
            and all(self.dns_load.get(s, 0) < self.pacing.per_dns_server for s in servers)
            and dns_chunks < self.pacing.dns_total
        )

    def enter(self, agent: str, servers: set[str]) -> None:
        with self.lock:
            self.lock.wait_for(lambda: self._free(agent, servers))
            self.busy_agents.add(agent)
            for server in servers:
                self.dns_load[server] = self.dns_load.get(server, 0) + 1

    def leave(self, agent: str, servers: set[str]) -> None:
        with self.lock:
            self.busy_agents.discard(agent)
            for server in servers:
                self.dns_load[server] -= 1
            self.lock.notify_all()


def probe_cells(
    lives: Sequence[LiveCell],
    client_for: Callable[[str], AgentClient],
    timeout: float,
    pacing: Pacing = PACING,
    cancel: threading.Event | None = None,
) -> dict[str, Observation]:
    """Observe every cell once, paced (see Pacing). Never judges; an agent that cannot be asked
    gives its cells an `agent-error` observation (an infrastructure error, not a verdict). Once
    `cancel` is set no further chunk is sent: its cells come back as `agent-error` (not probed)."""
    gates = _Gates(pacing)
    cancelled = cancel or threading.Event()
    pending, quiet = _chunks(lives, pacing)
    queue_lock = threading.Lock()

    def ask(agent: str, batch: list[LiveCell]) -> dict[str, Observation]:
        if cancelled.is_set():
            stopped = Observation(reached=False, error="agent-error", detail="not probed: the session ended first")
            return {live.cell.id: stopped for live in batch}
        try:
            waves = -(-len(batch) // AGENT_CONCURRENCY)  # a batch of only timeouts takes this many timeouts
            longest = max(_duration_bound(live, timeout) for live in batch)
            results = client_for(agent).probe([live.probe for live in batch], longest * waves + CONTROL_MARGIN)
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

    def take() -> tuple[str, list[LiveCell], set[str]] | None:
        """The next chunk whose agent and DNS servers are free now (else the first pending one)."""
        with queue_lock:
            if not pending or cancelled.is_set():
                return None
            with gates.lock:
                index = next((i for i, (agent, batch) in enumerate(pending) if gates._free(agent, _servers(batch))), 0)
            agent, batch = pending.pop(index)
        return agent, batch, _servers(batch)

    def worker() -> dict[str, Observation]:
        seen: dict[str, Observation] = {}
        while (job := take()) is not None:
            agent, batch, servers = job
            gates.enter(agent, servers)
            try:
                seen.update(ask(agent, batch))
            finally:
                gates.leave(agent, servers)
        return seen

    observations: dict[str, Observation] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(pacing.workers, len(quiet)))) as waiting:
        parts = [waiting.submit(ask, agent, batch) for agent, batch in quiet]
        if pending:
            with ThreadPoolExecutor(max_workers=min(pacing.workers, len(pending))) as pool:
                for part in [pool.submit(worker) for _ in range(min(pacing.workers, len(pending)))]:
                    observations.update(part.result())
        for done in parts:
            observations.update(done.result())
    return observations


def _duration_bound(live: LiveCell, timeout: float) -> float:
    """The longest one probe may take at the agent: a by-name probe resolves then connects; a
    Service probe connects in waves until every endpoint answered (crossnet.agent.cover.cover)."""
    stages = 2 if live.probe.get("qname") and live.probe.get("port") else 1
    endpoints = len(live.probe.get("expect_agents") or ())
    waves = cover_waves(endpoints, str(live.probe.get("protocol"))) if live.probe.get("cover") and endpoints > 1 else 1
    ladder = (
        LADDER_SECONDS if live.probe.get("measure_mtu") or int(live.probe.get("payload") or 0) >= SMALL_PACKET else 0
    )
    return timeout * stages * waves + ladder


def _servers(batch: list[LiveCell]) -> set[str]:
    return {str(live.probe["server"]) for live in batch if live.probe.get("server")}


@dataclass
class SuiteRunner:
    """Judges the cells of a run suite by suite, keeping what was observed so later suites (SNAT)
    reuse it. `lives` holds every cell's live addresses once it was judged."""

    cluster_set: ClusterSet
    client_for: Callable[[str], AgentClient]
    timeout: float
    observed: dict[str, Observation] = field(default_factory=dict)  # by LiveCell.probe_key
    lives: dict[str, LiveCell] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)  # set: the session ended, send nothing more

    def judge_cells(self, cells: Sequence[Cell]) -> dict[str, Judgement]:
        lives = {c.id: live_cell(c, self.cluster_set, self.timeout) for c in cells}
        fresh = probe_cells(
            [live for live in lives.values() if live.probe_key not in self.observed],
            self.client_for,
            self.timeout,
            cancel=self.cancel,
        )
        fresh = self._unstarved(lives, fresh)
        self.observed.update({lives[i].probe_key: obs for i, obs in fresh.items()})
        first = {i: self.observed[live.probe_key] for i, live in lives.items()}
        judgements = {i: judge(lives[i], first[i]) for i in lives}
        again = [
            lives[i]
            for i, judged in judgements.items()
            if judged.verdict == "regression" and first[i].error not in INFRASTRUCTURE_ERRORS
        ]
        if again:  # expected reachable and failed: re-probed once; a pass now is `flaky`
            retried = self._unstarved(lives, probe_cells(again, self.client_for, self.timeout, cancel=self.cancel))
            judgements.update({i: judge(lives[i], first[i], retried[i]) for i in retried})
        judgements.update(self._dead_targets(lives, judgements))
        self.lives.update(lives)
        return judgements

    def _dead_targets(self, lives: dict[str, LiveCell], judgements: dict[str, Judgement]) -> dict[str, Judgement]:
        """Regressions whose target is one of crossnet's own agents that no longer answers its control
        API: the harness lost its echo, the network was not asked. They become infrastructure errors."""
        failed = {i: j for i, j in judgements.items() if j.verdict == "regression"}
        wanted = {a for i in failed for a in lives[i].probe.get("expect_agents") or ()}
        if not wanted or self.cancel.is_set():
            return {}
        with ThreadPoolExecutor(max_workers=min(8, len(wanted))) as pool:
            alive = dict(zip(sorted(wanted), pool.map(self._answers, sorted(wanted)), strict=True))
        changed = {}
        for i, judged in failed.items():
            dead = sorted(a for a in lives[i].probe.get("expect_agents") or () if not alive[a])
            if dead:
                detail = f"the target's agent {', '.join(dead)} does not answer its control API (it died)"
                changed[i] = replace(
                    judged, observation=replace(judged.observation, error="agent-error", detail=detail)
                )
        return changed

    def _answers(self, agent: str) -> bool:
        try:
            self.client_for(agent).probe([], CONTROL_MARGIN)
        except Exception:  # noqa: BLE001 - any failure to answer means gone
            return False
        return True

    def starved(self, observation: Observation) -> bool:
        """A timeout while the agent's own event loop ran late by a quarter of the timeout or more
        (the agent, or the machine, was starved), or a send the sending host had no buffer for
        (ENOBUFS for a small packet: its neighbour table or queues are full), or a Service cell
        whose endpoints all answered but too slowly to cover them in its budget: not the network."""
        lag = observation.loop_lag_ms or 0.0
        late = observation.error == "timeout" and lag >= STARVED_FRACTION * self.timeout * 1000
        return late or observation.error in ("no-buffer", "slow")

    def _unstarved(self, lives: dict[str, LiveCell], observed: dict[str, Observation]) -> dict[str, Observation]:
        """Probe starved cells again (after a pause), up to STARVED_RETRIES times; what stays starved
        becomes an infrastructure error ("starved" or "no-buffer"), never a network verdict."""
        result = dict(observed)
        for attempt in range(STARVED_RETRIES):
            starved = [i for i, obs in result.items() if self.starved(obs)]
            if not starved or self.cancel.wait(0.5 * (attempt + 1)):  # a pause lets the machine catch up
                break
            result.update(probe_cells([lives[i] for i in starved], self.client_for, self.timeout, cancel=self.cancel))
        for i, obs in result.items():
            if obs.error in ("no-buffer", "slow"):
                result[i] = replace(obs, detail=f"{obs.detail}, {STARVED_RETRIES + 1} times")
            elif self.starved(obs):
                result[i] = replace(
                    obs,
                    error="starved",
                    detail=f"timed out while the agent's event loop ran {obs.loop_lag_ms:.0f} ms late, "
                    f"{STARVED_RETRIES + 1} times: the harness or the machine is overloaded",
                )
        return result
