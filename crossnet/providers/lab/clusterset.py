"""What a lab of a plan presents to the rest of crossnet: its ClusterSet (what kind's API would
tell of real clusters), built from the plan alone."""

from __future__ import annotations

from typing import Any

from crossnet.model import ClusterSet, LiveCluster, LiveNode, LivePod, LiveService
from crossnet.providers.lab.topology import LabCluster, LabPlan

__all__ = ["live_cluster_set"]


def live_cluster_set(plan: LabPlan) -> ClusterSet:
    """The ClusterSet a lab of this plan presents (what kind's API would tell of it)."""
    clusters = []
    for cluster in plan.clusters:
        services = tuple(
            LiveService(
                name=s.name,
                namespace=s.namespace,
                type=s.type,  # type: ignore[arg-type]
                cluster_ip=s.cluster_ip,
                external_name=s.external_name,
                node_port=s.node_port,
                ports=tuple((p, port) for p, port, _ in s.ports),
                endpoints=tuple(ip for ip, _ in s.endpoints),
                hostnames=tuple(host for _, host in s.endpoints),
            )
            for s in cluster.services
            if s.type != "ClusterSetIP"  # a ServiceImport's VIP (providers/lab/mcs.py): clusterset_ips below
        )
        imports = tuple(
            (s.name.removesuffix("-clusterset"), str(s.cluster_ip))
            for s in cluster.services
            if s.type == "ClusterSetIP"
        )
        clusters.append(
            LiveCluster(
                name=cluster.spec.name,
                domain=cluster.spec.dns_domain,
                pod_subnet=cluster.spec.pod_subnet,
                service_subnet=cluster.spec.service_subnet,
                nodes=tuple(
                    LiveNode(short=n.short, role=n.role, ip=n.ip, pod_cidr=n.pod_cidr, handle=n.netns)
                    for n in cluster.nodes
                ),
                pods=tuple(
                    LivePod(name=p.name, node=n.short, ip=p.ip, agent=f"{n.cluster}/{n.short}/agent")
                    for n in cluster.nodes
                    for p in n.pods
                    if p.name == "agent"
                ),
                services=services,
                dns_service_ip=cluster.dns_service_ip,
                dns_server_ips=(cluster.dns_pod.ip,),
                clusterset_ips=imports,
                **_global_fields(cluster),
            )
        )
    return ClusterSet(provider="lab", clusters=tuple(clusters))


def _global_fields(cluster: LabCluster) -> dict[str, Any]:
    gn = cluster.globalnet
    if gn is None:
        return {}
    ingress = [(f"svc/{name}", ip) for name, ip in gn.allocation.service_ips.items()]
    ingress += [(f"pod/{host}", ip) for host, ip in gn.allocation.pod_ips.items()]
    return {
        "global_cidr": gn.allocation.cidr,
        "global_egress": gn.allocation.egress_ips,
        "global_ingress": tuple(ingress),
        "clusterset_dns_ips": (gn.lighthouse_pod.ip,),
    }
