"""What the pytest plugin and the CLI call for existing clusters, in the order a run needs it:

    discovery = discover(settings)          controller, before collection: read-only, once
    discovery.topology                      the topology cells are built from (instead of kind configs)
    discovery.header()                      lines for the pytest header
    make_provider("existing", ..., ProviderSettings(existing=discovery))   up() records it all
    recorded_topology(state_dir)            xdist workers and --attach: the same topology, from state.json
    provider.skip_reason(cluster, "host")   a reason to skip a host vantage's cells (None: probe them)

`discover` connects to every context, discovers every cluster in parallel, refuses one cluster
behind two contexts and a profile whose `requires:` does not match, and samples the nodes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from crossnet.globalnet import GlobalAllocation
from crossnet.model import ClusterSet, LiveCluster, LiveNode, LivePod, LiveService, Topology
from crossnet.providers.base import InputError, ProviderError, StateFile, state_problems
from crossnet.providers.existing.client import ClientKubeApi
from crossnet.providers.existing.clusterset import ClusterRef
from crossnet.providers.existing.discovery import ClusterFacts, discover_cluster, same_cluster_problems
from crossnet.providers.existing.draft import requires_problems
from crossnet.providers.existing.kube import ExistingKube, KubeApi
from crossnet.providers.existing.sample import (
    SampledNode,
    sample_nodes,
    topology_from_json,
    topology_of,
    topology_to_json,
)
from crossnet.providers.existing.settings import ExistingSettings
from crossnet.providers.kind.mcs import clusterset_ips
from crossnet.providers.kube_agents import live_agents

__all__ = [
    "ApiFactory",
    "Discovery",
    "ExistingStateFile",
    "connect",
    "discover",
    "discovery_record",
    "live_cluster_set",
    "recorded_topology",
]

ApiFactory = Callable[[str, str], KubeApi]  # (kubeconfig, context) -> the API of that context


def _stderr(message: str) -> None:
    print(f"crossnet: {message}", file=sys.stderr, flush=True)


class ExistingStateFile(StateFile):
    """The state file of an existing-clusters run. Until providers.base.state_problems lists the
    provider `existing`, its provider check is the only one waived here (every other check holds)."""

    def read(self) -> dict[str, Any]:
        try:
            return super().read()
        except InputError as exc:
            if "provider is not" not in str(exc):
                raise
        data: dict[str, Any] = json.loads(self.path.read_text())  # super() parsed it: it is JSON
        problems = state_problems({**data, "provider": "fake"}) if data.get("provider") == "existing" else ["provider"]
        if problems:
            raise InputError(f"{self.path} is not a valid crossnet state file: {'; '.join(problems[:5])}")
        return data


def connect(settings: ExistingSettings, ref: ClusterRef, api_factory: ApiFactory | None = None) -> ExistingKube:
    factory = api_factory or ClientKubeApi
    return ExistingKube(ref.name, factory(settings.kubeconfig_of(ref), ref.context))


@dataclass(frozen=True)
class Discovery:
    """Every cluster's facts, the sampled nodes and the topology built from them."""

    settings: ExistingSettings
    facts: tuple[ClusterFacts, ...]
    sampled: dict[str, list[SampledNode]]
    notes: dict[str, list[str]]
    topology: Topology

    def fact(self, cluster: str) -> ClusterFacts:
        return next(f for f in self.facts if f.name == cluster)

    def header(self) -> list[str]:
        lines = [f"crossnet discovered: {fact.summary()}" for fact in self.facts]
        for cluster, notes in self.notes.items():
            lines += [f"crossnet discovered: {cluster}: {note}" for note in notes]
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "facts": [f.to_json() for f in self.facts],
            "sampled": {c: [s.node.name for s in nodes] for c, nodes in self.sampled.items()},
            "notes": self.notes,
            "topology": topology_to_json(self.topology),
        }

    @classmethod
    def from_json(cls, settings: ExistingSettings, data: dict[str, Any]) -> Discovery:
        facts = tuple(ClusterFacts.from_json(f) for f in data["facts"])
        topology = topology_from_json(data["topology"])
        sampled: dict[str, list[SampledNode]] = {}
        for fact, cluster in zip(facts, topology.clusters, strict=True):
            by_name = {n.name: n for n in fact.nodes}
            names = data["sampled"][fact.name]
            sampled[fact.name] = [SampledNode(s.short, by_name[n]) for s, n in zip(cluster.nodes, names, strict=True)]
        notes = {str(k): [str(n) for n in v] for k, v in (data.get("notes") or {}).items()}
        return cls(settings, facts, sampled, notes, topology)

    def with_fact(self, fact: ClusterFacts) -> Discovery:
        """This discovery with one cluster's facts replaced (what a run learns once its agents run)."""
        facts = tuple(fact if f.name == fact.name else f for f in self.facts)
        return Discovery(self.settings, facts, self.sampled, self.notes, self.topology)


def discover(
    settings: ExistingSettings,
    api_factory: ApiFactory | None = None,
    progress: Callable[[str], None] = _stderr,
) -> Discovery:
    """Discover every cluster (read-only, in parallel) and build the topology; one clear error when
    two contexts reach one cluster or the profile's `requires:` does not match."""
    refs = settings.clusters

    def one(ref: ClusterRef) -> ClusterFacts:
        return discover_cluster(ref, connect(settings, ref, api_factory), settings.namespace or "")

    with ThreadPoolExecutor(max_workers=len(refs)) as pool:
        futures = [pool.submit(one, ref) for ref in refs]
    problems, facts = [], []
    for ref, future in zip(refs, futures, strict=True):
        try:
            facts.append(future.result())
        except InputError:
            raise
        except ProviderError as exc:
            problems.append(str(exc) if str(exc).startswith(ref.name) else f"{ref.name}: {exc}")
    if problems:
        raise ProviderError("discovery failed: " + "; ".join(problems))
    twins = same_cluster_problems(facts)
    if twins:
        raise InputError("; ".join(twins))
    mismatch = requires_problems(settings.requires, facts)
    if mismatch:
        raise InputError(
            "the profile was written for another setup (its `requires:`): "
            + "; ".join(mismatch)
            + "; choose the profile for these clusters (`crossnet discover` drafts one)"
        )
    sampled, notes = {}, {}
    for fact in facts:
        sampled[fact.name], cluster_notes = sample_nodes(fact, settings.nodes, settings.node_selector)
        notes[fact.name] = [*fact.notes, *cluster_notes]
        progress(f"existing: {fact.summary()}")
    source = settings.clusterset_file
    return Discovery(settings, tuple(facts), sampled, notes, topology_of(facts, sampled, source))


def recorded_topology(state_dir: Path) -> Topology:
    """The topology the controller discovered, from a run's state file (for xdist workers, --attach)."""
    data = ExistingStateFile(state_dir).read()
    try:
        recorded = data["existing"]["discovery"]["topology"]
    except (KeyError, TypeError) as exc:
        raise InputError(f"{state_dir}: no discovered topology recorded ({exc.__class__.__name__})") from None
    return topology_from_json(recorded)


def live_cluster_set(
    discovery: Discovery,
    kube_of: Callable[[str], ExistingKube] | None,
    namespace: str,
    allocations: Mapping[str, GlobalAllocation] | None = None,
    mcs_record: Mapping[str, Any] | None = None,
) -> ClusterSet:
    """The ClusterSet of a discovery; with `kube_of`, with the agents and Services in `namespace`.
    A node without spec.podCIDRs (Calico IPAM) reports its agent's IP as its pod CIDR; with the
    record of an MCS run (mcs.py), what clusterset.local answers in each cluster."""
    clusters = []
    exporter_ips: dict[str, str] = {}
    for spec in discovery.topology.clusters:
        fact = discovery.fact(spec.name)
        sampled = {s.short: s.node for s in discovery.sampled[spec.name]}
        pods: tuple[LivePod, ...] = ()
        services: tuple[LiveService, ...] = ()
        if kube_of is not None:
            pods, services = live_agents(kube_of(spec.name), spec.name, namespace, list(sampled))
        if spec.name == (mcs_record or {}).get("cluster"):
            exporter_ips = {s.name: s.cluster_ip for s in services if s.cluster_ip}
        agent_cidrs = {p.node: f"{p.ip}/32" for p in pods if p.ip}
        nodes = tuple(
            LiveNode(
                short=n.short,
                role=n.role,
                ip=sampled[n.short].internal_ip,
                pod_cidr=(sampled[n.short].pod_cidrs or (agent_cidrs.get(n.short, ""),))[0],
                handle=sampled[n.short].name,
            )
            for n in spec.nodes
        )
        allocation = (allocations or {}).get(spec.name)
        global_fields: dict[str, Any] = {}
        if allocation is not None:
            ingress = [(f"svc/{n}", ip) for n, ip in allocation.service_ips.items()]
            ingress += [(f"pod/{n}", ip) for n, ip in allocation.pod_ips.items()]
            global_fields = {
                "global_cidr": allocation.cidr,
                "global_egress": allocation.egress_ips,
                "global_ingress": tuple(ingress),
            }
        clusters.append(
            LiveCluster(
                name=spec.name,
                domain=spec.dns_domain,
                pod_subnet=(fact.pod_cidrs or (spec.pod_subnet,))[0],
                service_subnet=(fact.service_cidrs or (spec.service_subnet,))[0],
                nodes=nodes,
                pods=pods,
                services=services,
                dns_service_ip=fact.dns_service_ip,
                dns_server_ips=fact.dns_server_ips,
                **global_fields,
            )
        )
    if mcs_record:  # the exporter's ClusterIPs answer where the implementation allocates no clusterset IP
        clusters = [replace(c, clusterset_ips=clusterset_ips(mcs_record, c.name, exporter_ips)) for c in clusters]
    return ClusterSet(provider="existing", clusters=tuple(clusters), namespace=namespace)


def discovery_record(state_dir: Path) -> dict[str, Any]:
    """What matrix.json (and a results bundle) records of an existing-clusters run: every cluster's
    discovered facts with their sources, the notes, the sampled nodes, why host vantages or node
    evidence are off where they are, and the pre-flight rows. {} for a run of another provider."""
    data = ExistingStateFile(state_dir).read()
    existing = data.get("existing") if data.get("provider") == "existing" else None
    if not isinstance(existing, dict):
        return {}
    discovery = existing.get("discovery") or {}
    return {
        "clusters": discovery.get("facts") or [],
        "sampled": discovery.get("sampled") or {},
        "notes": discovery.get("notes") or {},
        "host_vantages_off": {k: v for k, v in (existing.get("host_vantages") or {}).items() if v},
        "node_evidence_off": {k: v for k, v in (existing.get("node_evidence") or {}).items() if v},
        "preflight": existing.get("preflight") or [],
    }
