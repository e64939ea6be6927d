"""The data model: what a topology is, what a cell asks, what a probe saw, what the judge said.

Everything here is a frozen dataclass or a plain enum-like string so that cells can cross
process boundaries (xdist workers, the state file, matrix.json) as JSON.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

__all__ = [
    "AGENT_PORT",
    "CROSSNET_NAMESPACE",
    "FAILING_VERDICTS",
    "MATCH_VOCABULARY",
    "NS_PLACEHOLDER",
    "SUITE_NAMES",
    "VERDICTS",
    "Cell",
    "Cluster",
    "ClusterSet",
    "Expectation",
    "LiveCluster",
    "LiveNode",
    "LivePod",
    "LiveService",
    "NodeSpec",
    "Observation",
    "Probe",
    "Target",
    "Topology",
    "Vantage",
    "Verdict",
]

CROSSNET_NAMESPACE = "crossnet"
"""The Kubernetes namespace the agents and their Services live in (the lab mirrors it)."""

NS_PLACEHOLDER = "{ns}"
"""Stands for the agents' namespace in the DNS names of cells (filled in per run)."""

AGENT_PORT = 8080
"""TCP and UDP port every agent serves its echo on."""

# The vocabularies. Each is declared once, here, in the order reports list it; profiles (match
# keys), the suite registry, the report and the pytest marks derive theirs with typing.get_args.
SuiteName = Literal["pod-to-pod", "service", "dns", "snat", "globalnet", "external", "mcs"]
Protocol = Literal["tcp", "udp", "icmp", "dns-udp", "dns-tcp"]
VantageKind = Literal["pod", "host", "external"]  # external: a host outside every cluster
TargetKind = Literal["pod-ip", "cluster-ip", "node-port", "headless", "dns-name", "global-ip", "external-host"]
TargetForm = Literal[
    "short",
    "svc.ns",
    "full",
    "fqdn",
    "nxdomain",
    "external-name",
    "headless",
    "clusterset",
    "cluster.clusterset",
    "pod.cluster.clusterset",
    "derived",  # MCS: Karmada's derived-<svc> Service in the importing cluster's own domain
    "srv",  # MCS: _<port>._<proto>.<svc>.<ns>.svc.clusterset.local
    "clusterset-search",  # MCS: <svc>.<ns>.svc from a pod whose search list has clusterset.local
    "clusterset-nosearch",  # the same name from a pod with kubelet's search list only
]
PayloadSize = Literal["small", "large"]
Reachable = Literal["yes", "no", "optional"]
# target-node-ip: an address of a node of the target's cluster (kube-proxy masquerading an outside client)
SourceExpectation = Literal["preserved", "node-ip", "global-egress", "target-node-ip", "any"]
Scope = Literal["same-node", "same-cluster", "peer-cluster", "outside"]
Verdict = Literal["pass", "isolated", "regression", "leak", "source-mismatch", "flaky", "optional"]

SUITE_NAMES: tuple[str, ...] = get_args(SuiteName)
VERDICTS: tuple[str, ...] = get_args(Verdict)
FAILING_VERDICTS: frozenset[str] = frozenset({"regression", "leak", "source-mismatch"})
MATCH_VOCABULARY: dict[str, tuple[str, ...] | None] = {
    "suite": SUITE_NAMES,
    "vantage": get_args(VantageKind),
    "target": get_args(TargetKind),
    "protocol": get_args(Protocol),
    "scope": get_args(Scope),
    "form": get_args(TargetForm),
    "size": get_args(PayloadSize),
    "src_cluster": None,  # any cluster name
    "dst_cluster": None,
}
"""What a profile rule may match on (`match:` keys) and the values each key can take."""


# --------------------------------------------------------------------------- declared topology


@dataclass(frozen=True)
class NodeSpec:
    """A node as a kind config declares it. `short` names it within its cluster: control-plane,
    worker, worker2, ... (how a provider names the node itself is the provider's business)."""

    cluster: str
    short: str
    role: Literal["control-plane", "worker"]
    labels: tuple[tuple[str, str], ...] = ()  # the node's `labels:` in the kind config

    @property
    def ref(self) -> str:
        return f"{self.cluster}/{self.short}"


@dataclass(frozen=True)
class Cluster:
    """One cluster as declared by its kind config."""

    name: str
    pod_subnet: str
    service_subnet: str
    dns_domain: str
    nodes: tuple[NodeSpec, ...]
    source_file: str = ""

    @property
    def pod_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.pod_subnet)

    @property
    def service_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.service_subnet)


@dataclass(frozen=True)
class Topology:
    """Every cluster of a run, in config order."""

    clusters: tuple[Cluster, ...]

    def cluster(self, name: str) -> Cluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)

    def peers_of(self, name: str) -> tuple[Cluster, ...]:
        return tuple(c for c in self.clusters if c.name != name)


# --------------------------------------------------------------------------- live cluster set


@dataclass(frozen=True)
class LivePod:
    name: str
    node: str  # short node name
    ip: str
    agent: str  # agent id, e.g. "cluster-1/worker/pod"


@dataclass(frozen=True)
class LiveService:
    name: str
    namespace: str
    type: Literal["ClusterIP", "NodePort", "ExternalName", "Headless"]
    cluster_ip: str | None = None
    external_name: str | None = None
    node_port: int | None = None
    ports: tuple[tuple[str, int], ...] = ()  # (protocol, port)
    endpoints: tuple[str, ...] = ()  # pod IPs
    hostnames: tuple[str, ...] = ()  # per endpoint (headless per-pod DNS names), "" when none

    def fqdn(self, domain: str) -> str:
        return f"{self.name}.{self.namespace}.svc.{domain}"


@dataclass(frozen=True)
class LiveNode:
    short: str
    role: str
    ip: str
    pod_cidr: str
    handle: str = ""  # provider-specific: netns name or container id


@dataclass(frozen=True)
class LiveCluster:
    name: str
    domain: str
    pod_subnet: str
    service_subnet: str
    nodes: tuple[LiveNode, ...]
    pods: tuple[LivePod, ...]
    services: tuple[LiveService, ...]
    dns_service_ip: str
    dns_server_ips: tuple[str, ...]  # the DNS server *pod* IPs (what peers forward to)
    # Submariner Globalnet (empty otherwise): the cluster's global CIDR, its egress IPs, its
    # ingress IPs ("svc/<name>" or "pod/<hostname>" -> IP) and the Lighthouse DNS server IPs.
    global_cidr: str = ""
    global_egress: tuple[str, ...] = ()
    global_ingress: tuple[tuple[str, str], ...] = ()
    clusterset_dns_ips: tuple[str, ...] = ()
    # Multi-Cluster Services: the ServiceImports of this cluster (service name -> its ClusterSetIP).
    clusterset_ips: tuple[tuple[str, str], ...] = ()

    @functools.cached_property
    def sender_addresses(self) -> tuple[str, ...]:
        """Every address a node of this cluster sends from: its IP, and the address its pod veths
        carry (kindnet's and the lab's ptp gateway, the first of its podCIDR) -- a masquerade
        towards a pod takes the outgoing interface's address. (Computed once: every cell asks.)"""
        addresses: list[str] = []
        for node in self.nodes:
            addresses.append(node.ip)
            with contextlib.suppress(ValueError):  # a discovered podCIDR may be IPv6 or empty: the node IP only
                addresses.append(str(ipaddress.IPv4Network(node.pod_cidr, strict=False)[1]))
        return tuple(addresses)

    def global_ip(self, key: str) -> str:
        for name, ip in self.global_ingress:
            if name == key:
                return ip
        raise KeyError(f"{self.name}: no global ingress IP for {key}")

    def node(self, short: str) -> LiveNode:
        for node in self.nodes:
            if node.short == short:
                return node
        raise KeyError(f"{self.name}/{short}")

    def service(self, name: str, namespace: str = CROSSNET_NAMESPACE) -> LiveService:
        for svc in self.services:
            if svc.name == name and svc.namespace == namespace:
                return svc
        raise KeyError(f"{self.name}: service {namespace}/{name}")

    def pod_on(self, short: str) -> LivePod:
        for pod in self.pods:
            if pod.node == short:
                return pod
        raise KeyError(f"{self.name}/{short}: no agent pod")


@dataclass(frozen=True)
class ClusterSet:
    """What a provider brought up: addresses are only known here, never in cell ids."""

    provider: str
    clusters: tuple[LiveCluster, ...]
    namespace: str = CROSSNET_NAMESPACE  # where the agents and their Services live (kind: crossnet-<run-id>)
    # Networks outside every cluster that the harness probes from and to (the bgp topology's office:
    # one "node" per host, its agent, and the enterprise DNS as dns_service_ip); never plumbed.
    outside: tuple[LiveCluster, ...] = ()

    def name(self, template: str) -> str:
        """A DNS name of a cell with this run's namespace filled in (cells are built before any
        run exists, so their names say NS_PLACEHOLDER)."""
        return template.replace(NS_PLACEHOLDER, self.namespace)

    def cluster(self, name: str) -> LiveCluster:
        for cluster in (*self.clusters, *self.outside):
            if cluster.name == name:
                return cluster
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterSet:
        return cls(
            provider=data["provider"],
            clusters=_live_clusters(data["clusters"]),
            namespace=str(data.get("namespace", CROSSNET_NAMESPACE)),
            outside=_live_clusters(data.get("outside") or ()),
        )


def _live_clusters(raw: Any) -> tuple[LiveCluster, ...]:
    clusters = []
    for c in raw:
        clusters.append(
            LiveCluster(
                name=c["name"],
                domain=c["domain"],
                pod_subnet=c["pod_subnet"],
                service_subnet=c["service_subnet"],
                nodes=tuple(LiveNode(**{k: v for k, v in n.items() if k != "host_agent"}) for n in c["nodes"]),
                pods=tuple(LivePod(**p) for p in c["pods"]),
                services=tuple(
                    LiveService(
                        **{
                            **s,
                            "ports": tuple(tuple(p) for p in s["ports"]),
                            "endpoints": tuple(s["endpoints"]),
                            "hostnames": tuple(s.get("hostnames") or ()),
                        }
                    )
                    for s in c["services"]
                ),
                dns_service_ip=c["dns_service_ip"],
                dns_server_ips=tuple(c["dns_server_ips"]),
                global_cidr=c.get("global_cidr", ""),
                global_egress=tuple(c.get("global_egress") or ()),
                global_ingress=tuple(tuple(p) for p in c.get("global_ingress") or ()),
                clusterset_dns_ips=tuple(c.get("clusterset_dns_ips") or ()),
                clusterset_ips=tuple(tuple(p) for p in c.get("clusterset_ips") or ()),
            )
        )
    return tuple(clusters)


# --------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Vantage:
    """Where a probe starts."""

    cluster: str
    node: str  # short node name
    kind: VantageKind

    @property
    def label(self) -> str:
        return f"{self.cluster}/{self.node}" + ("" if self.kind == "pod" else "(host)")


@dataclass(frozen=True)
class Target:
    """What a probe aims at. For pod targets `node` names the pod's node; for DNS targets
    `name` is the query as a client types it and `form` says which form it is."""

    cluster: str
    kind: TargetKind
    node: str = ""
    service: str = ""
    name: str = ""
    form: str = ""
    expect_nxdomain: bool = False
    expect_ra: bool = False  # DNS: the answer must carry the RA bit (the profile configures `header`)

    @property
    def label(self) -> str:
        if self.kind in ("pod-ip", "node-port", "headless", "external-host"):
            return f"{self.cluster}/{self.node}"
        if self.kind == "dns-name":
            return self.name
        return f"{self.cluster}/{self.service}"


@dataclass(frozen=True)
class Probe:
    protocol: Protocol
    port: int = AGENT_PORT
    payload: int = 0

    @property
    def label(self) -> str:
        """The protocol as ids and reports show it: `udp`, or `udp-1400b` with a payload."""
        return f"{self.protocol}-{self.payload}b" if self.payload else self.protocol


@dataclass(frozen=True)
class Expectation:
    reachable: Reachable
    source: SourceExpectation
    rule: str  # e.g. "flat-routed#2"
    because: str


@dataclass(frozen=True)
class Cell:
    """One question of the matrix: suite x vantage x target x probe, with its expectation."""

    suite: str
    vantage: Vantage
    target: Target
    probe: Probe
    expectation: Expectation
    scope: Scope

    @property
    def id(self) -> str:
        """Stable, readable, never holds an IP or a run id (so `--lf` and history work)."""
        src = f"{self.vantage.kind}:{self.vantage.cluster}/{self.vantage.node}"
        if self.target.kind in ("pod-ip", "external-host"):
            dst = f"{self.target.cluster}/{self.target.node}"
        elif self.target.kind == "dns-name":  # a per-pod name also names its node
            where = f"{self.target.cluster}/{self.target.node}" if self.target.node else self.target.cluster
            dst = f"{where}:{self.target.form}:{self.target.service}"
        elif self.target.kind in ("node-port", "headless"):  # a clusterset pod name says its form
            form = f"{self.target.form}:" if self.target.form else ""
            dst = f"{self.target.cluster}/{self.target.node}:{form}{self.target.service}"
        else:
            dst = f"{self.target.cluster}/{self.target.service}"
        question = ":source" if self.suite == "snat" else ""  # the SNAT suite asks about the same paths
        return f"{src}->{dst}:{self.target.kind}:{self.probe.label}{question}"


@dataclass(frozen=True)
class Observation:
    """What a probe saw. Probes report; they never judge."""

    reached: bool
    # timeout | refused | rejected | no-route | mtu | nxdomain | servfail | wrong-answer | endpoint-missing;
    # the harness's own: agent-error | starved | no-buffer (runner.INFRASTRUCTURE_ERRORS)
    error: str | None = None
    source_ip: str | None = None  # the source address the target saw
    latency_ms: float | None = None
    answers: tuple[str, ...] = ()  # DNS: A records (CNAME chain as "cname:<name>")
    rcode: str | None = None  # DNS rcode text
    responder: str | None = None  # agent id that answered
    detail: str = ""
    loop_lag_ms: float | None = None  # how late the agent's event loop ran meanwhile (a starved agent)
    path_mtu: int | None = None  # the path MTU the agent measured to the target (DF ladder), when it did
    ttl: int | None = None  # DNS: the lowest TTL of the answer (a cached answer shows a lower one)
    ra: bool | None = None  # DNS: the response's RA (recursion available) flag; None: no response, or an old result

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Observation:
        return cls(**{**data, "answers": tuple(data.get("answers") or ())})


@dataclass(frozen=True)
class Judgement:
    """A judged cell: the verdict plus everything a report shows."""

    verdict: Verdict
    message: str
    observation: Observation
    retried: bool = False
    expected_source_ip: str | None = None
