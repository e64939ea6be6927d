"""Submariner Globalnet as data: each cluster's slice of the global CIDR and the global IPs
Globalnet would allocate in it (Submariner's defaults: 242.0.0.0/8, a /16 per cluster):

- a /16 per cluster in config order (default global CIDR 242.0.0.0/8: 242.0.0.0/16, 242.1.0.0/16, …);
- ClusterGlobalEgressIP `cluster-egress.submariner.io`: `numGlobalIPs` (8) egress IPs at the
  start of the slice — traffic leaving the cluster is SNATed to them on the gateway;
- GlobalIngressIP (target ClusterIPService) for each exported ClusterIP Service, and
  (target HeadlessServicePod) for each pod of an exported headless Service.

The lab builds its emulation from this; on kind the same facts are read back from Submariner's
objects instead of assumed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from crossnet.model import Topology
from crossnet.workloads import ECHO_SERVICE, HEADLESS_SERVICE, pod_hostname

__all__ = [
    "CLUSTERSET_DOMAIN",
    "DEFAULT_GLOBAL_CIDR",
    "EXPORTED_SERVICES",
    "NOT_EXPORTED_SERVICE",
    "GlobalAllocation",
    "allocate",
    "gateway_node",
    "global_cidr_problems",
]

DEFAULT_GLOBAL_CIDR = "242.0.0.0/8"
CLUSTER_PREFIX = 16
EGRESS_IPS = 8  # ClusterGlobalEgressIP spec.numGlobalIPs default
CLUSTERSET_DOMAIN = "clusterset.local"
EXPORTED_SERVICES = (ECHO_SERVICE, HEADLESS_SERVICE)
NOT_EXPORTED_SERVICE = "private"  # a Service that exists but is not exported: NXDOMAIN in clusterset.local


@dataclass(frozen=True)
class GlobalAllocation:
    cluster: str
    cidr: str
    egress_ips: tuple[str, ...]
    service_ips: dict[str, str] = field(default_factory=dict)  # exported ClusterIP Service -> GlobalIngressIP
    pod_ips: dict[str, str] = field(default_factory=dict)  # headless pod hostname -> GlobalIngressIP

    @property
    def egress_range(self) -> str:
        return f"{self.egress_ips[0]}-{self.egress_ips[-1]}"


def gateway_node(topology: Topology, cluster: str) -> str:
    """The node Submariner would label submariner.io/gateway=true: the first worker."""
    nodes = topology.cluster(cluster).nodes
    return next((n.short for n in nodes if n.role == "worker"), nodes[0].short)


def global_cidr_problems(topology: Topology, global_cidr: str = DEFAULT_GLOBAL_CIDR) -> list[str]:
    """Each slice must exist, and no global CIDR may overlap a cluster CIDR."""
    problems: list[str] = []
    try:
        network = ipaddress.IPv4Network(global_cidr)
    except ValueError as exc:
        return [f"globalnet CIDR {global_cidr!r} is not an IPv4 CIDR ({exc})"]
    slices = list(network.subnets(new_prefix=CLUSTER_PREFIX)) if network.prefixlen <= CLUSTER_PREFIX else []
    if len(slices) < len(topology.clusters):
        problems.append(
            f"globalnet CIDR {global_cidr} holds {len(slices)} /{CLUSTER_PREFIX} slices for "
            f"{len(topology.clusters)} clusters; use a larger one (Submariner's default is 242.0.0.0/8)"
        )
    for cluster in topology.clusters:
        for what, subnet in (("podSubnet", cluster.pod_network), ("serviceSubnet", cluster.service_network)):
            if subnet.overlaps(network):
                problems.append(
                    f"{cluster.source_file}: networking.{what} {subnet} overlaps the globalnet CIDR "
                    f"{global_cidr}; pick a global CIDR outside every cluster CIDR"
                )
    return problems


def allocate(topology: Topology, global_cidr: str = DEFAULT_GLOBAL_CIDR) -> tuple[GlobalAllocation, ...]:
    network = ipaddress.IPv4Network(global_cidr)
    allocations = []
    for cluster, cidr in zip(topology.clusters, network.subnets(new_prefix=CLUSTER_PREFIX), strict=False):
        hosts = cidr.hosts()
        egress = tuple(str(next(hosts)) for _ in range(EGRESS_IPS))
        service_ips = {ECHO_SERVICE: str(next(hosts))}
        pod_ips = {pod_hostname(node.short): str(next(hosts)) for node in cluster.nodes}
        allocations.append(GlobalAllocation(cluster.name, str(cidr), egress, service_ips, pod_ips))
    return tuple(allocations)


class GlobalnetObjectsError(ValueError):
    """Submariner's objects are missing or not allocated yet; the message says which."""


def allocation_from_objects(
    cluster: str, ingress_ips: list[dict[str, Any]], cluster_egress: list[dict[str, Any]]
) -> GlobalAllocation:
    """Read a cluster's Globalnet allocation back from Submariner's own objects (on kind, instead of
    assuming it): `GlobalIngressIP` (spec.target ClusterIPService with spec.serviceRef.name, or
    HeadlessServicePod with spec.podRef.name; status.allocatedIP) and the `ClusterGlobalEgressIP`
    named cluster-egress.submariner.io (status.allocatedIPs; its spec says numGlobalIPs — unlike the
    namespaced GlobalEgressIP's numberOfIPs)."""
    egress_object = next(
        (o for o in cluster_egress if o.get("metadata", {}).get("name") == "cluster-egress.submariner.io"), None
    )
    if egress_object is None:
        raise GlobalnetObjectsError(
            f"{cluster}: no ClusterGlobalEgressIP cluster-egress.submariner.io; "
            "is Globalnet enabled (subctl join --globalnet)?"
        )
    egress = tuple(egress_object.get("status", {}).get("allocatedIPs") or ())
    wanted = int(egress_object.get("spec", {}).get("numGlobalIPs", 8))
    if len(egress) < wanted:
        raise GlobalnetObjectsError(f"{cluster}: ClusterGlobalEgressIP has {len(egress)} of {wanted} IPs allocated")
    service_ips: dict[str, str] = {}
    pod_ips: dict[str, str] = {}
    for obj in ingress_ips:
        spec, name = obj.get("spec", {}), obj.get("metadata", {}).get("name", "?")
        allocated = obj.get("status", {}).get("allocatedIP")
        if not allocated:
            raise GlobalnetObjectsError(f"{cluster}: GlobalIngressIP {name} has no status.allocatedIP yet")
        if spec.get("target") == "ClusterIPService":
            service_ips[str(spec.get("serviceRef", {}).get("name"))] = str(allocated)
        elif spec.get("target") == "HeadlessServicePod":
            pod_ips[str(spec.get("podRef", {}).get("name"))] = str(allocated)
    cidr = str(ipaddress.IPv4Network(f"{egress[0]}/{CLUSTER_PREFIX}", strict=False))
    outside = [
        ip
        for ip in (*egress, *service_ips.values(), *pod_ips.values())
        if ipaddress.IPv4Address(ip) not in ipaddress.IPv4Network(cidr)
    ]
    if outside:
        raise GlobalnetObjectsError(f"{cluster}: global IPs {outside} are outside the cluster's slice {cidr}")
    return GlobalAllocation(cluster, cidr, egress, service_ips, pod_ips)
