"""service: from the pod and the host of every node to each cluster's ClusterIP, the NodePort on
every node, the headless Service's A records and each pod's own name, and the ExternalName."""

from __future__ import annotations

from crossnet.cells import SERVICE_PROTOCOLS, decided, scope_of, vantages
from crossnet.model import NS_PLACEHOLDER, Cell, Probe, Protocol, Target, Topology
from crossnet.profile import Profile
from crossnet.workloads import ECHO_SERVICE, HEADLESS_SERVICE, external_name_services, pod_hostname

__all__ = ["build"]


def _service_targets(topology: Topology) -> list[tuple[Target, tuple[Protocol, ...]]]:
    targets: list[tuple[Target, tuple[Protocol, ...]]] = []
    for cluster in topology.clusters:
        targets.append((Target(cluster.name, "cluster-ip", service=ECHO_SERVICE), SERVICE_PROTOCOLS))
        headless = f"{HEADLESS_SERVICE}.{NS_PLACEHOLDER}.svc.{cluster.dns_domain}"
        targets.append(
            (Target(cluster.name, "dns-name", service=HEADLESS_SERVICE, form="headless", name=headless), ("dns-udp",))
        )
        for node in cluster.nodes:
            targets.append(
                (Target(cluster.name, "node-port", node=node.short, service=ECHO_SERVICE), SERVICE_PROTOCOLS)
            )
            targets.append(
                (
                    Target(
                        cluster.name,
                        "headless",
                        node=node.short,
                        service=HEADLESS_SERVICE,
                        name=f"{pod_hostname(node.short)}.{headless}",
                    ),
                    ("tcp",),
                )
            )
    externals = external_name_services(topology)
    for ext in externals:
        # Connecting through the ExternalName reaches the cluster it points to. With three or more
        # clusters several clusters own an ExternalName of that name: the id says whose it is.
        domain = topology.cluster(ext.cluster).dns_domain
        owned = f"{ext.name}@{ext.cluster}" if sum(e.name == ext.name for e in externals) > 1 else ext.name
        targets.append(
            (
                Target(
                    ext.target_cluster,
                    "dns-name",
                    service=owned,
                    form="external-name",
                    name=f"{ext.name}.{NS_PLACEHOLDER}.svc.{domain}",
                ),
                ("tcp",),
            )
        )
    return targets


def build(topology: Topology, profile: Profile) -> list[Cell]:
    cells = []
    targets = _service_targets(topology)
    for vantage in vantages(topology):
        for target, protocols in targets:
            scope = scope_of(vantage, target.cluster, target.node)
            cells += [decided(profile, "service", vantage, target, Probe(p), scope) for p in protocols]
    return cells
