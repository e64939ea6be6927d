"""Plan the node routes that join clusters: operators'
`ip route add <peer node podCIDR> via <peer node IP>` on every node, for every peer node.

Planning is pure (ClusterSet in, RouteChange list out); providers apply the changes and keep
the undo of each.
"""

from __future__ import annotations

from dataclasses import dataclass

from crossnet.model import ClusterSet

__all__ = ["RouteChange", "plan_peer_routes", "plan_service_routes", "service_gateway"]


@dataclass(frozen=True)
class RouteChange:
    """One route on one node. `apply_argv`/`undo_argv` are what a provider runs on the node."""

    cluster: str
    node: str  # short node name
    destination: str
    via: str
    reason: str

    @property
    def apply_argv(self) -> list[str]:
        # `replace` keeps it idempotent: re-applying after a crash does not fail.
        return ["ip", "route", "replace", self.destination, "via", self.via]

    @property
    def undo_argv(self) -> list[str]:
        return ["ip", "route", "del", self.destination, "via", self.via]

    @property
    def label(self) -> str:
        return f"{self.cluster}/{self.node}: {self.destination} via {self.via}"


def plan_peer_routes(cluster_set: ClusterSet) -> list[RouteChange]:
    """For every node of each cluster, a route to every peer node's podCIDR via that peer node."""
    changes: list[RouteChange] = []
    for cluster in cluster_set.clusters:
        for peer in cluster_set.clusters:
            if peer.name == cluster.name:
                continue
            for node in cluster.nodes:
                for peer_node in peer.nodes:
                    changes.append(
                        RouteChange(
                            cluster=cluster.name,
                            node=node.short,
                            destination=peer_node.pod_cidr,
                            via=peer_node.ip,
                            reason=f"pods of {peer.name}/{peer_node.short} live behind that node",
                        )
                    )
    return changes


def service_gateway(cluster_set: ClusterSet, cluster: str) -> str:
    """The node that carries a cluster's Service traffic from its peers: its control-plane.
    Routing a peer's serviceSubnet through one gateway (not to every node) keeps replies
    symmetric: kube-proxy masquerades foreign sources to the gateway's IP (docs/ARCHITECTURE.md)."""
    live = cluster_set.cluster(cluster)
    for node in live.nodes:
        if node.role == "control-plane":
            return node.ip
    return live.nodes[0].ip


def plan_service_routes(cluster_set: ClusterSet) -> list[RouteChange]:
    """For every node, a route to each peer's serviceSubnet via the peer's gateway node."""
    changes: list[RouteChange] = []
    for cluster in cluster_set.clusters:
        for peer in cluster_set.clusters:
            if peer.name == cluster.name:
                continue
            gateway = service_gateway(cluster_set, peer.name)
            changes += [
                RouteChange(
                    cluster.name,
                    node.short,
                    peer.service_subnet,
                    gateway,
                    f"Services of {peer.name} through its gateway node",
                )
                for node in cluster.nodes
            ]
    return changes
