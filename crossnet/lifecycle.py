"""Bring a run up (topology, agents, plumbing, convergence) and down (undo in reverse).

Shared by the pytest plugin, the CLI and the benchmark, whatever the provider. Each stage
prints one progress line with its time, so a long step is never silent.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossnet.globalnet import CLUSTERSET_DOMAIN
from crossnet.model import ClusterSet, Topology
from crossnet.plumbing.corefile import CorefileError, plan_forward_patch
from crossnet.plumbing.mcs import clusterset_block
from crossnet.plumbing.nodes import CONNTRACK_FLUSH, NodeCommand, plan_masquerade_exceptions, plan_rp_filter
from crossnet.plumbing.routes import RouteChange, plan_peer_routes, plan_service_routes
from crossnet.profile import Plumbing
from crossnet.providers.base import ExecTarget, Provider, ProviderError, StateFile
from crossnet.providers.select import ProviderSettings, attach_provider, make_provider
from crossnet.wire import ProbeResult, ProbeSpec
from crossnet.workloads import ECHO_SERVICE, agent_id

__all__ = [
    "Progress",
    "Run",
    "apply_plumbing",
    "attach",
    "bring_up",
    "bring_up_with",
    "default_state_dir",
    "new_run_id",
    "signals_deferred",
    "sigterm_as_interrupt",
    "tear_down",
    "wait_converged",
]

Progress = Callable[[str], None]
CONVERGE_TIMEOUT = 30.0


def stderr_progress(message: str) -> None:
    print(f"crossnet: {message}", file=sys.stderr, flush=True)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def default_state_dir(run_id: str) -> Path:
    return Path.cwd() / ".crossnet" / run_id


@dataclass
class Run:
    """A live run: its provider, what it brought up and how long each stage took."""

    provider: Provider
    cluster_set: ClusterSet
    owned: bool  # False when attached to somebody else's run: never tear that down
    timings: dict[str, float] = field(default_factory=dict)
    ended: bool = False  # torn down already (a second tear_down does nothing)

    @property
    def state_dir(self) -> Path:
        return self.provider.state_dir


def _timed(timings: dict[str, float], key: str, progress: Progress, label: str, action: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = action()
    timings[key] = time.perf_counter() - started
    progress(f"{label} ({timings[key]:.2f}s)")
    return result


def bring_up(
    topology: Topology,
    state_dir: Path,
    run_id: str,
    plumbing: Plumbing | None = None,
    detached: bool = False,
    progress: Progress = stderr_progress,
    provider: str = "lab",
    reuse: bool = False,
    agent_image: str | None = None,
    plumbing_mode: str = "inject",
    existing: Any = None,
    record: dict[str, Any] | None = None,
    keep: Callable[[Run], None] | None = None,
) -> Run:
    """Bring up `topology` on the named provider, with the plumbing of the profile (`plumbing_mode`
    "none": with nothing joined -- the clusters are left as they come up). `record` is written to
    the state file with phase "ready"; `keep` receives the Run as soon as one exists, so a caller
    interrupted anywhere after that still holds what it must tear down."""
    settings = ProviderSettings(
        detached=detached,
        reuse=reuse,
        agent_image=agent_image,
        global_cidr=plumbing.global_cidr if plumbing else None,
        bgp=plumbing.bgp if plumbing else None,
        mcs=plumbing.mcs if plumbing else None,
        existing=existing,  # --provider existing: the controller's discovery
    )
    made = make_provider(provider, state_dir, run_id, settings)
    return bring_up_with(made, topology, run_id, plumbing, progress, plumbing_mode, record, keep)


def bring_up_with(
    provider: Provider,
    topology: Topology,
    run_id: str,
    plumbing: Plumbing | None = None,
    progress: Progress = stderr_progress,
    plumbing_mode: str = "inject",
    record: dict[str, Any] | None = None,
    keep: Callable[[Run], None] | None = None,
) -> Run:
    timings: dict[str, float] = {}
    try:
        cluster_set = _timed(
            timings,
            "topology_up",
            progress,
            f"{provider.name} topology up: {len(topology.clusters)} clusters, "
            f"{sum(len(c.nodes) for c in topology.clusters)} nodes",
            lambda: provider.up(topology),
        )
    except BaseException:
        provider.down()  # whatever up() made before it failed
        raise
    run = Run(provider, cluster_set, owned=True, timings=timings)
    try:
        if keep is not None:
            keep(run)
        cluster_set = run.cluster_set = _timed(
            timings, "agents_ready", progress, "agents and cluster DNS ready", provider.deploy_agents
        )
        by_bgp = plumbing is not None and plumbing.bgp is not None
        if plumbing_mode == "none" or by_bgp:  # joined by whoever built them (or BGP), or not at all
            provider.state.update(plumbing={"routes": [], "corefiles": {}, "node_commands": []}, plumbing_mode="none")
            progress(
                "plumbing: BGP joins the clusters (no route, Corefile or node setting injected)"
                if by_bgp
                else "plumbing none: no route, Corefile or node setting injected; the matrix shows how they are joined"
            )
        else:
            _timed(
                timings,
                "plumbing",
                progress,
                "node routes and Corefile forwards injected",
                lambda: apply_plumbing(provider, cluster_set, run_id, plumbing),
            )
            _timed(
                timings,
                "converged",
                progress,
                "peer names resolve in every cluster",
                lambda: wait_converged(provider, cluster_set, provider.converge_timeout),
            )
        provider.state.update(phase="ready", **(record or {}))
        provider.detach()  # crossnet up: the run now outlives this process (a no-op when attached to it)
    except BaseException as exc:  # Ctrl-C included: never leave a half-built topology behind
        progress(f"bring-up stopped ({exc.__class__.__name__}); tearing down what was made")
        tear_down(run, progress=progress)
        raise
    return run


def attach(state_dir: Path) -> Run:
    provider = attach_provider(state_dir)
    data = provider.state.read()
    if "cluster_set" not in data or data.get("phase") != "ready":
        raise ProviderError(f"the run at {state_dir} is not ready (phase {data.get('phase')!r})")
    return Run(provider, recorded_cluster_set(provider.state.path, data), owned=False)


def recorded_cluster_set(path: Path, data: dict[str, Any]) -> ClusterSet:
    """The cluster set a state file records; a malformed one is one error naming the file."""
    try:
        return ClusterSet.from_json(data["cluster_set"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderError(
            f"{path}: its cluster_set cannot be read ({exc.__class__.__name__}: {str(exc)[:80]})"
        ) from None


def apply_plumbing(provider: Provider, cluster_set: ClusterSet, run_id: str, plumbing: Plumbing | None = None) -> None:
    """Routes to every peer node's podCIDR (and, when the profile says so, to each peer's
    serviceSubnet via its gateway), the profile's node settings, then a fenced forward block per
    peer domain. Each change is recorded with its undo in the state file before it is made."""
    plumbing = plumbing or Plumbing()
    globalnet = plumbing.global_cidr is not None  # identical CIDRs: no pod routes; Globalnet joins the clusters
    routes = [] if globalnet else plan_peer_routes(cluster_set)
    if plumbing.service_routes and not globalnet:
        routes += plan_service_routes(cluster_set)
    commands = [] if plumbing.masquerade_to_peer_pods else plan_masquerade_exceptions(cluster_set)
    if plumbing.rp_filter:
        commands += plan_rp_filter(cluster_set, plumbing.rp_filter)
    record: dict[str, Any] = {
        "routes": [_route_json(r) for r in routes],
        "corefiles": {},
        "node_commands": [_command_json(c) for c in commands],
    }
    state = StateFile(provider.state_dir)
    state.update(plumbing=record)
    provider.apply_routes(routes)
    for command in commands:
        _run_on_node(provider, command.cluster, command.node, list(command.apply_argv), command.label)
    if commands:  # conntrack decides NAT on a flow's first packet: start clean after rule changes
        for cluster in cluster_set.clusters:
            for node in cluster.nodes:
                provider.exec(ExecTarget(cluster.name, node.short), CONNTRACK_FLUSH)
    # The clusterset.local block (CoreDNS's multicluster plugin, as Karmada sets it up) is crossnet's to
    # add only where no multi-cluster layer owns the Corefile: Lighthouse on kind serves that zone itself.
    mcs_blocks = [clusterset_block(plumbing.mcs)] if plumbing.mcs and not provider.multicluster_owns_corefile else []
    for cluster in cluster_set.clusters:
        if globalnet and provider.multicluster_owns_corefile:
            continue  # the multi-cluster layer (Submariner's Lighthouse on kind) wires clusterset.local itself
        forwards = (
            {CLUSTERSET_DOMAIN: list(cluster.clusterset_dns_ips)}
            if globalnet
            else {peer.domain: list(peer.dns_server_ips) for peer in cluster_set.clusters if peer.name != cluster.name}
        )
        original = provider.read_corefile(cluster.name)
        try:
            patch = plan_forward_patch(original, run_id, forwards, extra_blocks=mcs_blocks)
        except CorefileError as exc:
            raise ProviderError(f"{cluster.name}: cannot add the peer forwards to its Corefile: {exc}") from None
        record["corefiles"][cluster.name] = patch.original
        state.update(plumbing=record)
        provider.write_corefile(cluster.name, patch.patched)
    state.update(phase="plumbed")


def _run_on_node(provider: Provider, cluster: str, node: str, argv: list[str], label: str) -> None:
    rc, _, err = provider.exec(ExecTarget(cluster, node), argv)
    if rc != 0:
        raise ProviderError(f"{label}: `{' '.join(argv)}` failed (exit {rc}): {err.strip()[-400:]}")


def _command_json(command: NodeCommand) -> dict[str, Any]:
    return {"cluster": command.cluster, "node": command.node, "undo": list(command.undo_argv), "label": command.label}


def _route_json(route: RouteChange) -> dict[str, str]:
    return {"cluster": route.cluster, "node": route.node, "destination": route.destination, "via": route.via}


def wait_converged(provider: Provider, cluster_set: ClusterSet, timeout: float = CONVERGE_TIMEOUT) -> None:
    """Wait until, from a pod of every cluster, each peer's echo Service name resolves: the
    Corefile reload happened and the forward works. Bounded; says what never converged."""
    deadline = time.monotonic() + timeout
    pending = {(c.name, p.name) for c in cluster_set.clusters for p in cluster_set.clusters if p.name != c.name}
    last: dict[tuple[str, str], str] = {}
    while pending:
        for src, dst in sorted(pending):
            cluster, peer = cluster_set.cluster(src), cluster_set.cluster(dst)
            name = (
                f"{peer.name}.{ECHO_SERVICE}.{cluster_set.namespace}.svc.{CLUSTERSET_DOMAIN}."
                if peer.global_cidr
                else f"{ECHO_SERVICE}.{cluster_set.namespace}.svc.{peer.domain}."
            )
            probe: ProbeSpec = {
                "id": "converge",
                "protocol": "dns-udp",
                "timeout": 0.3,
                "server": cluster.dns_service_ip,
                "qname": name,
            }
            try:
                result = provider.agent_client(agent_id(src, cluster.nodes[0].short, "pod")).probe([probe], 6.0)[0]
            except (OSError, ProviderError) as exc:
                result = ProbeResult(reached=False, error=str(exc))
            if result.get("reached"):
                pending.discard((src, dst))
            else:
                last[(src, dst)] = str(result.get("error"))
        if pending and time.monotonic() > deadline:
            detail = ", ".join(f"{s} -> {d}: {last.get((s, d))}" for s, d in sorted(pending))
            raise ProviderError(
                f"peer names did not resolve within {timeout:.0f}s ({detail}); check the "
                "Corefile forward blocks with `crossnet status`"
            )
        if pending:
            time.sleep(0.05)


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def sigterm_as_interrupt() -> None:
    """Handle SIGTERM like Ctrl-C (teardown, reports marked interrupted) instead of a silent
    death. Only the main thread may install handlers; elsewhere this does nothing."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


@contextlib.contextmanager
def signals_deferred(progress: Progress = stderr_progress) -> Iterator[None]:
    """While tearing down, Ctrl-C and SIGTERM are noted, not obeyed: an interrupted teardown is
    what leaves things behind. A third signal gives up waiting and interrupts after all. Nested
    uses are fine (the inner one finds the noting handler installed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def note(signum: int, _frame: object) -> None:
        received.append(signum)
        if len(received) >= 3:
            raise KeyboardInterrupt
        progress("teardown in progress: it finishes first so nothing is left behind (signal 3 times to abandon it)")

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, note)  # swap: no moment without a handler
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def tear_down(run: Run, progress: Progress = stderr_progress) -> None:
    """Undo the plumbing in reverse (Corefiles restored byte for byte, routes removed), then end
    the topology. Every step runs even when an earlier one failed; Ctrl-C and SIGTERM wait for it."""
    if not run.owned or run.ended:
        return
    run.ended = True
    with signals_deferred(progress):
        _tear_down(run, progress)


def _tear_down(run: Run, progress: Progress) -> None:
    started = time.perf_counter()
    provider = run.provider
    try:
        plumbing = provider.state.read().get("plumbing") or {}
    except ProviderError:
        plumbing = {}
    problems: list[str] = []
    for cluster, original in reversed(list((plumbing.get("corefiles") or {}).items())):
        try:
            provider.write_corefile(cluster, original)
        except (ProviderError, OSError) as exc:
            problems.append(f"restore Corefile of {cluster}: {exc}")
    for command in reversed(plumbing.get("node_commands") or []):
        try:
            provider.exec(ExecTarget(command["cluster"], command["node"]), list(command["undo"]))
        except (ProviderError, OSError) as exc:
            problems.append(f"undo {command['label']}: {exc}")
    routes = [
        RouteChange(r["cluster"], r["node"], r["destination"], r["via"], "undo") for r in plumbing.get("routes") or []
    ]
    try:
        provider.apply_routes_undo(list(reversed(routes)))
    except (ProviderError, OSError) as exc:
        problems.append(f"remove routes: {exc}")
    provider.down()
    run.timings["teardown"] = time.perf_counter() - started
    progress(f"torn down ({run.timings['teardown']:.2f}s)" + (f"; {'; '.join(problems)}" if problems else ""))
