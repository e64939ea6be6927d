"""From discovered facts to the topology cells are built from: which nodes get agents (`--nodes N`,
a node selector), what each is called in cells, and the topology as JSON for the state file (the
controller discovers once; xdist workers and `--attach` read it back and collect identical cells).

The sample is deterministic: Ready, schedulable nodes with an InternalIP (and the selector's
labels), the node labelled `submariner.io/gateway=true` first, then the others by name; the first
N of them. The matrix grows with the square of the node count, hence N.

A node's name in cells is its Kubernetes name when that is a DNS-1123 label short enough for the
agent's hostname (`agent-<node>`, 63 characters at most), else its first label cut short plus a
hash of the full name: stable from run to run, unique within the cluster.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crossnet.model import Cluster, NodeSpec, Topology
from crossnet.providers.base import ProviderError
from crossnet.providers.existing.discovery import ClusterFacts
from crossnet.providers.existing.kube import NodeInfo

__all__ = [
    "MAX_SHORT",
    "SampledNode",
    "sample_nodes",
    "short_names",
    "topology_from_json",
    "topology_of",
    "topology_to_json",
]

MAX_SHORT = 57  # "agent-" + the name is a pod hostname: a DNS-1123 label of at most 63 characters
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class SampledNode:
    short: str  # its name in cells, agent ids and pod names
    node: NodeInfo


def short_names(names: Sequence[str]) -> dict[str, str]:
    """Kubernetes node name -> a short DNS-1123 label, unique among `names`, stable."""
    result: dict[str, str] = {}
    for name in sorted(names):
        short = name
        if len(name) > MAX_SHORT or not _LABEL.fullmatch(name):
            first = re.sub(r"[^a-z0-9-]", "-", name.split(".")[0].lower()).strip("-")[:48].strip("-") or "node"
            short = f"{first}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"
        while short in result.values():
            short = f"{short[:50]}-{hashlib.sha256((short + name).encode()).hexdigest()[:6]}"
        result[name] = short
    return result


def sample_nodes(
    facts: ClusterFacts, count: int | None, selector: Sequence[tuple[str, str]] = ()
) -> tuple[list[SampledNode], list[str]]:
    """The nodes that get agents, in order, and why others did not (one note per reason)."""
    usable: list[NodeInfo] = []
    skipped: dict[str, list[str]] = {}
    for node in facts.nodes:
        reason = (
            "no IPv4 InternalIP"
            if not node.internal_ip
            else "not Ready"
            if not node.ready
            else "cordoned"
            if node.unschedulable
            else "not selected by --node-selector"
            if any(node.label(k) != v for k, v in selector)
            else ""
        )
        if reason:
            skipped.setdefault(reason, []).append(node.name)
        else:
            usable.append(node)
    if not usable:
        raise ProviderError(
            f"{facts.name}: no node can run an agent ("
            + "; ".join(f"{why}: {', '.join(names[:5])}" for why, names in skipped.items())
            + ")"
        )
    ordered = sorted(usable, key=lambda n: (not n.gateway, n.name))
    chosen = ordered[:count] if count else ordered
    notes = [f"{len(names)} node(s) {why}: {', '.join(names[:5])}" for why, names in skipped.items()]
    if len(chosen) < len(ordered):
        notes.append(f"--nodes {count}: {len(chosen)} of {len(ordered)} usable nodes (gateway first, then by name)")
    shorts = short_names([n.name for n in facts.nodes])
    return [SampledNode(shorts[n.name], n) for n in chosen], notes


def topology_of(facts: Sequence[ClusterFacts], sampled: dict[str, list[SampledNode]], source: str = "") -> Topology:
    """The topology cells are built from: per cluster its sampled nodes (role control-plane when
    labelled so), its discovered pod CIDR, service CIDR and domain."""
    clusters = []
    for fact in facts:
        if not fact.domain:
            raise ProviderError(
                f"{fact.name}: its cluster domain could not be discovered ({fact.domain_source}); give it as a hint "
                "(`hints: {domain: cluster.local}` in a cluster-set file)"
            )
        nodes = tuple(
            NodeSpec(fact.name, s.short, "control-plane" if s.node.control_plane else "worker")
            for s in sampled[fact.name]
        )
        clusters.append(
            Cluster(
                name=fact.name,
                pod_subnet=(fact.pod_cidrs or ("",))[0],
                service_subnet=(fact.service_cidrs or ("",))[0],
                dns_domain=fact.domain,
                nodes=nodes,
                source_file=source or f"context:{fact.context}",
            )
        )
    return Topology(tuple(clusters))


def topology_to_json(topology: Topology) -> dict[str, Any]:
    return {
        "clusters": [
            {
                "name": c.name,
                "pod_subnet": c.pod_subnet,
                "service_subnet": c.service_subnet,
                "dns_domain": c.dns_domain,
                "source_file": c.source_file,
                "nodes": [{"short": n.short, "role": n.role} for n in c.nodes],
            }
            for c in topology.clusters
        ]
    }


def topology_from_json(data: Any) -> Topology:
    """The recorded topology, validated: names DNS-1123 labels, roles known."""
    try:
        clusters = []
        for c in data["clusters"]:
            name = str(c["name"])
            nodes = []
            for n in c["nodes"]:
                if not _LABEL.fullmatch(str(n["short"])) or n["role"] not in ("control-plane", "worker"):
                    raise ValueError(f"node {str(n)[:80]}")
                nodes.append(NodeSpec(name, str(n["short"]), n["role"]))
            if not _LABEL.fullmatch(name) or not nodes:
                raise ValueError(f"cluster {name[:80]}")
            clusters.append(
                Cluster(
                    name,
                    str(c["pod_subnet"]),
                    str(c["service_subnet"]),
                    str(c["dns_domain"]),
                    tuple(nodes),
                    str(c.get("source_file", "")),
                )
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderError(f"the recorded topology is malformed ({exc.__class__.__name__}: {exc})") from None
    return Topology(tuple(clusters))
