"""dns: from the pod on every node, the echo Service of its own cluster in every name form, of
each peer (full, trailing dot), a nonexistent peer name (NXDOMAIN) and the ExternalName, over
dns-udp and dns-tcp (the full names also with a query padded to near the MTU)."""

from __future__ import annotations

from crossnet.cells import DNS_PROTOCOLS, LARGE_PAYLOAD, decided, scope_of, vantages
from crossnet.model import NS_PLACEHOLDER, Cell, Probe, Target, Topology
from crossnet.profile import Profile
from crossnet.workloads import ECHO_SERVICE, NONEXISTENT_SERVICE, external_name_services

__all__ = ["build"]


def _dns_targets(topology: Topology, src: str) -> list[Target]:
    own = topology.cluster(src)
    svc_ns = f"{ECHO_SERVICE}.{NS_PLACEHOLDER}"
    targets = [
        Target(src, "dns-name", service=ECHO_SERVICE, name=ECHO_SERVICE, form="short"),
        Target(src, "dns-name", service=ECHO_SERVICE, name=svc_ns, form="svc.ns"),
        Target(src, "dns-name", service=ECHO_SERVICE, name=f"{svc_ns}.svc.{own.dns_domain}", form="full"),
        Target(src, "dns-name", service=ECHO_SERVICE, name=f"{svc_ns}.svc.{own.dns_domain}.", form="fqdn"),
    ]
    for peer in topology.peers_of(src):
        full = f"{svc_ns}.svc.{peer.dns_domain}"
        targets += [
            Target(peer.name, "dns-name", service=ECHO_SERVICE, name=full, form="full"),
            Target(peer.name, "dns-name", service=ECHO_SERVICE, name=f"{full}.", form="fqdn"),
            Target(
                peer.name,
                "dns-name",
                service=NONEXISTENT_SERVICE,
                form="nxdomain",
                expect_nxdomain=True,
                name=f"{NONEXISTENT_SERVICE}.{NS_PLACEHOLDER}.svc.{peer.dns_domain}",
            ),
        ]
    for ext in external_name_services(topology):
        domain = topology.cluster(ext.cluster).dns_domain
        targets.append(
            Target(
                ext.cluster,
                "dns-name",
                service=ext.name,
                form="external-name",
                name=f"{ext.name}.{NS_PLACEHOLDER}.svc.{domain}",
            )
        )
    return targets


def build(topology: Topology, profile: Profile) -> list[Cell]:
    cells = []
    for vantage in vantages(topology, ("pod",)):
        for target in _dns_targets(topology, vantage.cluster):
            scope = scope_of(vantage, target.cluster)
            cells += [decided(profile, "dns", vantage, target, Probe(p, port=53), scope) for p in DNS_PROTOCOLS]
            if target.form == "full" and target.service == ECHO_SERVICE:  # a query padded to near the MTU
                cells += [
                    decided(profile, "dns", vantage, target, Probe(p, port=53, payload=LARGE_PAYLOAD), scope)
                    for p in DNS_PROTOCOLS
                ]
    return cells
