"""snat: the source IP the target saw, for every path the other suites expect to reach."""

from __future__ import annotations

from crossnet.builders import external, globalnet, pod_to_pod, service
from crossnet.cells import SERVICE_PROTOCOLS, decided
from crossnet.model import Cell, Topology
from crossnet.profile import Profile

__all__ = ["build"]

SNAT_TARGETS = frozenset({"pod-ip", "headless", "cluster-ip", "node-port", "global-ip", "dns-name", "external-host"})


def build(topology: Topology, profile: Profile) -> list[Cell]:
    """The source IP of every path the other suites expect to reach over tcp/udp, wherever the
    profile says what the target should see (source: any is not a question worth a cell)."""
    cells = []
    origins = (
        globalnet.build(topology, profile)
        if profile.plumbing.global_cidr is not None
        else pod_to_pod.build(topology, profile) + service.build(topology, profile)
    )
    if profile.plumbing.bgp is not None:  # and the paths to and from the office network
        origins += external.build(topology, profile)
    for origin in origins:
        if (
            origin.expectation.reachable != "yes"
            or origin.probe.protocol not in SERVICE_PROTOCOLS
            or origin.probe.payload
            or origin.target.kind not in SNAT_TARGETS
        ):
            continue
        cell = decided(profile, "snat", origin.vantage, origin.target, origin.probe, origin.scope)
        if cell.expectation.source != "any":
            cells.append(cell)
    return cells
