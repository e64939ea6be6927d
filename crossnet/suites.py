"""THE suite registry: every suite of the matrix, declared once with its builder, what it needs of
the setup, and why it is skipped elsewhere. The plugin (items, marks, skip reasons), the report
(order) and the profile vocabulary (`model.SuiteName`) all read it.

Adding a suite: add its name to `model.SuiteName`, write `crossnet/builders/<name>.py` with
`build(topology, profile) -> list[Cell]`, register it below, add `suites/test_<name>.py` (three
lines: a docstring, `SUITE = "<name>"`, a test calling `judge_cell(cell)`), give the profiles
rules for it, and test it. The plumbing suite (node facts) is not a cell suite: see
crossnet/facts.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from crossnet.builders import dns, external, globalnet, mcs, pod_to_pod, service, snat
from crossnet.model import SUITE_NAMES, Cell, Topology
from crossnet.profile import Profile

__all__ = ["REGISTRY", "SUITES", "Suite", "build_cells", "suite"]

Requirement = Literal["routed", "globalnet", "bgp", "mcs", "any"]


@dataclass(frozen=True)
class Suite:
    """One suite: its name (a `model.SuiteName`), what it asks, how its cells are built, and
    the setup it needs ("routed": clusters joined by routes, "globalnet": by Submariner
    Globalnet, "any")."""

    name: str
    asks: str
    build: Callable[[Topology, Profile], list[Cell]]
    requires: Requirement = "any"

    def applies(self, profile: Profile) -> bool:
        if self.requires == "bgp":
            return profile.plumbing.bgp is not None
        if self.requires == "mcs":
            return profile.plumbing.mcs is not None
        globalnet = profile.plumbing.global_cidr is not None
        return self.requires == "any" or (self.requires == "globalnet") == globalnet

    def skip_reason(self, profile: Profile) -> str:
        """Why this suite has no cell under `profile`, and what would give it some."""
        if self.requires == "globalnet":
            return (
                f"the {self.name} suite needs clusters joined by Globalnet: run `pytest suites/ --topology globalnet`"
            )
        if self.requires == "mcs":
            return f"the {self.name} suite needs Multi-Cluster Services: run `pytest suites/ --topology mcs`"
        if self.requires == "bgp":
            return f"the {self.name} suite needs the bgp topology's office network: run `pytest suites/ --topology bgp`"
        if self.requires == "routed":
            return (
                f"the {self.name} suite asks about routed clusters; under {profile.name} the globalnet suite asks "
                "the questions (run `--topology routed` for this one)"
            )
        return f"the {self.name} suite has no cell under profile {profile.name} (its rules expect nothing to judge)"

    def cells(self, topology: Topology, profile: Profile) -> list[Cell]:
        return self.build(topology, profile) if self.applies(profile) else []


REGISTRY: tuple[Suite, ...] = (
    Suite("pod-to-pod", "pod and host to every pod over tcp, udp, icmp and large payloads", pod_to_pod.build, "routed"),
    Suite("service", "ClusterIP, NodePort, headless and ExternalName Services", service.build, "routed"),
    Suite(
        "dns",
        "the echo Service's names in every form, own and peer domains, NXDOMAIN, ExternalName",
        dns.build,
        "routed",
    ),
    Suite("snat", "the source IP the target saw on every path expected to reach", snat.build, "any"),
    Suite("globalnet", "clusters with identical CIDRs through Submariner Globalnet", globalnet.build, "globalnet"),
    Suite("external", "a host outside the clusters to pods, Services and names, and pods to it", external.build, "bgp"),
    Suite("mcs", "ServiceExport/ServiceImport through clusterset.local, derived Services, SRV", mcs.build, "mcs"),
)
SUITES: tuple[str, ...] = tuple(s.name for s in REGISTRY)

if SUITES != SUITE_NAMES:  # pragma: no cover - a developer's mistake, caught at import
    raise RuntimeError(f"the suite registry {SUITES} and model.SuiteName {SUITE_NAMES} differ: keep them in step")


def suite(name: str) -> Suite:
    for declared in REGISTRY:
        if declared.name == name:
            return declared
    raise KeyError(f"no suite {name!r}; known: {', '.join(SUITES)}")


def build_cells(topology: Topology, profile: Profile, suites: Iterable[str] = SUITES) -> list[Cell]:
    """Every cell of the given suites, sorted by id: the same on every xdist worker."""
    cells = [cell for name in suites for cell in suite(name).cells(topology, profile)]
    return sorted(cells, key=lambda c: (c.suite, c.id))
