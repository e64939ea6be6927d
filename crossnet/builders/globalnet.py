"""globalnet: clusters with identical CIDRs joined by Submariner Globalnet."""

from __future__ import annotations

from crossnet.cells import DNS_PROTOCOLS, SERVICE_PROTOCOLS, decided, scope_of, vantages
from crossnet.globalnet import CLUSTERSET_DOMAIN, NOT_EXPORTED_SERVICE
from crossnet.model import NS_PLACEHOLDER, Cell, Probe, Protocol, Target, Topology
from crossnet.profile import Profile
from crossnet.workloads import ECHO_SERVICE, HEADLESS_SERVICE, pod_hostname

__all__ = ["build"]


def build(topology: Topology, profile: Profile) -> list[Cell]:
    """From the pod and host of every node of every cluster to every other cluster's exported
    Services through Globalnet: clusterset names (resolved, then connected), global ingress IPs,
    per-pod names of the exported headless Service, a non-exported name (NXDOMAIN), and the
    peer's direct pod IP and ClusterIP, which are the sender's own CIDR and must not leak across."""
    cells = []
    svc = f"{ECHO_SERVICE}.{NS_PLACEHOLDER}.svc.{CLUSTERSET_DOMAIN}"
    for vantage in vantages(topology):
        own = vantage.cluster
        targets: list[tuple[Target, tuple[Protocol, ...]]] = [
            (Target(own, "dns-name", service=ECHO_SERVICE, name=svc, form="clusterset"), DNS_PROTOCOLS),
            (
                Target(
                    own,
                    "dns-name",
                    service=NOT_EXPORTED_SERVICE,
                    form="nxdomain",
                    expect_nxdomain=True,
                    name=f"{NOT_EXPORTED_SERVICE}.{NS_PLACEHOLDER}.svc.{CLUSTERSET_DOMAIN}",
                ),
                ("dns-udp",),
            ),
        ]
        for peer in topology.peers_of(own):
            by_cluster = f"{peer.name}.{svc}"
            targets += [
                (
                    Target(peer.name, "dns-name", service=ECHO_SERVICE, name=by_cluster, form="cluster.clusterset"),
                    (*DNS_PROTOCOLS, *SERVICE_PROTOCOLS),
                ),
                (Target(peer.name, "global-ip", service=ECHO_SERVICE), SERVICE_PROTOCOLS),
                (Target(peer.name, "cluster-ip", service=ECHO_SERVICE), ("tcp",)),
            ]
            headless = f"{peer.name}.{HEADLESS_SERVICE}.{NS_PLACEHOLDER}.svc.{CLUSTERSET_DOMAIN}"
            for node in peer.nodes:
                name = f"{pod_hostname(node.short)}.{headless}"
                targets += [
                    (
                        Target(
                            peer.name,
                            "dns-name",
                            node=node.short,
                            service=HEADLESS_SERVICE,
                            name=name,
                            form="pod.cluster.clusterset",
                        ),
                        ("dns-udp",),
                    ),
                    (
                        Target(
                            peer.name,
                            "headless",
                            node=node.short,
                            service=HEADLESS_SERVICE,
                            name=name,
                            form="pod.cluster.clusterset",
                        ),
                        ("tcp",),
                    ),
                    (Target(peer.name, "pod-ip", node=node.short), ("tcp",)),
                ]
        for target, protocols in targets:
            scope = scope_of(vantage, target.cluster, target.node)
            cells += [decided(profile, "globalnet", vantage, target, Probe(p), scope) for p in protocols]
    return cells
