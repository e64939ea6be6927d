"""mcs: Multi-Cluster Services. From the pod and the host of every node of each importing cluster:
`<svc>.<ns>.svc.clusterset.local` resolved (dns-udp, dns-tcp) to the ServiceImport's IPs and
connected (tcp, udp); the headless Service's name and each of its pods' names
(`<host>.<cluster>.<svc>.<ns>.svc.clusterset.local`) resolved, each pod connected; the SRV records
of the exported ports; `<svc>.<ns>` of a Service only the exporter has, from a pod whose search
list has svc.clusterset.local (and, expected not to resolve, from one with kubelet's list only);
Karmada's `derived-<svc>` in the importer's own domain; `private` (never exported) NXDOMAIN in
clusterset.local and its ClusterIP unreachable. The exporting cluster's pods resolve the
clusterset name too (its own view)."""

from __future__ import annotations

from crossnet.cells import DNS_PROTOCOLS, SERVICE_PROTOCOLS, decided, scope_of, vantages
from crossnet.globalnet import CLUSTERSET_DOMAIN, NOT_EXPORTED_SERVICE
from crossnet.model import NS_PLACEHOLDER, Cell, Probe, Protocol, Target, Topology
from crossnet.profile import Profile
from crossnet.workloads import (
    DERIVED_PREFIX,
    ECHO_SERVICE,
    HEADLESS_SERVICE,
    REMOTE_SERVICE,
    echo_port_name,
    pod_hostname,
)

__all__ = ["build"]


def _targets(topology: Topology, importer: str, ra: bool) -> list[tuple[Target, tuple[Protocol, ...]]]:
    exporter = topology.clusters[0]
    ns = NS_PLACEHOLDER
    echo, headless = f"{ECHO_SERVICE}.{ns}.svc", f"{HEADLESS_SERVICE}.{ns}.svc"
    by_name: tuple[Protocol, ...] = (*DNS_PROTOCOLS, *SERVICE_PROTOCOLS)
    e, remote = exporter.name, f"{REMOTE_SERVICE}.{ns}"
    targets: list[tuple[Target, tuple[Protocol, ...]]] = [
        (
            Target(
                e, "dns-name", service=ECHO_SERVICE, name=f"{echo}.{CLUSTERSET_DOMAIN}", form="clusterset", expect_ra=ra
            ),
            by_name,
        ),
        (
            Target(
                e,
                "dns-name",
                service=HEADLESS_SERVICE,
                name=f"{headless}.{CLUSTERSET_DOMAIN}",
                form="clusterset",
                expect_ra=ra,
            ),
            DNS_PROTOCOLS,
        ),
        # <svc>.<ns> of a Service only the exporter has: found through svc.clusterset.local in the search list
        (Target(e, "dns-name", service=REMOTE_SERVICE, name=remote, form="clusterset-search"), ("dns-udp",)),
        (Target(e, "dns-name", service=REMOTE_SERVICE, name=remote, form="clusterset-nosearch"), ("dns-udp",)),
        (
            Target(
                e,
                "dns-name",
                service=f"{NOT_EXPORTED_SERVICE}",
                form="nxdomain",
                expect_nxdomain=True,
                name=f"{NOT_EXPORTED_SERVICE}.{ns}.svc.{CLUSTERSET_DOMAIN}",
            ),
            ("dns-udp",),
        ),
        (Target(e, "cluster-ip", service=NOT_EXPORTED_SERVICE), ("tcp",)),
    ]
    own_domain = topology.cluster(importer).dns_domain
    derived = f"{DERIVED_PREFIX}{ECHO_SERVICE}"
    targets.append(
        (Target(e, "dns-name", service=derived, name=f"{derived}.{ns}.svc.{own_domain}", form="derived"), by_name)
    )
    for proto in SERVICE_PROTOCOLS:
        name = f"_{echo_port_name(proto)}._{proto}.{echo}.{CLUSTERSET_DOMAIN}"
        targets.append(
            (
                Target(e, "dns-name", service=f"{ECHO_SERVICE}:{proto}", name=name, form="srv", expect_ra=ra),
                ("dns-udp",),
            )
        )
    for node in exporter.nodes:
        name = f"{pod_hostname(node.short)}.{e}.{headless}.{CLUSTERSET_DOMAIN}"
        targets += [
            (
                Target(
                    e,
                    "dns-name",
                    node=node.short,
                    service=HEADLESS_SERVICE,
                    name=name,
                    form="pod.cluster.clusterset",
                    expect_ra=ra,
                ),
                ("dns-udp",),
            ),
            (
                Target(
                    e, "headless", node=node.short, service=HEADLESS_SERVICE, name=name, form="pod.cluster.clusterset"
                ),
                ("tcp",),
            ),
        ]
    return targets


def build(topology: Topology, profile: Profile) -> list[Cell]:
    mcs = profile.plumbing.mcs
    ra = bool(mcs and mcs.header_ra)
    exporter = topology.clusters[0].name
    cells = []
    for vantage in vantages(topology):
        if vantage.cluster == exporter:  # its own view: the clusterset name resolves to the same IPs
            if vantage.kind == "pod":
                own = Target(
                    exporter,
                    "dns-name",
                    service=ECHO_SERVICE,
                    form="clusterset",
                    expect_ra=ra,
                    name=f"{ECHO_SERVICE}.{NS_PLACEHOLDER}.svc.{CLUSTERSET_DOMAIN}",
                )
                cells.append(decided(profile, "mcs", vantage, own, Probe("dns-udp", port=53), "same-cluster"))
            continue
        for target, protocols in _targets(topology, vantage.cluster, ra):
            scope = scope_of(vantage, target.cluster, target.node)
            for protocol in protocols:
                probe = Probe(protocol, port=53) if protocol.startswith("dns") else Probe(protocol)
                cells.append(decided(profile, "mcs", vantage, target, probe, scope))
    return cells
