"""Plan the lab: turn a declared Topology into namespaces, links, addresses and NAT rules.

Pure functions, no side effects: the provider executes what this plans. Addresses follow kind:
nodes on one underlay network (like docker's `kind` network), a /24 podCIDR per node in node
order, kube-dns at the 10th address of the serviceSubnet.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass, field, replace

from crossnet.globalnet import NOT_EXPORTED_SERVICE, GlobalAllocation, allocate, gateway_node
from crossnet.model import (
    AGENT_PORT,
    CROSSNET_NAMESPACE,
    Cluster,
    Topology,
)
from crossnet.providers.base import SAFE_NAME, ProviderError
from crossnet.providers.lab.neighbours import (
    MAC_BRIDGE,
    MAC_NODE,
    MAC_POD,
    MAC_POD_GATEWAY,
    UNDERLAY_GATEWAY,
    mac_for,
    underlay_neighbours,
)
from crossnet.providers.lab.stock import stock_corefile
from crossnet.workloads import (
    AGENT_POD,
    ECHO_NODE_PORT,
    ECHO_SERVICE,
    HEADLESS_SERVICE,
    external_name_services,
    pod_hostname,
)

__all__ = [
    "UNDERLAY_CIDR",
    "UNDERLAY_NETNS",
    "LabCluster",
    "LabNode",
    "LabPlan",
    "LabPod",
    "LabService",
    "NodeRouting",
    "link_batch",
    "nat_rules",
    "node_script",
    "plan_lab",
    "pod_script",
    "stock_corefile",
    "underlay_script",
]

UNDERLAY_NETNS = "underlay"
LIGHTHOUSE_POD = "lighthouse"
UNDERLAY_CIDR = ipaddress.IPv4Network("172.19.0.0/16")
NODE_PREFIX = 24
DNS_PORT = 53

# Applied in every namespace: forward and answer at once (icmp_ratelimit=0), loose reverse-path
# filtering like kind nodes, and unprivileged ICMP echo sockets for the agent's ICMP probes.
NODE_SYSCTLS = (
    "net.ipv4.ip_forward=1",
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    "net.ipv4.icmp_ratelimit=0",
    "net.ipv4.ping_group_range=0 2147483647",
)
POD_SYSCTLS = (
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    "net.ipv4.icmp_ratelimit=0",
    "net.ipv4.ping_group_range=0 2147483647",
)


@dataclass(frozen=True)
class LabPod:
    name: str  # "agent" or "coredns"
    ip: str
    netns: str
    host_if: str  # veth end in the node namespace


@dataclass(frozen=True)
class LabNode:
    cluster: str
    short: str
    role: str
    ip: str
    pod_cidr: str
    netns: str
    underlay_if: str
    pods: tuple[LabPod, ...]

    @property
    def gateway(self) -> str:
        """The address every pod veth carries on the node side (kindnet/ptp style)."""
        return str(ipaddress.IPv4Network(self.pod_cidr)[1])


@dataclass(frozen=True)
class LabService:
    name: str
    namespace: str
    type: str  # ClusterIP | ExternalName
    cluster_ip: str | None
    ports: tuple[tuple[str, int, int], ...] = ()  # (protocol, port, targetPort)
    endpoints: tuple[tuple[str, str], ...] = ()  # (pod ip, hostname)
    external_name: str | None = None
    node_port: int | None = None  # type NodePort: the same port number for every protocol
    external_ips: tuple[str, ...] = ()  # Globalnet ingress IPs (Submariner's hidden externalIPs Service)


@dataclass(frozen=True)
class LabCluster:
    spec: Cluster
    nodes: tuple[LabNode, ...]
    services: tuple[LabService, ...]
    dns_service_ip: str
    dns_pod: LabPod
    globalnet: LabGlobalnet | None = None


@dataclass(frozen=True)
class LabGlobalnet:
    """Submariner Globalnet in one lab cluster: its allocation, gateway node and peers."""

    allocation: GlobalAllocation
    gateway: str  # short name of the gateway node
    lighthouse_pod: LabPod
    peers: tuple[tuple[str, str], ...]  # (peer global CIDR, peer gateway node IP)


@dataclass(frozen=True)
class LabPlan:
    clusters: tuple[LabCluster, ...] = field(default_factory=tuple)

    def cluster(self, name: str) -> LabCluster:
        for cluster in self.clusters:
            if cluster.spec.name == name:
                return cluster
        raise KeyError(name)

    @property
    def nodes(self) -> tuple[LabNode, ...]:
        return tuple(n for c in self.clusters for n in c.nodes)


def _pod(node_netns: str, cidr: ipaddress.IPv4Network, name: str, offset: int) -> LabPod:
    return LabPod(name=name, ip=str(cidr[offset]), netns=f"{node_netns}.{name}", host_if=f"vp-{name}"[:15])


def _require_safe_names(topology: Topology) -> None:
    """Names become namespace names in `ip -batch` lines and shell scripts run as root: only
    DNS-1123 names pass (config validation refuses the rest earlier, with the file and the fix;
    this guards every other way a Topology can be built)."""
    for cluster in topology.clusters:
        for name in (cluster.name, *(n.short for n in cluster.nodes)):
            if not SAFE_NAME.match(name) or len(name) > 63:
                raise ProviderError(
                    f"lab: {name[:80]!r} is not a DNS-1123 name (lowercase letters, digits, '-'); "
                    "it would reach the lab's commands as root. Fix: rename it in the kind config"
                )


def plan_lab(topology: Topology, global_cidr: str | None = None) -> LabPlan:
    _require_safe_names(topology)
    node_ips = UNDERLAY_CIDR.hosts()
    allocations = {a.cluster: a for a in allocate(topology, global_cidr)} if global_cidr else {}
    next(node_ips)  # .1 is the underlay gateway
    clusters: list[LabCluster] = []
    node_index = 0
    for cluster in topology.clusters:
        node_cidrs = cluster.pod_network.subnets(new_prefix=NODE_PREFIX)
        nodes: list[LabNode] = []
        dns_pod: LabPod | None = None
        for spec in cluster.nodes:
            cidr = next(node_cidrs)
            netns = f"{cluster.name}.{spec.short}"
            pods = [_pod(netns, cidr, AGENT_POD, 2)]
            if dns_pod is None and spec.role == "control-plane":
                dns_pod = _pod(netns, cidr, "coredns", 3)
                pods.append(dns_pod)
                if allocations:  # Lighthouse's DNS server, where clusterset.local is forwarded
                    pods.append(_pod(netns, cidr, LIGHTHOUSE_POD, 4))
            nodes.append(
                LabNode(
                    cluster=cluster.name,
                    short=spec.short,
                    role=spec.role,
                    ip=str(next(node_ips)),
                    pod_cidr=str(cidr),
                    netns=netns,
                    underlay_if=f"u{node_index}",
                    pods=tuple(pods),
                )
            )
            node_index += 1
        assert dns_pod is not None  # config validation guarantees a control-plane
        svc_net = cluster.service_network
        dns_ip = str(svc_net[10])
        agent_eps = tuple((p.ip, pod_hostname(n.short)) for n in nodes for p in n.pods if p.name == AGENT_POD)
        echo_ports = (("tcp", AGENT_PORT, AGENT_PORT), ("udp", AGENT_PORT, AGENT_PORT))
        services = [
            LabService(
                "kube-dns",
                "kube-system",
                "ClusterIP",
                dns_ip,
                (("udp", 53, 53), ("tcp", 53, 53)),
                ((dns_pod.ip, "coredns"),),
            ),
            LabService(
                ECHO_SERVICE,
                CROSSNET_NAMESPACE,
                "NodePort",
                str(svc_net[100]),
                echo_ports,
                agent_eps,
                node_port=ECHO_NODE_PORT,
                external_ips=tuple(allocations[cluster.name].service_ips.values()) if allocations else (),
            ),
            LabService(HEADLESS_SERVICE, CROSSNET_NAMESPACE, "Headless", None, echo_ports, agent_eps),
            LabService(NOT_EXPORTED_SERVICE, CROSSNET_NAMESPACE, "ClusterIP", str(svc_net[101]), echo_ports, agent_eps),
        ]
        for ext in () if allocations else external_name_services(topology):
            if ext.cluster == cluster.name:
                target_domain = topology.cluster(ext.target_cluster).dns_domain
                services.append(
                    LabService(
                        ext.name,
                        CROSSNET_NAMESPACE,
                        "ExternalName",
                        None,
                        external_name=ext.external_name(target_domain),
                    )
                )
        clusters.append(LabCluster(cluster, tuple(nodes), tuple(services), dns_ip, dns_pod))
    if allocations:
        clusters = _with_globalnet(topology, clusters, allocations)
    return LabPlan(tuple(clusters))


def _with_globalnet(
    topology: Topology, clusters: list[LabCluster], allocations: dict[str, GlobalAllocation]
) -> list[LabCluster]:
    gateways = {
        c.spec.name: next(n for n in c.nodes if n.short == gateway_node(topology, c.spec.name)) for c in clusters
    }
    result = []
    for cluster in clusters:
        lighthouse = next(p for n in cluster.nodes for p in n.pods if p.name == LIGHTHOUSE_POD)
        peers = tuple(
            (allocations[c.spec.name].cidr, gateways[c.spec.name].ip)
            for c in clusters
            if c.spec.name != cluster.spec.name
        )
        result.append(
            replace(
                cluster,
                globalnet=LabGlobalnet(
                    allocations[cluster.spec.name], gateways[cluster.spec.name].short, lighthouse, peers
                ),
            )
        )
    return result


def globalnet_batch(cluster: LabCluster, node: LabNode) -> list[str]:
    """Routes to the peers' global CIDRs: through the own gateway, and from it to the peer gateways."""
    if cluster.globalnet is None:
        return []
    gn = cluster.globalnet
    gateway_ip = cluster_node(cluster, gn.gateway).ip
    if node.short == gn.gateway:
        return [f"route add {cidr} via {peer_gateway} dev eth0" for cidr, peer_gateway in gn.peers]
    return [f"route add {cidr} via {gateway_ip} dev eth0" for cidr, _ in gn.peers]


def cluster_node(cluster: LabCluster, short: str) -> LabNode:
    return next(n for n in cluster.nodes if n.short == short)


def submariner_rules(cluster: LabCluster, node: LabNode) -> tuple[list[str], list[str], list[str]]:
    """Submariner's nat chains on a node, named as on a real cluster so evidence reads the same:
    (chains, rules that must come first in PREROUTING/POSTROUTING, the chains' own rules)."""
    if cluster.globalnet is None:
        return [], [], []
    gn = cluster.globalnet
    everything = str(ipaddress.IPv4Network(gn.allocation.cidr).supernet(new_prefix=8))
    chains = ["SUBMARINER-POSTROUTING"]
    first = ["-A POSTROUTING -j SUBMARINER-POSTROUTING"]
    # Remote global sources keep their address: no kube-proxy or kindnet masquerade for them.
    own = [
        f'-A SUBMARINER-POSTROUTING -s {everything} -m comment --comment "submariner: ingress keeps the '
        'remote global egress IP" -j ACCEPT'
    ]
    if node.short == gn.gateway:
        chains += ["SUBMARINER-GN-EGRESS", "SUBMARINER-GN-INGRESS"]
        first.insert(0, "-A PREROUTING -j SUBMARINER-GN-INGRESS")
        egress = gn.allocation.egress_range
        own += [f"-A SUBMARINER-POSTROUTING -d {cidr} -j SUBMARINER-GN-EGRESS" for cidr, _ in gn.peers]
        own.append(f"-A SUBMARINER-GN-EGRESS -s {cluster.spec.pod_subnet} -j SNAT --to-source {egress}")
        own += [f"-A SUBMARINER-GN-EGRESS -s {n.ip}/32 -j SNAT --to-source {egress}" for n in cluster.nodes]
        pods = {host: ip for svc in cluster.services if svc.name == HEADLESS_SERVICE for ip, host in svc.endpoints}
        own += [
            f'-A SUBMARINER-GN-INGRESS -d {gip}/32 -m comment --comment "HeadlessServicePod {host}" '
            f"-j DNAT --to-destination {pods[host]}"
            for host, gip in gn.allocation.pod_ips.items()
        ]
    else:  # to the gateway with the pod's own address: the gateway SNATs
        own += [f"-A SUBMARINER-POSTROUTING -d {cidr} -j ACCEPT" for cidr, _ in gn.peers]
    return chains, first, own


# Polls until no interface but lo is in another operational state than UP (bounded: 3 s).
WAIT_LINKS_UP = (
    "i=0; while ip -o link show | grep -v ': lo:' | grep -qv 'state UP'; do i=$((i+1)); "
    "[ $i -gt 300 ] && { ip -o link show >&2; exit 1; }; sleep 0.01; done"
)


def link_batch(plan: LabPlan) -> str:
    """One `ip -batch` for every namespace and veth pair (one process instead of hundreds)."""
    lines = [f"netns add {UNDERLAY_NETNS}"]
    for node in plan.nodes:
        lines.append(f"netns add {node.netns}")
        lines += [f"netns add {pod.netns}" for pod in node.pods]
    for node in plan.nodes:
        lines.append(
            f"link add name {node.underlay_if} netns {UNDERLAY_NETNS} type veth peer name eth0 netns {node.netns}"
            f" address {mac_for(MAC_NODE, node.ip)}"
        )
        for pod in node.pods:
            lines.append(
                f"link add name {pod.host_if} netns {node.netns} address {mac_for(MAC_POD_GATEWAY, pod.ip)}"
                f" type veth peer name eth0 netns {pod.netns} address {mac_for(MAC_POD, pod.ip)}"
            )
    return "\n".join(lines) + "\n"


def namespace_script(sysctls: tuple[str, ...], batch: list[str], iptables: str = "") -> str:
    assignments = " ".join(f"'{s}'" for s in sysctls)
    # ICMP errors unthrottled (per namespace on Linux >= 6.x; older kernels lack the keys here):
    # a burst of probes to unrouted addresses gets "unreachable" back for each, not a timeout.
    icmp = "sysctl -qw net.ipv4.icmp_msgs_per_sec=1000000 net.ipv4.icmp_msgs_burst=1000000 2>/dev/null || true"
    parts = [f"sysctl -qw {assignments}", icmp, "ip -batch - <<'CROSSNET_EOF'", *batch, "CROSSNET_EOF"]
    if iptables:
        parts += ["iptables-restore -w 5 <<'CROSSNET_EOF'", iptables.rstrip("\n"), "CROSSNET_EOF"]
    return "set -e\n" + "\n".join(parts) + "\n"


def underlay_script(plan: LabPlan, extra: tuple[str, ...] = ()) -> str:
    batch = [
        "link set dev lo up",
        f"link add name br0 address {mac_for(MAC_BRIDGE, UNDERLAY_GATEWAY)} type bridge",
        f"addr add {UNDERLAY_GATEWAY}/{UNDERLAY_CIDR.prefixlen} dev br0",
        "link set dev br0 up",
    ]
    for node in plan.nodes:
        batch += [f"link set dev {node.underlay_if} master br0", f"link set dev {node.underlay_if} up"]
    batch += [*extra, *underlay_neighbours(plan, "br0")]
    # The gateway forwards nothing beyond the underlay: unrouted lab traffic gets "network
    # unreachable" back at once instead of vanishing into a timeout. A REJECT on a default route
    # into a dead-end veth pair, not a missing route: Linux answers a missing route at most 5
    # times per sender, then once a second (net.ipv4.route.error_burst/error_cost, host-wide),
    # which turned concurrent probes of an unrouted address into timeouts.
    batch += ["link add name edge0 type veth peer name edge1", "link set dev edge1 up", "link set dev edge0 up"]
    batch.append("route add default dev edge0")
    reject = "-A FORWARD -o edge0 -j REJECT --reject-with icmp-net-unreachable"
    reject = f"*filter\n:FORWARD ACCEPT [0:0]\n{reject}\nCOMMIT\n"
    return namespace_script(("net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0"), batch, reject)


def pod_script(node: LabNode, pod: LabPod) -> str:
    batch = [
        "link set dev lo up",
        f"addr add {pod.ip}/32 dev eth0",
        "link set dev eth0 up",
        f"route add {node.gateway} dev eth0 scope link",
        f"route add default via {node.gateway} dev eth0 onlink",
        f"neigh replace {node.gateway} lladdr {mac_for(MAC_POD_GATEWAY, pod.ip)} dev eth0 nud permanent",
    ]
    return namespace_script(POD_SYSCTLS, batch)


def node_script(plan: LabPlan, cluster: LabCluster, node: LabNode, bgp: NodeRouting | None = None) -> str:
    """A node's addresses, pod veths, intra-cluster routes and nat rules (plus Globalnet's). With
    `bgp` (Calico): no kindnet routes (BIRD installs them), its default route and its masquerade."""
    batch = [
        "link set dev lo up",
        f"addr add {node.ip}/{UNDERLAY_CIDR.prefixlen} dev eth0",
        "link set dev eth0 up",
        f"route add default via {bgp.default_via if bgp else UNDERLAY_GATEWAY} dev eth0",
        *(bgp.batch if bgp else ()),
        *underlay_neighbours(plan, "eth0", except_ip=node.ip),
    ]
    for pod in node.pods:
        batch += [
            f"addr add {node.gateway}/32 dev {pod.host_if}",
            f"link set dev {pod.host_if} up",
            f"route add {pod.ip}/32 dev {pod.host_if}",
            f"neigh replace {pod.ip} lladdr {mac_for(MAC_POD, pod.ip)} dev {pod.host_if} nud permanent",
        ]
    for other in () if bgp else cluster.nodes:  # kindnet: routes to the other nodes' podCIDRs in the cluster
        if other.short != node.short:
            batch.append(f"route add {other.pod_cidr} via {other.ip} dev eth0")
    nat = nat_rules(cluster, node, bgp.masquerade if bgp else None)
    return namespace_script(NODE_SYSCTLS, batch + globalnet_batch(cluster, node), nat)


@dataclass(frozen=True)
class NodeRouting:
    """How a node is routed when kindnet does not route it (the bgp topology)."""

    default_via: str
    batch: tuple[str, ...] = ()  # more `ip -batch` lines (neighbour entries)
    masquerade: tuple[str, tuple[str, ...]] = ("", ())  # (chain, its nat rules) instead of kindnet's


def _chain(prefix: str, *parts: str) -> str:
    """kube-proxy's chain names: prefix + 16 base32 chars of a sha256."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:16]


def nat_rules(cluster: LabCluster, node: LabNode, masquerade: tuple[str, tuple[str, ...]] | None = None) -> str:
    """kindnet's masquerade agent plus kube-proxy (iptables mode) DNAT for ClusterIP services,
    and, under Globalnet, Submariner's chains (first in PREROUTING/POSTROUTING, as Submariner inserts them)."""
    pod_subnet = cluster.spec.pod_subnet
    sub_chains, sub_first, sub_rules = submariner_rules(cluster, node)
    masq_chain = masquerade[0] if masquerade else "KIND-MASQ-AGENT"
    chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", masq_chain, *sub_chains]
    kindnet = [
        '-A POSTROUTING -m addrtype ! --dst-type LOCAL -m comment --comment "kind-masq-agent: ensure nat '
        'POSTROUTING directs all non-LOCAL destination traffic to our custom KIND-MASQ-AGENT chain" '
        "-j KIND-MASQ-AGENT",
        f'-A KIND-MASQ-AGENT -d {pod_subnet} -m comment --comment "kind-masq-agent: local traffic is not '
        'subject to MASQUERADE" -j RETURN',
        '-A KIND-MASQ-AGENT -m comment --comment "kind-masq-agent: outbound traffic is subject to MASQUERADE '
        '(must be last in chain)" -j MASQUERADE',
    ]
    rules = [
        *sub_first,
        *sub_rules,
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        *(masquerade[1] if masquerade else kindnet),
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        "-A KUBE-POSTROUTING -j MASQUERADE",
    ]
    for svc in cluster.services:
        if svc.cluster_ip is None:
            continue
        for protocol, port, target_port in svc.ports:
            svc_chain = _chain("KUBE-SVC-", svc.namespace, svc.name, protocol, str(port))
            chains.append(svc_chain)
            match = f"-d {svc.cluster_ip}/32 -p {protocol} -m {protocol} --dport {port}"
            comment = f'-m comment --comment "{svc.namespace}/{svc.name}:{protocol}-{port} cluster IP"'
            rules.append(f"-A KUBE-SERVICES {match} {comment} -j {svc_chain}")
            rules.append(f"-A {svc_chain} ! -s {pod_subnet} {match} {comment} -j KUBE-MARK-MASQ")
            if svc.node_port is not None:  # externalTrafficPolicy Cluster: masquerade, then the same endpoints
                ext_chain = _chain("KUBE-EXT-", svc.namespace, svc.name, protocol, str(port))
                chains.append(ext_chain)
                rules.append(
                    f"-A KUBE-NODEPORTS -p {protocol} -m {protocol} --dport {svc.node_port} "
                    f'-m comment --comment "{svc.namespace}/{svc.name}:{protocol}-{port}" -j {ext_chain}'
                )
                rules.append(
                    f'-A {ext_chain} -m comment --comment "masquerade traffic for {svc.namespace}/'
                    f'{svc.name}:{protocol}-{port} external destinations" -j KUBE-MARK-MASQ'
                )
                rules.append(f"-A {ext_chain} -j {svc_chain}")
                for external_ip in svc.external_ips:
                    rules.append(
                        f"-A KUBE-SERVICES -d {external_ip}/32 -p {protocol} -m {protocol} --dport {port} "
                        f'-m comment --comment "{svc.namespace}/{svc.name}:{protocol}-{port} external IP" '
                        f"-j {ext_chain}"
                    )
            count = len(svc.endpoints)
            for index, (ip, _) in enumerate(svc.endpoints):
                sep_chain = _chain("KUBE-SEP-", svc.namespace, svc.name, protocol, str(port), ip)
                chains.append(sep_chain)
                remaining = count - index
                pick = f"-m statistic --mode random --probability {1 / remaining:.11f} " if remaining > 1 else ""
                rules.append(f"-A {svc_chain} {pick}-j {sep_chain}")
                rules.append(f"-A {sep_chain} -s {ip}/32 -j KUBE-MARK-MASQ")
                rules.append(f"-A {sep_chain} -p {protocol} -m {protocol} -j DNAT --to-destination {ip}:{target_port}")
    rules.append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the '
        'last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
    )
    header = ["*nat", *(f":{c} - [0:0]" for c in chains)]
    return "\n".join([*header, *rules, "COMMIT"]) + "\n"
