"""What every suite builder shares: the facts a profile rule matches on, a cell's scope, the
vantages of a topology, and deciding a cell's expectation from the profile. No I/O."""

from __future__ import annotations

from collections.abc import Sequence

from crossnet.model import Cell, Probe, Protocol, Scope, Target, Topology, Vantage, VantageKind
from crossnet.profile import Profile

__all__ = [
    "DNS_PROTOCOLS",
    "LARGE_PAYLOAD",
    "POD_PROTOCOLS",
    "SERVICE_PROTOCOLS",
    "VANTAGE_KINDS",
    "cell_facts",
    "decided",
    "scope_of",
    "vantages",
]

POD_PROTOCOLS: tuple[Protocol, ...] = ("tcp", "udp", "icmp")
LARGE_PAYLOAD = 1400  # bytes of echo payload: near the 1500-byte path MTU, so a black hole shows
DNS_PROTOCOLS: tuple[Protocol, ...] = ("dns-udp", "dns-tcp")
SERVICE_PROTOCOLS: tuple[Protocol, ...] = ("tcp", "udp")
VANTAGE_KINDS: tuple[VantageKind, ...] = ("pod", "host")


def cell_facts(cell: Cell) -> dict[str, str]:
    """What a profile rule can match on."""
    facts = {
        "suite": cell.suite,
        "vantage": cell.vantage.kind,
        "target": cell.target.kind,
        "protocol": cell.probe.protocol,
        "scope": cell.scope,
        "src_cluster": cell.vantage.cluster,
        "dst_cluster": cell.target.cluster,
        "size": "large" if cell.probe.payload else "small",
    }
    if cell.target.form:
        facts["form"] = cell.target.form
    return facts


def scope_of(vantage: Vantage, cluster: str, node: str = "") -> Scope:
    if vantage.cluster != cluster:
        return "peer-cluster"
    return "same-node" if vantage.node == node else "same-cluster"


def decided(profile: Profile, suite: str, vantage: Vantage, target: Target, probe: Probe, scope: Scope) -> Cell:
    draft = Cell(suite, vantage, target, probe, profile.defaults.expectation(), scope)
    return Cell(suite, vantage, target, probe, profile.decide(cell_facts(draft)), scope)


def vantages(topology: Topology, kinds: Sequence[VantageKind] = VANTAGE_KINDS) -> list[Vantage]:
    return [Vantage(c.name, n.short, kind) for c in topology.clusters for n in c.nodes for kind in kinds]
