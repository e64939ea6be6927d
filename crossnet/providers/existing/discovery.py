"""Read-only discovery of an existing cluster: what it is, how it is networked, what is on it.

Every fact says where it came from (`*_source`), so the pytest header, matrix.json, `crossnet
discover` and the draft profile's `because:` lines can say why crossnet believes it:

- identity: the `kube-system` namespace's UID (two contexts on one cluster share it), the version;
- nodes: name, InternalIP, `spec.podCIDRs` (empty under Calico IPAM: the agents' own IPs later);
- pod CIDRs: kubeadm-config `podSubnet` -> Calico IPPools -> the nodes' podCIDRs -> the hint;
- the service CIDR: ServiceCIDR objects (networking.k8s.io) -> kubeadm-config `serviceSubnet` ->
  a dry-run Service with an out-of-range clusterIP, whose error names the valid range (in the
  namespace given, else `default`, when crossnet may create Services there; a run repeats it in its
  own namespace when discovery could not) -> the hint, last;
- the cluster domain: kubeadm-config `dnsDomain` -> the zone of the Corefile's `kubernetes`
  plugin -> the hint (a run checks it against an agent's resolv.conf search list);
- the Corefile (read, never written) and the zones it forwards; kube-proxy's mode (its ConfigMap);
- the CNI (DaemonSet names); the multi-cluster layer (Submariner and MCS CRDs, Cilium ClusterMesh).

Only the identity, the version and the nodes are required; any other read that is refused or
absent becomes a note naming what is missing (`crossnet rbac` prints the rights).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from crossnet.config import dns_domain_problem
from crossnet.plumbing.corefile_syntax import CorefileError, parse_corefile
from crossnet.providers.base import ProviderError
from crossnet.providers.existing.clusterset import ClusterRef
from crossnet.providers.existing.kube import ApiError, ExistingKube, NodeInfo, checked_cidr, checked_ip

__all__ = [
    "CNI_DAEMONSETS",
    "ClusterFacts",
    "corefile_domain",
    "corefile_forwards",
    "discover_cluster",
    "dry_run_source",
    "range_from_error",
    "same_cluster_problems",
    "service_cidr_unsettled",
    "service_cidrs_by_dry_run",
]

# DaemonSet name (prefix) -> CNI; the first match wins, so more specific names come first.
CNI_DAEMONSETS = (
    ("kindnet", "kindnet"),
    ("calico-node", "calico"),
    ("canal", "canal"),
    ("cilium", "cilium"),
    ("antrea-agent", "antrea"),
    ("kube-flannel", "flannel"),
    ("weave-net", "weave"),
    ("aws-node", "aws-vpc-cni"),
    ("kube-router", "kube-router"),
    ("ovnkube-node", "ovn-kubernetes"),
    ("azure-cns", "azure-cni"),
)
MCS_CRDS = ("serviceexports.multicluster.x-k8s.io", "serviceimports.multicluster.x-k8s.io")
GLOBALNET_CRDS = ("clusterglobalegressips.submariner.io", "globalingressips.submariner.io")
CLUSTERMESH_SERVICE = "clustermesh-apiserver"
OUT_OF_RANGE_IP = "203.0.113.254"  # TEST-NET-3: never anybody's service CIDR
_VALID_RANGE = re.compile(r"valid IPs is ((?:[0-9a-fA-F.:]+/\d+[ ,]*)+)")
PROBE_NAMESPACE = "default"  # where discovery dry-runs its Service when no namespace is given (it always exists)
HINT_SOURCE = "the cluster set's hint"
_CONFIGMAPS = ("kubeadm-config", "kube-proxy", "coredns", "cilium-config")


@dataclass(frozen=True)
class ClusterFacts:
    """What discovery found on one cluster; every `*_source` says where a value came from."""

    name: str
    context: str
    uid: str
    version: str
    nodes: tuple[NodeInfo, ...]
    pod_cidrs: tuple[str, ...] = ()
    pod_cidrs_source: str = "not found"
    service_cidrs: tuple[str, ...] = ()
    service_source: str = "not found"
    domain: str = ""
    domain_source: str = "not found"
    corefile: str = ""
    forwards: tuple[tuple[str, tuple[str, ...]], ...] = ()  # zone -> forward targets, besides the root
    kube_proxy: str = "unknown"
    kube_proxy_source: str = "not found"
    cni: str = "unknown"
    cni_source: str = "not found"
    multicluster: tuple[str, ...] = ()  # submariner, submariner-globalnet, mcs, cilium-clustermesh
    multicluster_source: str = "not found"
    crds: tuple[str, ...] = ()  # the CRD names discovery saw (what preflight checks a profile's needs against)
    dns_service_ip: str = ""
    dns_server_ips: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterFacts:
        """Read back what `to_json` recorded (crossnet's own state file), with the types checked."""
        try:
            nodes = tuple(
                NodeInfo(**{**n, "pod_cidrs": tuple(n["pod_cidrs"]), "labels": tuple(map(tuple, n["labels"]))})
                for n in data["nodes"]
            )
            fields: dict[str, Any] = {k: v for k, v in data.items() if k != "nodes"}
            for key in ("pod_cidrs", "service_cidrs", "multicluster", "crds", "dns_server_ips", "notes"):
                fields[key] = tuple(str(v) for v in fields.get(key) or ())
            fields["forwards"] = tuple((str(z), tuple(map(str, t))) for z, t in fields.get("forwards") or ())
            return cls(nodes=nodes, **fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(f"the recorded discovery is malformed ({exc.__class__.__name__}: {exc})") from None

    def summary(self) -> str:
        """One line for the pytest header and `crossnet discover`."""
        return (
            f"{self.name} ({self.context}, {self.version}): {len(self.nodes)} nodes, pods "
            f"{','.join(self.pod_cidrs) or '?'} [{self.pod_cidrs_source}], services "
            f"{','.join(self.service_cidrs) or '?'} [{self.service_source}], domain {self.domain or '?'} "
            f"[{self.domain_source}], CNI {self.cni}, kube-proxy {self.kube_proxy}, multi-cluster "
            f"{','.join(self.multicluster) or 'none'}"
        )


def range_from_error(message: str) -> tuple[str, ...]:
    """The CIDRs of "... The range of valid IPs is 10.96.0.0/16" (IPv4 ones, canonical)."""
    found = _VALID_RANGE.search(message)
    if not found:
        return ()
    cidrs = (checked_cidr(p.strip()) for p in re.split(r"[ ,]+", found.group(1)) if p.strip())
    return tuple(c for c in cidrs if c)


def corefile_domain(corefile: str) -> str:
    """The cluster domain the root server block's `kubernetes` plugin serves, "" when none."""
    try:
        parsed = parse_corefile(corefile)
    except CorefileError:
        return ""
    for server in parsed.servers:
        for plugin in server.plugins("kubernetes"):
            for zone in plugin.args:
                zone = zone.rstrip(".").lower()
                if zone and not zone.endswith(".arpa") and dns_domain_problem(zone) is None:
                    return zone
    return ""


def corefile_forwards(corefile: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(zone, forward targets) of every server block but the root: how a cluster reaches others' names."""
    try:
        parsed = parse_corefile(corefile)
    except CorefileError:
        return ()
    result = []
    for server in parsed.servers:
        for zone in server.zones:
            if zone == "." or zone.endswith(".arpa."):
                continue
            targets = [t for plugin in server.plugins("forward") for t in plugin.args[1:]]
            result.append((zone.rstrip("."), tuple(targets[:16])))
    return tuple(result)


def _kubeadm(kube: ExistingKube, notes: list[str]) -> dict[str, Any]:
    """kubeadm's ClusterConfiguration `networking` section, {} when there is none."""
    try:
        data = kube.read_configmap("kube-system", "kubeadm-config")
    except ApiError as exc:
        if exc.status != 404:
            notes.append(f"kubeadm-config not readable ({exc.status} {exc.reason})")
        return {}
    try:
        config = yaml.safe_load(data.get("ClusterConfiguration", "")[:200_000]) or {}
    except yaml.YAMLError:
        notes.append("kubeadm-config's ClusterConfiguration is not YAML")
        return {}
    networking = config.get("networking") if isinstance(config, dict) else None
    return networking if isinstance(networking, dict) else {}


def _cidrs(value: Any) -> tuple[str, ...]:
    parts = value.split(",") if isinstance(value, str) else []
    return tuple(c for c in (checked_cidr(p.strip()) for p in parts) if c)


def _optional(what: str, notes: list[str], read: Callable[[], Any], default: Any) -> Any:
    """`read()`, or `default` with a note when the API refuses it or it does not exist."""
    try:
        return read()
    except ApiError as exc:
        if exc.status == 404:
            return default
        notes.append(f"{what}: {exc.status} {exc.reason} (grant it: `crossnet rbac`)")
        return default


def _service_cidrs(
    kube: ExistingKube, networking: dict[str, Any], notes: list[str], namespace: str
) -> tuple[tuple[str, ...], str]:
    """ServiceCIDR objects -> kubeadm-config `serviceSubnet` -> a dry-run Service refused for an
    out-of-range clusterIP (its error names the valid range); each tried only when the earlier
    ones give nothing. The caller falls back to the hint last."""
    for version in ("v1", "v1beta1"):
        items = _optional(
            "list ServiceCIDRs",
            notes,
            lambda version=version: kube.list_objects(f"/apis/networking.k8s.io/{version}/servicecidrs"),  # type: ignore[misc]
            None,
        )
        if items:
            cidrs = [checked_cidr(c) for item in items for c in ((item.get("spec") or {}).get("cidrs") or [])]
            found = tuple(dict.fromkeys(c for c in cidrs if c))
            if found:
                return found, f"ServiceCIDR objects (networking.k8s.io/{version})"
    found = _cidrs(networking.get("serviceSubnet"))
    if found:
        return found, "kubeadm-config serviceSubnet"
    where = namespace or PROBE_NAMESPACE
    try:
        allowed, _ = kube.may("create", "", "services", namespace=where)
    except ProviderError:  # an ApiError too
        allowed = False
    if not allowed:  # asked first: a refused request is not made (nor logged as denied)
        notes.append(
            f"service CIDR: no ServiceCIDR objects, no kubeadm serviceSubnet, and no right to dry-run a Service "
            f"in namespace {where} (a run tries in its own namespace)"
        )
        return (), "not found"
    found = service_cidrs_by_dry_run(kube, where)
    return (found, dry_run_source(where)) if found else ((), "not found")


def dry_run_source(namespace: str) -> str:
    """Where a service CIDR learnt from a dry-run Service came from (the pytest header, matrix.json)."""
    return f"the API server's refusal of an out-of-range clusterIP (dry run in namespace {namespace})"


def service_cidr_unsettled(fact: ClusterFacts) -> bool:
    """Whether a run should still dry-run a Service in its own namespace: discovery found no service
    CIDR, or only the hint (the dry run comes before the hint, and discovery may have had no
    namespace it could dry-run in)."""
    return not fact.service_cidrs or fact.service_source == HINT_SOURCE


def service_cidrs_by_dry_run(kube: ExistingKube, namespace: str) -> tuple[str, ...]:
    """The service CIDR(s) the API server names when refusing a dry-run Service whose clusterIP is
    out of range, in `namespace` (which must exist); nothing is stored. A refusal that names no
    range (RBAC, an admission webhook) gives ()."""
    probe = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "crossnet-cidr-probe", "namespace": namespace},
        "spec": {"clusterIP": OUT_OF_RANGE_IP, "ports": [{"port": 80, "protocol": "TCP"}]},
    }
    try:
        error = kube.dry_run_error(probe)
    except ProviderError:  # the API server could not be asked: nothing learnt
        return ()
    return range_from_error(error.api_message) if error is not None else ()


def _pod_cidrs(
    kube: ExistingKube, nodes: Sequence[NodeInfo], networking: dict[str, Any], notes: list[str]
) -> tuple[tuple[str, ...], str]:
    found = _cidrs(networking.get("podSubnet"))
    if found:
        return found, "kubeadm-config podSubnet"
    pools = _optional(
        "list Calico IPPools", notes, lambda: kube.custom_objects("crd.projectcalico.org", "v1", "ippools", None), []
    )
    cidrs = [
        checked_cidr((p.get("spec") or {}).get("cidr")) for p in pools if not (p.get("spec") or {}).get("disabled")
    ]
    if any(cidrs):
        return tuple(dict.fromkeys(c for c in cidrs if c)), "Calico IPPools"
    node_cidrs = [ipaddress.IPv4Network(c) for n in nodes for c in n.pod_cidrs]
    if node_cidrs:
        supernet = node_cidrs[0]
        while not all(c.subnet_of(supernet) for c in node_cidrs) and supernet.prefixlen > 0:
            supernet = supernet.supernet()
        return (str(supernet),), "the nodes' spec.podCIDRs (their smallest common supernet)"
    return (), "not found"


def _layers(
    crds: Sequence[str], cilium: dict[str, str], kube_system_services: Sequence[str]
) -> tuple[tuple[str, ...], str]:
    layers, why = [], []
    submariner = sorted(c for c in crds if c.endswith(".submariner.io"))
    if submariner:
        layers.append("submariner")
        why.append(f"{len(submariner)} submariner.io CRDs")
    if all(c in crds for c in GLOBALNET_CRDS):
        layers.append("submariner-globalnet")
        why.append("the Globalnet CRDs " + ", ".join(GLOBALNET_CRDS))
    if all(c in crds for c in MCS_CRDS):
        layers.append("mcs")
        why.append("the MCS CRDs " + ", ".join(MCS_CRDS))
    mesh_id = cilium.get("cluster-id", "0")
    if CLUSTERMESH_SERVICE in kube_system_services:
        layers.append("cilium-clustermesh")
        why.append(f"Service kube-system/{CLUSTERMESH_SERVICE}")
    elif mesh_id not in ("", "0"):
        layers.append("cilium-clustermesh")
        why.append(f"cilium-config cluster-id {mesh_id[:8]}")
    return tuple(layers), "; ".join(why) or "no Submariner, MCS or ClusterMesh objects"


def _kube_proxy(
    kube: ExistingKube, daemonsets: Sequence[str], cilium: dict[str, str], notes: list[str]
) -> tuple[str, str]:
    data = _optional(
        "read ConfigMap kube-system/kube-proxy", notes, lambda: kube.read_configmap("kube-system", "kube-proxy"), {}
    )
    if data.get("config.conf"):
        try:
            config = yaml.safe_load(data["config.conf"][:100_000]) or {}
        except yaml.YAMLError:
            config = {}
        mode = str((config.get("mode") if isinstance(config, dict) else "") or "")
        if mode in ("", "iptables", "ipvs", "nftables", "kernelspace"):
            return mode or "iptables", "ConfigMap kube-system/kube-proxy" + ("" if mode else " (mode unset: iptables)")
    if "kube-proxy" not in daemonsets:
        if cilium.get("kube-proxy-replacement") in ("true", "strict"):
            return "none", "no kube-proxy DaemonSet; cilium-config kube-proxy-replacement"
        return "none", "no kube-proxy DaemonSet"
    return "unknown", "kube-proxy runs but its ConfigMap was not readable"


def _cni(daemonsets: Sequence[str]) -> tuple[str, str]:
    for prefix, cni in CNI_DAEMONSETS:
        for name in daemonsets:
            if name.startswith(prefix):
                return cni, f"DaemonSet {name}"
    return "unknown", f"no known CNI among the DaemonSets ({', '.join(sorted(daemonsets)[:8]) or 'none'})"


def discover_cluster(ref: ClusterRef, kube: ExistingKube, namespace: str = "") -> ClusterFacts:
    """Everything above, read-only (a dry run stores nothing); raises ProviderError only when the
    cluster cannot be identified. `namespace`: where the service CIDR's dry-run Service goes (the
    --namespace given; else PROBE_NAMESPACE, when crossnet may create Services there)."""
    version = kube.version()
    kube_system = kube.namespace("kube-system")
    uid = str(((kube_system or {}).get("metadata") or {}).get("uid") or "")
    if not re.fullmatch(r"[0-9a-fA-F-]{8,64}", uid):
        raise ProviderError(f"{ref.name} ({ref.context}): the kube-system namespace has no UID; is this a cluster?")
    nodes = tuple(kube.node_infos())
    if not nodes:
        raise ProviderError(f"{ref.name} ({ref.context}): the cluster has no nodes")
    notes: list[str] = []
    networking = _kubeadm(kube, notes)
    daemonsets = sorted(
        str((d.get("metadata") or {}).get("name"))
        for d in _optional("list DaemonSets", notes, lambda: kube.list_objects("/apis/apps/v1/daemonsets"), [])
    )
    crds = sorted(
        str((c.get("metadata") or {}).get("name"))
        for c in _optional(
            "list CRDs", notes, lambda: kube.list_objects("/apis/apiextensions.k8s.io/v1/customresourcedefinitions"), []
        )
    )
    cilium = _optional(
        "read ConfigMap kube-system/cilium-config",
        notes,
        lambda: kube.read_configmap("kube-system", "cilium-config"),
        {},
    )
    corefile = _optional(
        "read ConfigMap kube-system/coredns", notes, lambda: kube.read_configmap("kube-system", "coredns"), {}
    ).get("Corefile", "")
    services = _optional("list Services in kube-system", notes, lambda: kube.services("kube-system"), [])
    dns_pods = _optional("list CoreDNS pods", notes, lambda: kube.pods("kube-system", "k8s-app=kube-dns"), [])
    pods, pods_source = _pod_cidrs(kube, nodes, networking, notes)
    svc, svc_source = _service_cidrs(kube, networking, notes, namespace)
    domain, domain_source = "", "not found"
    if networking.get("dnsDomain") and dns_domain_problem(networking["dnsDomain"]) is None:
        domain, domain_source = str(networking["dnsDomain"]).lower(), "kubeadm-config dnsDomain"
    elif corefile_domain(corefile):
        domain, domain_source = corefile_domain(corefile), "the Corefile's kubernetes plugin"
    pods, pods_source = _hinted(ref.name, "pod CIDRs", pods, pods_source, ref.pod_cidrs, notes)
    svc, svc_source = _hinted(
        ref.name, "service CIDR", svc, svc_source, (ref.service_cidr,) if ref.service_cidr else (), notes
    )
    domains, domain_source = _hinted(
        ref.name, "domain", (domain,) if domain else (), domain_source, (ref.domain,) if ref.domain else (), notes
    )
    domain = domains[0] if domains else ""
    kube_dns = next((s for s in services if s.name == "kube-dns"), None)
    layers, layers_source = _layers(crds, cilium, [s.name for s in services])
    cni, cni_source = _cni(daemonsets)
    proxy, proxy_source = _kube_proxy(kube, daemonsets, cilium, notes)
    return ClusterFacts(
        name=ref.name,
        context=ref.context,
        uid=uid,
        version=version,
        nodes=nodes,
        pod_cidrs=pods,
        pod_cidrs_source=pods_source,
        service_cidrs=svc,
        service_source=svc_source,
        domain=domain,
        domain_source=domain_source,
        corefile=corefile[:100_000],
        forwards=corefile_forwards(corefile),
        kube_proxy=proxy,
        kube_proxy_source=proxy_source,
        cni=cni,
        cni_source=cni_source,
        multicluster=layers,
        multicluster_source=layers_source,
        crds=tuple(c for c in crds if c.endswith((".submariner.io", ".x-k8s.io", ".cilium.io", ".projectcalico.org"))),
        dns_service_ip=(kube_dns.cluster_ip or "") if kube_dns else "",
        dns_server_ips=tuple(sorted(p.ip for p in dns_pods if checked_ip(p.ip))),
        notes=tuple(notes),
    )


def _hinted(
    cluster: str, what: str, found: tuple[str, ...], source: str, hint: tuple[str, ...], notes: list[str]
) -> tuple[tuple[str, ...], str]:
    """The discovered value; the hint when nothing was found; a note when the two disagree."""
    if found and hint and set(found) != set(hint):
        notes.append(
            f"the hint's {what} {', '.join(hint)} differs from {', '.join(found)} ({source}); using the latter"
        )
    if found:
        return found, source
    if hint:
        return hint, HINT_SOURCE
    return (), source


def same_cluster_problems(facts: Sequence[ClusterFacts]) -> list[str]:
    """Two clusters of the set that are one cluster (the same kube-system UID)."""
    seen: dict[str, ClusterFacts] = {}
    problems = []
    for fact in facts:
        twin = seen.get(fact.uid)
        if twin is not None:
            problems.append(
                f"clusters {twin.name} (context {twin.context}) and {fact.name} (context {fact.context}) are the same "
                f"cluster (kube-system UID {fact.uid}): point each at a different cluster"
            )
        seen.setdefault(fact.uid, fact)
    return problems
