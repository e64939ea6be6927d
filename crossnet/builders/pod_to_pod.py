"""pod-to-pod: from the pod and the host of every node to the pod on every node of every cluster,
over tcp, udp, icmp and tcp/udp with a payload near the MTU."""

from __future__ import annotations

from crossnet.cells import LARGE_PAYLOAD, POD_PROTOCOLS, SERVICE_PROTOCOLS, decided, scope_of, vantages
from crossnet.model import Cell, Probe, Target, Topology
from crossnet.profile import Profile

__all__ = ["build"]


def build(topology: Topology, profile: Profile) -> list[Cell]:
    probes = [Probe(p) for p in POD_PROTOCOLS] + [Probe(p, payload=LARGE_PAYLOAD) for p in SERVICE_PROTOCOLS]
    cells = []
    for vantage in vantages(topology):
        for dst in topology.clusters:
            for dst_node in dst.nodes:
                target = Target(dst.name, "pod-ip", node=dst_node.short)
                scope = scope_of(vantage, dst.name, dst_node.short)
                cells += [decided(profile, "pod-to-pod", vantage, target, probe, scope) for probe in probes]
    return cells
