"""Node-level plumbing besides routes, as commands with their undo: the masquerade exception
that keeps pod IPs across clusters (what operators add to kindnet's KIND-MASQ-AGENT chain),
and the rp_filter a profile asks for. Pure planning; providers run the argv on the node."""

from __future__ import annotations

from dataclasses import dataclass

from crossnet.model import ClusterSet

__all__ = ["CONNTRACK_FLUSH", "NodeCommand", "plan_masquerade_exceptions", "plan_rp_filter"]

MASQ_CHAIN = "KIND-MASQ-AGENT"
CONNTRACK_FLUSH = ["sh", "-c", "conntrack -F >/dev/null 2>&1 || true"]


@dataclass(frozen=True)
class NodeCommand:
    cluster: str
    node: str
    apply_argv: tuple[str, ...]
    undo_argv: tuple[str, ...]
    label: str


def plan_masquerade_exceptions(cluster_set: ClusterSet) -> list[NodeCommand]:
    """On every node, RETURN before kindnet's MASQUERADE for each peer's pod CIDR, so a peer
    pod sees the sender's pod IP. (Deleting the MASQUERADE rule instead would also stop
    conntrack from applying it to existing flows with iptables-nft: docs/ARCHITECTURE.md, "Kernel facts".)"""
    commands: list[NodeCommand] = []
    for cluster in cluster_set.clusters:
        for peer in cluster_set.clusters:
            if peer.name == cluster.name:
                continue
            rule = (
                "-d",
                peer.pod_subnet,
                "-m",
                "comment",
                "--comment",
                f"crossnet: keep pod IPs to {peer.name}",
                "-j",
                "RETURN",
            )
            for node in cluster.nodes:
                commands.append(
                    NodeCommand(
                        cluster.name,
                        node.short,
                        ("iptables", "-w", "5", "-t", "nat", "-I", MASQ_CHAIN, "1", *rule),
                        ("iptables", "-w", "5", "-t", "nat", "-D", MASQ_CHAIN, *rule),
                        f"{cluster.name}/{node.short}: no masquerade to {peer.name} pods {peer.pod_subnet}",
                    )
                )
    return commands


def plan_rp_filter(cluster_set: ClusterSet, value: int) -> list[NodeCommand]:
    """Set rp_filter (all and default: the effective value is the max of `all` and the
    interface's) on every node; the undo restores the lab/kind default of 0."""
    keys = ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter")
    return [
        NodeCommand(
            c.name,
            n.short,
            ("sysctl", "-qw", *(f"{k}={value}" for k in keys)),
            ("sysctl", "-qw", *(f"{k}=0" for k in keys)),
            f"{c.name}/{n.short}: rp_filter={value}",
        )
        for c in cluster_set.clusters
        for n in c.nodes
    ]
