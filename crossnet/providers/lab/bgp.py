"""The bgp topology in the lab: real BIRD on every node and on a top-of-rack switch, real unbound as
the office's enterprise DNS, Calico's natOutgoing in iptables -- and no injected route at all.

Namespaces beside the clusters': `bgp.tor` (the switch: a veth on the underlay bridge, one
point-to-point veth to each office host), `bgp.office` (the office host: the external vantage
and the target of pod egress) and `bgp.dns` (unbound). Nodes route by default to the switch (their
way to the office, as in the field); the switch knows the clusters' blocks only from BGP and
rejects the rest with "network unreachable" at once (a dead-end veth, as the underlay does).
"""

from __future__ import annotations

import ipaddress
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossnet.bgp import ENTERPRISE_DNS, OFFICE, OFFICE_HOST, SWITCH, cluster_as, ingress_nodes
from crossnet.model import LiveCluster, LiveNode, Topology
from crossnet.plumbing.bgp import NAT_OUTGOING_CHAIN, BgpSpeaker, bird_conf, nat_outgoing_rules, unbound_conf
from crossnet.profile import BgpPlumbing
from crossnet.providers.base import ProviderError
from crossnet.providers.lab.neighbours import MAC_NODE, MAC_POD, MAC_POD_GATEWAY, mac_for, underlay_neighbours
from crossnet.providers.lab.topology import (
    NODE_SYSCTLS,
    UNDERLAY_CIDR,
    UNDERLAY_NETNS,
    LabPlan,
    NodeRouting,
    namespace_script,
)

__all__ = [
    "BGP_TOOLS",
    "LabBgp",
    "missing_tools",
    "outside_cluster",
    "plan_bgp",
]

SWITCH_IP = str(UNDERLAY_CIDR[-2])  # 172.19.255.254: far from the nodes (allocated from .0.2 up)
OFFICE_CIDR = ipaddress.IPv4Network("192.168.200.0/24")
SWITCH_OFFICE_IP = str(OFFICE_CIDR[1])
OFFICE_HOSTS = {OFFICE_HOST: str(OFFICE_CIDR[10]), ENTERPRISE_DNS: str(OFFICE_CIDR[53])}
NETNS = {SWITCH: "bgp.tor", OFFICE_HOST: "bgp.office", ENTERPRISE_DNS: "bgp.dns"}
CONVERGE_TIMEOUT = 20.0
BGP_TOOLS = {"bird": "bird2", "birdc": "bird2", "unbound": "unbound", "unbound-control": "unbound"}


def missing_tools() -> str | None:
    """What the bgp topology lacks on this machine, as the message that says how to install it."""
    missing = sorted({pkg for tool, pkg in BGP_TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return None
    return (
        f"the bgp topology runs BIRD and unbound in the lab, and {', '.join(missing)} is not installed\n"
        f"    fix: apt-get install -y {' '.join(missing)} (or `bash .ci/setup lab`)"
    )


@dataclass(frozen=True)
class LabBgp:
    """What the lab runs for the bgp topology: one BIRD per node and the switch, unbound, and how
    each node is routed and masqueraded instead of kindnet's way."""

    settings: BgpPlumbing
    speakers: tuple[tuple[str, BgpSpeaker], ...]  # (netns, speaker), nodes first, the switch last
    routing: tuple[tuple[str, NodeRouting], ...]  # node netns -> its routing
    forwards: tuple[tuple[str, tuple[str, ...]], ...]  # (cluster domain, its DNS servers)
    expected_routes: tuple[tuple[str, tuple[str, ...]], ...]  # netns -> prefixes BGP must install there

    def routing_of(self, netns: str) -> NodeRouting:
        return dict(self.routing)[netns]


def plan_bgp(plan: LabPlan, topology: Topology, settings: BgpPlumbing) -> LabBgp:
    speakers: list[tuple[str, BgpSpeaker]] = []
    routing: list[tuple[str, NodeRouting]] = []
    switch_peers: list[tuple[str, int]] = []
    blocks = {n.netns: n.pod_cidr for n in plan.nodes}
    announced = {c.spec.name: (c.spec.service_subnet,) if settings.advertise_service_ips else () for c in plan.clusters}
    for cluster in plan.clusters:
        own_as = cluster_as(topology, cluster.spec.name)
        ingress = {n.short for n in ingress_nodes(cluster.spec)}
        peer_pools = tuple(c.spec.pod_subnet for c in plan.clusters if c is not cluster)
        masquerade = nat_outgoing_rules(cluster.spec.pod_subnet, peer_pools if settings.keep_source else ())
        for node in cluster.nodes:
            is_ingress = node.short in ingress
            speakers.append(
                (
                    node.netns,
                    BgpSpeaker(
                        name=node.netns,
                        router_id=node.ip,
                        local_as=own_as,
                        blocks=(node.pod_cidr,),
                        announce_only=announced[cluster.spec.name],
                        mesh=tuple(n.ip for n in cluster.nodes if n.short != node.short),
                        peers=((SWITCH_IP, settings.switch_as),) if is_ingress else (),
                    ),
                )
            )
            if is_ingress:
                switch_peers.append((node.ip, own_as))
            neighbour = f"neigh replace {SWITCH_IP} lladdr {mac_for(MAC_NODE, SWITCH_IP)} dev eth0 nud permanent"
            routing.append((node.netns, NodeRouting(SWITCH_IP, (neighbour,), (NAT_OUTGOING_CHAIN, tuple(masquerade)))))
    speakers.append(
        (
            NETNS[SWITCH],
            BgpSpeaker(name="tor", router_id=SWITCH_IP, local_as=settings.switch_as, peers=tuple(switch_peers)),
        )
    )
    every_block = set(blocks.values())
    expected: list[tuple[str, tuple[str, ...]]] = []
    for cluster in plan.clusters:
        elsewhere = {s for c in plan.clusters if c is not cluster for s in announced[c.spec.name]}
        for node in cluster.nodes:
            expected.append((node.netns, tuple(sorted((every_block | elsewhere) - {node.pod_cidr}))))
    switch_routes = every_block | {s for subnets in announced.values() for s in subnets}
    expected.append((NETNS[SWITCH], tuple(sorted(switch_routes))))
    forwards = tuple((c.spec.dns_domain, (c.dns_pod.ip,)) for c in plan.clusters)
    return LabBgp(settings, tuple(speakers), tuple(routing), forwards, tuple(expected))


def link_lines() -> list[str]:
    """`ip -batch` lines: the switch on the underlay bridge, the office hosts behind it."""
    lines = [f"netns add {ns}" for ns in NETNS.values()]
    lines.append(
        f"link add name ut netns {UNDERLAY_NETNS} type veth peer name eth0 netns {NETNS[SWITCH]}"
        f" address {mac_for(MAC_NODE, SWITCH_IP)}"
    )
    for host, ip in OFFICE_HOSTS.items():
        lines.append(
            f"link add name v-{host} netns {NETNS[SWITCH]} address {mac_for(MAC_POD_GATEWAY, ip)}"
            f" type veth peer name eth0 netns {NETNS[host]} address {mac_for(MAC_POD, ip)}"
        )
    return lines


def underlay_lines() -> list[str]:
    """Lines for the underlay namespace's batch: the switch's port on the bridge."""
    return ["link set dev ut master br0", "link set dev ut up"]


def switch_script(plan: LabPlan) -> str:
    batch = [
        "link set dev lo up",
        f"addr add {SWITCH_IP}/{UNDERLAY_CIDR.prefixlen} dev eth0",
        "link set dev eth0 up",
        *underlay_neighbours(plan, "eth0", except_ip=SWITCH_IP),
        "link add name edge0 type veth peer name edge1",
        "link set dev edge1 up",
        "link set dev edge0 up",
        "route add default dev edge0",
    ]
    for host, ip in OFFICE_HOSTS.items():
        batch += [
            f"addr add {SWITCH_OFFICE_IP}/32 dev v-{host}",
            f"link set dev v-{host} up",
            f"route add {ip}/32 dev v-{host}",
            f"neigh replace {ip} lladdr {mac_for(MAC_POD, ip)} dev v-{host} nud permanent",
        ]
    reject = (
        "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -o edge0 -j REJECT --reject-with icmp-net-unreachable\nCOMMIT\n"
    )
    return namespace_script(NODE_SYSCTLS, batch, reject)


def office_script(host: str) -> str:
    ip = OFFICE_HOSTS[host]
    batch = [
        "link set dev lo up",
        f"addr add {ip}/32 dev eth0",
        "link set dev eth0 up",
        f"route add {SWITCH_OFFICE_IP} dev eth0 scope link",
        f"route add default via {SWITCH_OFFICE_IP} dev eth0 onlink",
        f"neigh replace {SWITCH_OFFICE_IP} lladdr {mac_for(MAC_POD_GATEWAY, ip)} dev eth0 nud permanent",
    ]
    return namespace_script(NODE_SYSCTLS, batch)


def namespace_jobs(plan: LabPlan) -> list[tuple[str, str, str]]:
    """(netns, script, what) for the switch and the office hosts."""
    jobs = [(NETNS[SWITCH], switch_script(plan), "switch")]
    jobs += [(NETNS[host], office_script(host), f"office {host}") for host in OFFICE_HOSTS]
    return jobs


def start_daemons(sandbox: Any, state_dir: Path, bgp: LabBgp) -> dict[str, Any]:
    """Write every config and start BIRD in each speaker's namespace and unbound in the DNS one.
    Returns what the state file records: per netns its BIRD control socket and config, unbound's."""
    bird_dir = state_dir / "bird"
    bird_dir.mkdir(mode=0o700, exist_ok=True)
    birds: dict[str, dict[str, Any]] = {}
    for index, (netns, speaker) in enumerate(bgp.speakers):
        conf, control = bird_dir / f"{index}.conf", bird_dir / f"{index}.ctl"
        conf.write_text(bird_conf(speaker))
        pid = sandbox.spawn(
            netns, ["bird", "-f", "-c", str(conf), "-s", str(control)], state_dir / "logs" / f"bird-{netns}.log"
        )
        birds[netns] = {"conf": str(conf), "control": str(control), "pid": pid, "name": speaker.name}
    dns_dir = state_dir / "edns"
    dns_dir.mkdir(mode=0o700, exist_ok=True)
    conf = dns_dir / "unbound.conf"
    conf.write_text(unbound_conf(OFFICE_HOSTS[ENTERPRISE_DNS], str(dns_dir), list(bgp.forwards), str(dns_dir / "c")))
    pid = sandbox.spawn(NETNS[ENTERPRISE_DNS], ["unbound", "-d", "-c", str(conf)], state_dir / "logs" / "unbound.log")
    return {"bird": birds, "unbound": {"conf": str(conf), "control": str(dns_dir / "c"), "pid": pid}}


def wait_converged(sandbox: Any, bgp: LabBgp, controls: dict[str, str], timeout: float = CONVERGE_TIMEOUT) -> float:
    """Wait until BGP has installed every expected prefix in every namespace; return the seconds
    it took. A timeout names what is missing, with the BGP sessions' states there."""
    started = time.monotonic()
    while True:
        missing: dict[str, list[str]] = {}
        for netns, prefixes in bgp.expected_routes:
            result = sandbox.exec(netns, ["ip", "-4", "route", "show", "proto", "bird"])
            have = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
            lacking = [p for p in prefixes if p not in have]
            if lacking:
                missing[netns] = lacking
        if not missing:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            sessions = [f"{ns}:\n{session_states(sandbox, ns, controls[ns])}" for ns in list(missing)[:3]]
            raise ProviderError(
                f"lab: BGP did not converge within {timeout:.0f}s; routes missing: "
                + "; ".join(f"{ns}: {', '.join(p)}" for ns, p in list(missing.items())[:6])
                + "\n"
                + "\n".join(sessions)
                + "\n    see the bird-*.log files in the state directory's logs/"
            )
        time.sleep(0.05)


def session_states(sandbox: Any, netns: str, control: str) -> str:
    """`birdc show protocols` of one speaker (its BGP sessions and their states)."""
    result = sandbox.exec(netns, ["birdc", "-s", control, "show", "protocols"])
    return str(result.stdout or result.stderr).strip()[-1200:]


def outside_cluster() -> LiveCluster:
    """The office network as the ClusterSet's `outside` entry: its host (the external vantage),
    the switch and the enterprise DNS as its "nodes" (so `crossnet exec office/tor -- birdc ...`
    works); its DNS service is the enterprise DNS."""
    nodes = [
        LiveNode(
            short=OFFICE_HOST, role="external", ip=OFFICE_HOSTS[OFFICE_HOST], pod_cidr="", handle=NETNS[OFFICE_HOST]
        )
    ]
    nodes.append(LiveNode(short=SWITCH, role="switch", ip=SWITCH_IP, pod_cidr="", handle=NETNS[SWITCH]))
    nodes.append(
        LiveNode(
            short=ENTERPRISE_DNS, role="dns", ip=OFFICE_HOSTS[ENTERPRISE_DNS], pod_cidr="", handle=NETNS[ENTERPRISE_DNS]
        )
    )
    return LiveCluster(
        name=OFFICE,
        domain="",
        pod_subnet=str(OFFICE_CIDR),
        service_subnet="",
        nodes=tuple(nodes),
        pods=(),
        services=(),
        dns_service_ip=OFFICE_HOSTS[ENTERPRISE_DNS],
        dns_server_ips=(OFFICE_HOSTS[ENTERPRISE_DNS],),
    )
