"""Node facts: the causes behind the matrix's symptoms, checked through testinfra.

`planned_facts` lists, from the configs and the profile alone (so every xdist worker collects the
same), what each node must hold; `check_fact` looks at a live node through the testinfra host its
provider gives (`Provider.node_host`: on the lab a backend running commands in the node's
namespace, on kind testinfra's `docker://` backend). Failure evidence is crossnet.evidence.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any

from testinfra.host import Host

from crossnet import facts_bgp
from crossnet.globalnet import CLUSTERSET_DOMAIN, gateway_node
from crossnet.lifecycle import Run
from crossnet.model import ClusterSet, Topology
from crossnet.plumbing.corefile import CorefileError, parse_corefile
from crossnet.plumbing.routes import service_gateway
from crossnet.profile import BgpPlumbing, Profile
from crossnet.providers.base import ProviderError
from crossnet.workloads import ECHO_SERVICE

__all__ = [
    "FactResult",
    "NodeFact",
    "check_fact",
    "dns_server_ips_now",
    "node_host",
    "planned_facts",
    "reading_once",
    "route_text",
]


def node_host(run: Run, cluster: str, node: str) -> Host:
    """The testinfra host of a node, as its provider gives it."""
    host: Host = run.provider.node_host(cluster, node)
    return host


class _RememberingBackend:
    """A testinfra backend that runs each distinct command once and answers it again from memory."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._answers: dict[tuple[str, tuple[str, ...]], Any] = {}

    def run(self, command: str, *args: str, **kwargs: Any) -> Any:
        key = (command, args)
        if key not in self._answers:
            self._answers[key] = self._backend.run(command, *args, **kwargs)
        return self._answers[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def reading_once(host: Host) -> Host:
    """`host` for one pass over a node's facts: a node's state is read once (its routing table,
    each sysctl, each iptables chain) and every fact of the node judged from that reading. (A
    command per fact cost ~9 ms on an idle lab and ~100 ms beside a 4 x 8 matrix's probing: 908
    facts took 90 s.) Not for evidence, which must be read when a cell fails."""
    return Host(_RememberingBackend(host.backend))


@dataclass(frozen=True)
class NodeFact:
    """One thing a node (or, with node "", a cluster) must hold. `subject` names what it is about
    in topology terms (a peer node, a peer cluster, a Service, a DNS zone) and is part of the id;
    `detail` carries a planned value that is not (the profile's rp_filter)."""

    cluster: str
    node: str  # "" for a cluster-wide fact (the Corefile)
    kind: str
    subject: str = ""
    detail: str = ""
    observe: bool = False  # plumbing none: report what is there; fail only what is broken (not part of the id)

    @property
    def id(self) -> str:
        where = f"{self.cluster}/{self.node}" if self.node else self.cluster
        return f"{where}:{self.kind}" + (f":{self.subject}" if self.subject else "")


@dataclass(frozen=True)
class FactResult:
    ok: bool
    expected: str
    observed: str


def planned_facts(topology: Topology, profile: Profile, plumbing_mode: str = "inject") -> list[NodeFact]:
    """What each node must hold. Under `plumbing_mode` "none" (clusters somebody else joined)
    crossnet injected nothing, so its own routes, masquerade exceptions and Corefile forwards are
    no requirement: the facts report what is there (see `_observed`) and fail only what is broken."""
    facts: list[NodeFact] = []
    plumbing = profile.plumbing
    if plumbing.global_cidr is not None:
        planned = _globalnet_facts(topology, plumbing.rp_filter)
        if plumbing_mode != "none":
            return planned
        return [replace(f, observe=True) if f.kind == "corefile-forward" else f for f in planned]
    if plumbing.bgp is not None:
        return sorted(facts_bgp.planned_bgp_facts(topology, plumbing.bgp, NodeFact), key=lambda f: f.id)
    if plumbing_mode == "none":
        return _observed_facts(topology, plumbing.service_routes)
    for cluster in topology.clusters:
        peers = topology.peers_of(cluster.name)
        for node in cluster.nodes:
            facts += [
                NodeFact(cluster.name, node.short, "ip_forward"),
                NodeFact(cluster.name, node.short, "rp_filter", detail=str(plumbing.rp_filter)),
                NodeFact(cluster.name, node.short, "masquerade"),
                NodeFact(cluster.name, node.short, "service-dnat", ECHO_SERVICE),
            ]
            for peer in peers:
                facts += [NodeFact(cluster.name, node.short, "route-to", f"{peer.name}/{n.short}") for n in peer.nodes]
                if plumbing.service_routes:
                    facts.append(NodeFact(cluster.name, node.short, "service-route-to", peer.name))
                if not plumbing.masquerade_to_peer_pods:
                    facts.append(NodeFact(cluster.name, node.short, "no-masquerade-to", peer.name))
        facts += [NodeFact(cluster.name, "", "corefile-forward", peer.dns_domain) for peer in peers]
    return sorted(facts, key=lambda f: f.id)


def _observed_facts(topology: Topology, service_routes: bool) -> list[NodeFact]:
    """Under plumbing none: per node ip_forward (a node that forwards pods' traffic needs it), the
    way to every peer node's pods (and to each peer's services when the profile routes them),
    rp_filter, the masquerade rules and kube-proxy's rules for echo as they are; per cluster the
    Corefile's forward targets for each peer domain."""
    facts: list[NodeFact] = []
    for cluster in topology.clusters:
        peers = topology.peers_of(cluster.name)
        for node in cluster.nodes:
            facts.append(NodeFact(cluster.name, node.short, "ip_forward"))
            facts += [
                NodeFact(cluster.name, node.short, kind, subject, observe=True)
                for kind, subject in (("rp_filter", ""), ("masquerade", ""), ("service-dnat", ECHO_SERVICE))
            ]
            for peer in peers:
                facts += [
                    NodeFact(cluster.name, node.short, "route-to", f"{peer.name}/{n.short}", observe=True)
                    for n in peer.nodes
                ]
                if service_routes:
                    facts.append(NodeFact(cluster.name, node.short, "service-route-to", peer.name, observe=True))
        facts += [NodeFact(cluster.name, "", "corefile-forward", peer.dns_domain, observe=True) for peer in peers]
    return sorted(facts, key=lambda f: f.id)


def _globalnet_facts(topology: Topology, rp_filter: int) -> list[NodeFact]:
    """Under Globalnet: routes to each peer's global CIDR (through the own gateway, and from the
    gateway to the peer's), the gateway's egress SNAT, and the clusterset.local forward."""
    facts: list[NodeFact] = []
    for cluster in topology.clusters:
        gateway = gateway_node(topology, cluster.name)
        for node in cluster.nodes:
            facts += [
                NodeFact(cluster.name, node.short, "ip_forward"),
                NodeFact(cluster.name, node.short, "rp_filter", detail=str(rp_filter)),
            ]
            facts += [
                NodeFact(cluster.name, node.short, "global-route-to", peer.name)
                for peer in topology.peers_of(cluster.name)
            ]
            if node.short == gateway:
                facts.append(NodeFact(cluster.name, node.short, "global-egress"))
        facts.append(NodeFact(cluster.name, "", "corefile-forward", CLUSTERSET_DOMAIN))
    return sorted(facts, key=lambda f: f.id)


def _live_gateway(cs: ClusterSet, cluster: str) -> str:
    nodes = cs.cluster(cluster).nodes
    return next((n for n in nodes if n.role == "worker"), nodes[0]).short


def _planned_route(cs: ClusterSet, fact: NodeFact) -> tuple[str, str]:
    """(destination, next hop) of a route fact, from the live addresses."""
    if fact.kind == "route-to":
        peer_name, peer_node = fact.subject.split("/")
        node = cs.cluster(peer_name).node(peer_node)
        return node.pod_cidr, node.ip
    if fact.kind == "service-route-to":  # via the peer's gateway: its control-plane (plumbing.routes)
        return cs.cluster(fact.subject).service_subnet, service_gateway(cs, fact.subject)
    own_gateway = _live_gateway(cs, fact.cluster)  # global-route-to: via the own gateway, or from it to the peer's
    peer = cs.cluster(fact.subject)
    if fact.node == own_gateway:
        return peer.global_cidr, peer.node(_live_gateway(cs, peer.name)).ip
    return peer.global_cidr, cs.cluster(fact.cluster).node(own_gateway).ip


def _sysctl(host: Host, key: str) -> int:
    return int(host.sysctl(key))


def _routes(host: Host, destination: str) -> list[dict[str, Any]]:
    """The routes of the main table for exactly `destination` (as `ip route show PREFIX`), picked
    from one reading of the whole table (`ip` writes a host route without its /32)."""
    import json

    out = host.run("ip -j route show table main")
    wanted = ipaddress.ip_network(destination, strict=False)
    found = []
    for route in json.loads(out.stdout or "[]") if out.rc == 0 else []:
        try:
            if ipaddress.ip_network(str(route.get("dst")), strict=False) == wanted:
                found.append({**route, "dst": destination})
        except ValueError:  # "default" and the like: never a planned destination
            continue
    return found


def _unicast(route: dict[str, Any]) -> bool:
    return str(route.get("type", "unicast")) == "unicast"


def route_text(route: dict[str, Any]) -> str:
    """A route of `ip -j route` as a fact shows it, keeping its type: `route 10.20.2.0/24 via
    172.19.0.7`, `route 10.20.2.0/24 dev eth0`, or `blackhole route 10.20.2.0/24` (unreachable,
    prohibit, throw: what the kernel does instead of forwarding), never "via None"."""
    dst = route.get("dst", "?")
    if not _unicast(route):
        return f"{route.get('type')} route {dst}"
    if route.get("gateway"):
        return f"route {dst} via {route['gateway']}"
    return f"route {dst}" + (f" dev {route['dev']}" if route.get("dev") else " (no next hop)")


def _masq_rules(host: Host) -> list[str]:
    return list(host.iptables.rules("nat", "KIND-MASQ-AGENT"))


def check_fact(host: Host, fact: NodeFact, run: Run, profile: Profile | None = None) -> FactResult:
    """Look at one planned fact on the live node, with the live addresses of `run`. `profile` is
    only needed for a fact made without planned_facts (an rp_filter fact with no `detail`)."""
    cs = run.cluster_set
    if fact.observe:
        return _observed(host, fact, run)
    if fact.kind in facts_bgp.KINDS:
        bgp = profile.plumbing.bgp if profile is not None else None
        return FactResult(*facts_bgp.check_bgp_fact(host, fact, run, bgp or BgpPlumbing()))
    if fact.kind == "ip_forward":
        value = _sysctl(host, "net.ipv4.ip_forward")
        return FactResult(value == 1, "net.ipv4.ip_forward = 1", f"net.ipv4.ip_forward = {value}")
    if fact.kind == "rp_filter":
        values = [_sysctl(host, f"net.ipv4.conf.{i}.rp_filter") for i in ("all", "default")]
        want = int(fact.detail) if fact.detail else (profile.plumbing.rp_filter if profile else 0)
        return FactResult(
            values == [want, want],
            f"rp_filter all/default = {want}/{want}",
            f"rp_filter all/default = {values[0]}/{values[1]}",
        )
    if fact.kind in ("route-to", "service-route-to", "global-route-to"):
        destination, via = _planned_route(cs, fact)
        routes = _routes(host, destination)
        seen = ", ".join(route_text(r) for r in routes)
        if not seen:  # say where the traffic goes instead (usually the default route, off the node network)
            taken = host.run(f"ip route get {destination.split('/')[0]}")
            way = " ".join(taken.stdout.split(" uid ")[0].split())  # "<dst> via <gw> dev <if> src <ip>"
            seen = "no route" + (f" (it would take: {way})" if taken.rc == 0 and way else "")
        ok = any(r.get("dst") == destination and r.get("gateway") == via and _unicast(r) for r in routes)
        return FactResult(ok, f"route {destination} via {via}", seen)
    if fact.kind == "global-egress":
        live = cs.cluster(fact.cluster)
        snat = f"-s {live.pod_subnet} -j SNAT --to-source {live.global_egress[0]}-{live.global_egress[-1]}"
        rules = list(host.iptables.rules("nat", "SUBMARINER-GN-EGRESS"))
        return FactResult(
            any(snat in r for r in rules), f"SUBMARINER-GN-EGRESS: {snat}", "; ".join(rules) or "no chain"
        )
    if fact.kind == "masquerade":
        rules = _masq_rules(host)
        own = cs.cluster(fact.cluster).pod_subnet
        returns = [r for r in rules if f"-d {own}" in r and r.endswith("-j RETURN")]
        masq = [i for i, r in enumerate(rules) if r.endswith("-j MASQUERADE")]
        jump = [r for r in host.iptables.rules("nat", "POSTROUTING") if r.endswith("-j KIND-MASQ-AGENT")]
        ok = bool(returns) and bool(masq) and rules.index(returns[0]) < masq[-1] and bool(jump)
        observed = "; ".join(rules) or "no chain"
        return FactResult(
            ok,
            f"POSTROUTING -j KIND-MASQ-AGENT; KIND-MASQ-AGENT: RETURN for {own}, then MASQUERADE",
            observed if jump else f"no POSTROUTING jump to KIND-MASQ-AGENT; {observed}",
        )
    if fact.kind == "no-masquerade-to":
        rules = _masq_rules(host)
        peer_subnet = cs.cluster(fact.subject).pod_subnet
        ret = [i for i, r in enumerate(rules) if f"-d {peer_subnet}" in r and r.endswith("-j RETURN")]
        masq = [i for i, r in enumerate(rules) if r.endswith("-j MASQUERADE")]
        ok = bool(ret) and bool(masq) and ret[0] < masq[-1]
        return FactResult(
            ok, f"KIND-MASQ-AGENT: RETURN for {peer_subnet} before MASQUERADE", "; ".join(rules) or "no chain"
        )
    if fact.kind == "service-dnat":
        service = cs.cluster(fact.cluster).service(fact.subject, cs.namespace)
        rules = list(host.iptables.rules("nat", "KUBE-SERVICES"))
        hits = [r for r in rules if f"-d {service.cluster_ip}/32" in r and "-j KUBE-SVC-" in r]
        return FactResult(
            len(hits) >= 2,
            f"KUBE-SERVICES jumps for {service.cluster_ip} (tcp and udp)",
            f"{len(hits)} rule(s)" + (f": {hits[0]}" if hits else ""),
        )
    if fact.kind == "corefile-forward":
        return _corefile_fact(run, fact)
    raise ProviderError(f"unknown node fact {fact.kind}")


def dns_server_ips_now(run: Run, cluster: str) -> tuple[tuple[str, ...], str]:
    """The DNS server pod IPs of `cluster` as they are now, and where they come from: a provider
    that can list them live (`dns_server_ips_now(cluster)`: the lab; the API server's kube-dns
    pods through `kube(cluster)`: kind) is asked; otherwise the IPs recorded at `crossnet up`, and
    the source says so (a restarted CoreDNS pod gets a new IP that a forward must follow)."""
    provider = run.provider
    live = getattr(provider, "dns_server_ips_now", None)
    if callable(live):
        return tuple(sorted(str(ip) for ip in live(cluster))), "now"
    kube = getattr(provider, "kube", None)
    if callable(kube):
        pods = kube(cluster).pods("kube-system", "k8s-app=kube-dns")
        return tuple(sorted(str(p.ip) for p in pods if getattr(p, "ip", ""))), "now"
    return tuple(sorted(run.cluster_set.cluster(cluster).dns_server_ips)), "as recorded at crossnet up"


def _corefile_fact(run: Run, fact: NodeFact) -> FactResult:
    cs = run.cluster_set
    source = ""
    if fact.subject == CLUSTERSET_DOMAIN:
        want = sorted(cs.cluster(fact.cluster).clusterset_dns_ips)
    else:
        peer = next((c for c in cs.clusters if c.domain == fact.subject), None)
        if peer is None:
            raise ProviderError(f"{fact.id}: no cluster of this run serves {fact.subject}")
        try:
            now, source = dns_server_ips_now(run, peer.name)
        except Exception as exc:  # noqa: BLE001 - the fact fails, saying why, instead of crashing the suite
            return FactResult(
                False,
                f"{fact.subject}: forward . (the DNS pod IPs of {peer.name} now)",
                f"could not list {peer.name}'s DNS pods now: {exc.__class__.__name__}: {exc}",
            )
        want = list(now)
        source = "" if source == "now" else f" ({peer.name}'s DNS pods {source})"
    expected = f"{fact.subject}: forward . {' '.join(want) or '(no DNS pod)'}{source}"
    try:
        corefile = parse_corefile(run.provider.read_corefile(fact.cluster), f"{fact.cluster} Corefile")
    except CorefileError as exc:
        return FactResult(False, f"a server block for {expected}", str(exc))
    block = corefile.server_for_zone(fact.subject)
    if block is None:
        return FactResult(False, f"a server block for {expected}", "no server block for that zone")
    forwards = [d for d in block.plugins("forward")]
    targets = sorted(a.split(":")[0] for d in forwards for a in d.args[1:])
    return FactResult(
        bool(want) and targets == want, expected, f"{fact.subject}: forward . {' '.join(targets) or '(none)'}"
    )


OBSERVED = "as the cluster has it: observed, not required (plumbing none: crossnet set nothing)"
_KERNEL_DROPS = ("blackhole", "unreachable", "prohibit", "throw")


def _observed(host: Host, fact: NodeFact, run: Run) -> FactResult:
    """A fact under plumbing none: what is there, with its value; not ok only when it is broken
    (the kernel has no way to a peer's pods, a forward into the clusters' networks that is not the
    peer's DNS)."""
    cs = run.cluster_set
    if fact.kind == "corefile-forward":
        return _observed_corefile(run, fact)
    if fact.kind == "rp_filter":
        values = [_sysctl(host, f"net.ipv4.conf.{i}.rp_filter") for i in ("all", "default")]
        return FactResult(True, f"rp_filter all/default {OBSERVED}", f"rp_filter all/default = {values[0]}/{values[1]}")
    if fact.kind == "masquerade":
        rules = [r for r in host.iptables.rules("nat", "POSTROUTING") if r != "-P POSTROUTING ACCEPT"]
        return FactResult(True, f"nat POSTROUTING {OBSERVED}", "; ".join(rules)[:1000] or "no rule")
    if fact.kind == "service-dnat":
        service = cs.cluster(fact.cluster).service(fact.subject, cs.namespace)
        rules = list(host.iptables.rules("nat", "KUBE-SERVICES"))
        hits = [r for r in rules if f"-d {service.cluster_ip}/32" in r]
        return FactResult(
            True,
            f"kube-proxy's iptables rules for {service.cluster_ip} {OBSERVED}; ipvs, nftables or eBPF keep none here",
            f"{len(hits)} KUBE-SERVICES rule(s)" + (f": {hits[0]}" if hits else ""),
        )
    if fact.kind in ("route-to", "service-route-to"):
        destination, _ = _planned_route(cs, fact)
        network = ipaddress.ip_network(destination, strict=False)
        address = network[1] if network.num_addresses > 2 else network[0]
        what = "pods" if fact.kind == "route-to" else "services"
        expected = f"a way to {destination} ({fact.subject}'s {what}): any route the kernel takes, {OBSERVED}"
        taken = host.run(f"ip route get {address}")
        way = " ".join(taken.stdout.split(" uid ")[0].split())
        if taken.rc != 0 or way.startswith(_KERNEL_DROPS):
            return FactResult(False, expected, f"the kernel drops it: {(way or taken.stderr).strip()[:300]}")
        return FactResult(True, expected, way or "(ip route get said nothing)")
    raise ProviderError(f"{fact.id}: no observed form of a {fact.kind} fact")


def _observed_corefile(run: Run, fact: NodeFact) -> FactResult:
    """The forward targets of the zone's server block as they are. No block is no fault (a vendor
    may serve peer names another way: Lighthouse, ClusterMesh, an enterprise DNS; the dns suite says
    whether they resolve). A target inside the clusters' networks that is neither the peer's DNS
    pods now nor its DNS Service is: a stale pod IP, another cluster's DNS, a loop."""
    cs = run.cluster_set
    if fact.subject == CLUSTERSET_DOMAIN:
        peers = [c for c in cs.clusters if c.name != fact.cluster]
        want = {ip for c in cs.clusters if c.name == fact.cluster for ip in c.clusterset_dns_ips}
        owner = "the clusterset DNS"
    else:
        peers = [c for c in cs.clusters if c.domain == fact.subject]
        if not peers:
            raise ProviderError(f"{fact.id}: no cluster of this run serves {fact.subject}")
        owner = f"{peers[0].name}'s DNS"
        try:
            want = set(dns_server_ips_now(run, peers[0].name)[0])
        except Exception as exc:  # noqa: BLE001 - reported, not judged
            want = set()
            owner += f" (its pods could not be listed now: {exc.__class__.__name__})"
    want |= {c.dns_service_ip for c in peers if c.dns_service_ip}
    expected = f"{fact.subject}: the forward targets {OBSERVED}; any into the clusters' networks go to {owner}"
    try:
        corefile = parse_corefile(run.provider.read_corefile(fact.cluster), f"{fact.cluster} Corefile")
    except CorefileError as exc:
        return FactResult(True, expected, f"not read: {exc}")
    block = corefile.server_for_zone(fact.subject)
    if block is None:
        return FactResult(True, expected, f"no server block for {fact.subject} (its names resolve another way, or not)")
    targets = [a.split(":")[0] for d in block.plugins("forward") for a in d.args[1:]]
    networks = [
        ipaddress.ip_network(n, strict=False)
        for c in cs.clusters
        for n in (c.pod_subnet, c.service_subnet, *(node.pod_cidr for node in c.nodes))
        if _is_network(n)
    ]
    wrong = [t for t in targets if t not in want and _is_ip(t) and any(ipaddress.ip_address(t) in n for n in networks)]
    seen = f"{fact.subject}: forward . {' '.join(targets) or '(none)'}"
    if wrong:
        now = " ".join(sorted(want)) or "none"
        return FactResult(False, expected, f"{seen}: {', '.join(wrong)} is not {owner} now ({now})")
    return FactResult(True, expected, seen)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
