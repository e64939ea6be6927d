"""An in-memory provider for unit tests (as httpx ships MockTransport): no namespaces, no
root, milliseconds. It records every change so tests can check plumbing and its undo, and
answers probes from a tiny routing model: a pod is reachable when every node of the source
cluster has a route to the target node's podCIDR (or it is in the same cluster)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from crossnet.model import ClusterSet, Topology
from crossnet.plumbing.routes import RouteChange
from crossnet.providers.base import ExecTarget, ProviderError, StateFile
from crossnet.providers.exec_backend import exec_host
from crossnet.providers.lab.clusterset import live_cluster_set
from crossnet.providers.lab.topology import plan_lab, stock_corefile
from crossnet.wire import ProbeResult, ProbeSpec

__all__ = ["FakeProvider"]


class FakeAgent:
    def __init__(self, provider: FakeProvider, agent_id: str) -> None:
        self.provider, self.agent_id = provider, agent_id

    def probe(self, probes: list[ProbeSpec], timeout: float) -> list[ProbeResult]:
        return [self.provider.answer(self.agent_id, p) for p in probes]


class FakeProvider:
    name = "fake"
    converge_timeout = 2.0
    multicluster_owns_corefile = False

    def __init__(self, state_dir: Path, corefiles: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.state = StateFile(state_dir)
        self.routes: dict[tuple[str, str], dict[str, str]] = {}
        self.corefiles: dict[str, str] = dict(corefiles or {})
        self.log: list[str] = []
        self.cluster_set: ClusterSet | None = None
        self.down_called = False

    def up(self, topology: Topology) -> ClusterSet:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state.write({"provider": "fake", "run_id": "fake", "phase": "up"})
        self.cluster_set = live_cluster_set(plan_lab(topology))
        for cluster in topology.clusters:
            self.corefiles.setdefault(cluster.name, stock_corefile(cluster.dns_domain))
        self.log.append("up")
        return self.cluster_set

    def deploy_agents(self) -> ClusterSet:
        self.log.append("deploy_agents")
        if self.cluster_set is None:
            raise ProviderError("fake: not up")
        return self.cluster_set

    def detach(self) -> None:
        self.log.append("detach")

    def down(self) -> None:
        self.down_called = True
        self.log.append("down")

    def exec(self, target: ExecTarget, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]:
        self.log.append(f"exec {target} {' '.join(argv)}")
        return 0, "", ""

    def node_host(self, cluster: str, node: str) -> Any:
        """testinfra's view of a node: commands through this provider's exec."""
        return exec_host(self.exec, cluster, node)

    def apply_routes(self, changes: list[RouteChange]) -> None:
        for change in changes:
            self.routes.setdefault((change.cluster, change.node), {})[change.destination] = change.via
        self.log.append(f"routes +{len(changes)}")

    def apply_routes_undo(self, changes: list[RouteChange]) -> None:
        for change in changes:
            self.routes.get((change.cluster, change.node), {}).pop(change.destination, None)
        self.log.append(f"routes -{len(changes)}")

    def read_corefile(self, cluster: str) -> str:
        return self.corefiles[cluster]

    def write_corefile(self, cluster: str, text: str) -> None:
        self.corefiles[cluster] = text
        self.log.append(f"corefile {cluster}")

    def agent_client(self, agent_id: str) -> FakeAgent:
        return FakeAgent(self, agent_id)

    # ------------------------------------------------------------------ the routing model

    def answer(self, agent_id: str, probe: ProbeSpec) -> ProbeResult:
        if self.cluster_set is None:
            raise ProviderError("fake: not up")
        cluster_name, node_short, _ = agent_id.split("/")
        if str(probe["protocol"]).startswith("dns"):
            return {"id": probe["id"], "reached": True, "answers": [], "rcode": "NOERROR"}
        dst = ipaddress.IPv4Address(str(probe["dst"]))
        cluster = self.cluster_set.cluster(cluster_name)
        if dst in ipaddress.IPv4Network(cluster.pod_subnet):
            return {"id": probe["id"], "reached": True, "source_ip": None, "latency_ms": 0.1}
        routes = self.routes.get((cluster_name, node_short), {})
        routed = any(dst in ipaddress.IPv4Network(cidr) for cidr in routes)
        node_ip = cluster.node(node_short).ip
        if routed:
            return {"id": probe["id"], "reached": True, "source_ip": node_ip, "latency_ms": 0.1}
        return {"id": probe["id"], "reached": False, "error": "no-route", "latency_ms": 0.1}
