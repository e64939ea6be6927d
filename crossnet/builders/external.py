"""external: the office network outside every cluster (the bgp topology). From the office host: to
every pod (tcp, udp, icmp, large payloads), each cluster's ClusterIP and the NodePort on every node,
and the Service names through the enterprise DNS (resolved over dns-udp and dns-tcp, then connected;
the headless name resolved, then each pod's own name connected). From the pod and the host of every
node to the office host (egress). Source IPs are the snat suite's question."""

from __future__ import annotations

from crossnet.bgp import OFFICE, OFFICE_HOST
from crossnet.cells import DNS_PROTOCOLS, LARGE_PAYLOAD, POD_PROTOCOLS, SERVICE_PROTOCOLS, decided, vantages
from crossnet.model import NS_PLACEHOLDER, Cell, Probe, Protocol, Target, Topology, Vantage
from crossnet.profile import Profile
from crossnet.workloads import ECHO_SERVICE, HEADLESS_SERVICE, pod_hostname

__all__ = ["OFFICE_VANTAGE", "build"]

OFFICE_VANTAGE = Vantage(OFFICE, OFFICE_HOST, "external")


def _inbound(topology: Topology) -> list[tuple[Target, tuple[Probe, ...]]]:
    """What the office host asks of each cluster."""
    pod_probes = (*(Probe(p) for p in POD_PROTOCOLS), *(Probe(p, payload=LARGE_PAYLOAD) for p in SERVICE_PROTOCOLS))
    by_name: tuple[Protocol, ...] = (*DNS_PROTOCOLS, *SERVICE_PROTOCOLS)
    targets: list[tuple[Target, tuple[Probe, ...]]] = []
    for cluster in topology.clusters:
        echo = f"{ECHO_SERVICE}.{NS_PLACEHOLDER}.svc.{cluster.dns_domain}"
        headless = f"{HEADLESS_SERVICE}.{NS_PLACEHOLDER}.svc.{cluster.dns_domain}"
        targets += [
            (Target(cluster.name, "cluster-ip", service=ECHO_SERVICE), tuple(Probe(p) for p in SERVICE_PROTOCOLS)),
            (
                Target(cluster.name, "dns-name", service=ECHO_SERVICE, name=echo, form="full"),
                tuple(Probe(p, port=53) if p.startswith("dns") else Probe(p) for p in by_name),
            ),
            (
                Target(cluster.name, "dns-name", service=HEADLESS_SERVICE, name=headless, form="headless"),
                tuple(Probe(p, port=53) for p in DNS_PROTOCOLS),
            ),
        ]
        for node in cluster.nodes:
            own_name = f"{pod_hostname(node.short)}.{headless}"
            targets += [
                (Target(cluster.name, "pod-ip", node=node.short), pod_probes),
                (
                    Target(cluster.name, "node-port", node=node.short, service=ECHO_SERVICE),
                    tuple(Probe(p) for p in SERVICE_PROTOCOLS),
                ),
                (
                    Target(cluster.name, "headless", node=node.short, service=HEADLESS_SERVICE, name=own_name),
                    (Probe("tcp"),),
                ),
            ]
    return targets


def build(topology: Topology, profile: Profile) -> list[Cell]:
    cells = [
        decided(profile, "external", OFFICE_VANTAGE, target, probe, "outside")
        for target, probes in _inbound(topology)
        for probe in probes
    ]
    office = Target(OFFICE, "external-host", node=OFFICE_HOST)
    for vantage in vantages(topology):
        cells += [decided(profile, "external", vantage, office, Probe(p), "outside") for p in POD_PROTOCOLS]
    return cells
