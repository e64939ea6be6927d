"""Multi-Cluster Services in the lab (the mcs topology): what an MCS controller would create, as
the lab's own Services and DNS records.

- The first cluster exports `echo`, `echo-headless` and `remote-echo` (a Service only it has, for
  the short-name cells); every cluster -- the exporter included, as the MCS API has it -- imports
  them (ServiceImport). A ClusterIP Service gets one ClusterSetIP,
  allocated from the importing cluster's service range, the same in every cluster; kube-proxy DNATs
  it to the exporter's pods (routed between the clusters as in the default topology).
- Under `derived_services` (Karmada) each importing cluster also gets `derived-echo`, a plain
  Service with its own ClusterIP and the exporter's pods as endpoints.
- `private` exists in every cluster and is never exported: NXDOMAIN in clusterset.local.
- The lab DNS's `multicluster` plugin answers clusterset.local from `serviceimports` in its records.
- The state file's `mcs` holds the objects emulated: the exporter's ServiceExports (Valid and Ready, as an
  MCS controller leaves them) and the ServiceImports (`state_record`; checked by base.state_problems).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from crossnet.model import AGENT_PORT, CROSSNET_NAMESPACE, Topology
from crossnet.profile import McsPlumbing
from crossnet.providers.lab.topology import LabPlan, LabService
from crossnet.workloads import DERIVED_PREFIX, ECHO_SERVICE, HEADLESS_SERVICE, REMOTE_SERVICE, echo_port_name

__all__ = [
    "CLUSTERSET_TYPE",
    "EXPORTED",
    "exporter",
    "serviceexports",
    "serviceimports",
    "state_record",
    "with_mcs",
]

CLUSTERSET_TYPE = "ClusterSetIP"  # a LabService that is a ServiceImport's VIP, not a Service of the API
ECHO_PORTS = (("tcp", AGENT_PORT, AGENT_PORT), ("udp", AGENT_PORT, AGENT_PORT))
EXPORTED = (ECHO_SERVICE, HEADLESS_SERVICE, REMOTE_SERVICE)  # the exporter's ServiceExports


def exporter(topology: Topology) -> str:
    """The exporting cluster: the first in config order."""
    return topology.clusters[0].name


def clusterset_ips(plan: LabPlan) -> dict[str, str]:
    """The ClusterSetIPs: of `echo` the 200th, of `remote-echo` the 202nd address of the (first)
    importing cluster's service range -- the same in every cluster."""
    importer = plan.clusters[1] if len(plan.clusters) > 1 else plan.clusters[0]
    network = importer.spec.service_network
    return {ECHO_SERVICE: str(network[200]), REMOTE_SERVICE: str(network[202])}


def with_mcs(plan: LabPlan, topology: Topology, mcs: McsPlumbing) -> LabPlan:
    """The plan with `remote-echo` in the exporter, every cluster's ServiceImport VIPs and, under
    derived_services, the importers' derived Services (all backed by the exporter's echo pods)."""
    source = plan.cluster(exporter(topology))
    endpoints = next(s for s in source.services if s.name == ECHO_SERVICE).endpoints
    clusters = []
    for cluster in plan.clusters:
        extra = [
            LabService(f"{name}-clusterset", CROSSNET_NAMESPACE, CLUSTERSET_TYPE, vip, ECHO_PORTS, endpoints)
            for name, vip in clusterset_ips(plan).items()
        ]
        if cluster is source:
            remote_ip = str(cluster.spec.service_network[102])
            extra.append(LabService(REMOTE_SERVICE, CROSSNET_NAMESPACE, "ClusterIP", remote_ip, ECHO_PORTS, endpoints))
        elif mcs.derived_services:
            derived_ip = str(cluster.spec.service_network[201])
            extra.append(
                LabService(
                    DERIVED_PREFIX + ECHO_SERVICE, CROSSNET_NAMESPACE, "ClusterIP", derived_ip, ECHO_PORTS, endpoints
                )
            )
        clusters.append(replace(cluster, services=(*cluster.services, *extra)))
    return replace(plan, clusters=tuple(clusters))


def serviceimports(plan: LabPlan, topology: Topology) -> list[dict[str, Any]]:
    """The `serviceimports` of the lab DNS records: the same in every cluster."""
    source = plan.cluster(exporter(topology))
    ports = [[protocol, port, echo_port_name(protocol)] for protocol, port, _ in ECHO_PORTS]
    headless = next(s for s in source.services if s.name == HEADLESS_SERVICE)
    imports: list[dict[str, Any]] = [
        {
            "name": name,
            "namespace": CROSSNET_NAMESPACE,
            "type": "ClusterSetIP",
            "ips": [vip],
            "ports": ports,
            "endpoints": [],
        }
        for name, vip in clusterset_ips(plan).items()
    ]
    imports.append(
        {
            "name": HEADLESS_SERVICE,
            "namespace": CROSSNET_NAMESPACE,
            "type": "Headless",
            "ips": [],
            "ports": ports,
            "endpoints": [{"ip": ip, "hostname": host, "cluster": source.spec.name} for ip, host in headless.endpoints],
        }
    )
    return imports


def serviceexports(topology: Topology) -> list[dict[str, Any]]:
    """The exporter's ServiceExports as the lab emulates them: exported, so Valid and Ready."""
    return [
        {
            "name": name,
            "namespace": CROSSNET_NAMESPACE,
            "cluster": exporter(topology),
            "conditions": [{"type": kind, "status": "True"} for kind in ("Valid", "Ready")],
        }
        for name in EXPORTED
    ]


def state_record(topology: Topology, imports: list[dict[str, Any]]) -> dict[str, Any]:
    """The state file's `mcs`: the exporting cluster, the ServiceExports and the ServiceImports emulated."""
    return {
        "cluster": exporter(topology),
        "namespace": CROSSNET_NAMESPACE,
        "serviceexports": serviceexports(topology),
        "serviceimports": imports,
    }
