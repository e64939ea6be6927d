"""Build the cells of each suite (from configs + profile only), turn them into probes (with the
live addresses), and judge observations. Probes report; this module judges."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from crossnet.globalnet import CLUSTERSET_DOMAIN, NOT_EXPORTED_SERVICE
from crossnet.model import (
    AGENT_PORT,
    NS_PLACEHOLDER,
    Cell,
    ClusterSet,
    Judgement,
    Observation,
    Probe,
    Protocol,
    Scope,
    Target,
    Topology,
    Vantage,
    VantageKind,
)
from crossnet.profile import Profile
from crossnet.workloads import (
    ECHO_SERVICE,
    HEADLESS_SERVICE,
    NONEXISTENT_SERVICE,
    agent_id,
    external_name_services,
    pod_hostname,
)

__all__ = ["SUITES", "LiveCell", "build_cells", "cell_facts", "judge", "live_cell", "search_list"]

SUITES = ("pod-to-pod", "dns", "service", "globalnet", "snat")
POD_PROTOCOLS: tuple[Protocol, ...] = ("tcp", "udp", "icmp")
LARGE_PAYLOAD = 1400  # bytes of echo payload: near the 1500-byte path MTU, so a black hole shows
DNS_PROTOCOLS: tuple[Protocol, ...] = ("dns-udp", "dns-tcp")
SERVICE_PROTOCOLS: tuple[Protocol, ...] = ("tcp", "udp")
VANTAGE_KINDS: tuple[VantageKind, ...] = ("pod", "host")
SNAT_TARGETS = frozenset({"pod-ip", "headless", "cluster-ip", "node-port", "global-ip", "dns-name"})


def cell_facts(cell: Cell) -> dict[str, str]:
    """What a profile rule can match on."""
    facts = {"suite": cell.suite, "vantage": cell.vantage.kind, "target": cell.target.kind,
             "protocol": cell.probe.protocol, "scope": cell.scope, "src_cluster": cell.vantage.cluster,
             "dst_cluster": cell.target.cluster, "size": "large" if cell.probe.payload else "small"}
    if cell.target.form:
        facts["form"] = cell.target.form
    return facts


def _scope(vantage: Vantage, cluster: str, node: str = "") -> Scope:
    if vantage.cluster != cluster:
        return "peer-cluster"
    return "same-node" if vantage.node == node else "same-cluster"


def _decided(profile: Profile, suite: str, vantage: Vantage, target: Target, probe: Probe, scope: Scope) -> Cell:
    draft = Cell(suite, vantage, target, probe, profile.defaults.expectation(), scope)
    return Cell(suite, vantage, target, probe, profile.decide(cell_facts(draft)), scope)


def _vantages(topology: Topology, kinds: Sequence[VantageKind] = VANTAGE_KINDS) -> list[Vantage]:
    return [Vantage(c.name, n.short, kind) for c in topology.clusters for n in c.nodes for kind in kinds]


def _pod_to_pod(topology: Topology, profile: Profile) -> list[Cell]:
    probes = [Probe(p) for p in POD_PROTOCOLS] + [Probe(p, payload=LARGE_PAYLOAD) for p in SERVICE_PROTOCOLS]
    cells = []
    for vantage in _vantages(topology):
        for dst in topology.clusters:
            for dst_node in dst.nodes:
                target = Target(dst.name, "pod-ip", node=dst_node.short)
                scope = _scope(vantage, dst.name, dst_node.short)
                cells += [_decided(profile, "pod-to-pod", vantage, target, probe, scope) for probe in probes]
    return cells


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
            Target(peer.name, "dns-name", service=NONEXISTENT_SERVICE, form="nxdomain", expect_nxdomain=True,
                   name=f"{NONEXISTENT_SERVICE}.{NS_PLACEHOLDER}.svc.{peer.dns_domain}"),
        ]
    for ext in external_name_services(topology):
        domain = topology.cluster(ext.cluster).dns_domain
        targets.append(Target(ext.cluster, "dns-name", service=ext.name, form="external-name",
                              name=f"{ext.name}.{NS_PLACEHOLDER}.svc.{domain}"))
    return targets


def _dns(topology: Topology, profile: Profile) -> list[Cell]:
    cells = []
    for vantage in _vantages(topology, ("pod",)):
        for target in _dns_targets(topology, vantage.cluster):
            scope = _scope(vantage, target.cluster)
            cells += [_decided(profile, "dns", vantage, target, Probe(p, port=53), scope) for p in DNS_PROTOCOLS]
            if target.form == "full" and target.service == ECHO_SERVICE:  # a query padded to near the MTU
                cells += [_decided(profile, "dns", vantage, target, Probe(p, port=53, payload=LARGE_PAYLOAD), scope)
                          for p in DNS_PROTOCOLS]
    return cells


def _service_targets(topology: Topology) -> list[tuple[Target, tuple[Protocol, ...]]]:
    targets: list[tuple[Target, tuple[Protocol, ...]]] = []
    for cluster in topology.clusters:
        targets.append((Target(cluster.name, "cluster-ip", service=ECHO_SERVICE), SERVICE_PROTOCOLS))
        headless = f"{HEADLESS_SERVICE}.{NS_PLACEHOLDER}.svc.{cluster.dns_domain}"
        targets.append((Target(cluster.name, "dns-name", service=HEADLESS_SERVICE, form="headless", name=headless),
                        ("dns-udp",)))
        for node in cluster.nodes:
            targets.append((Target(cluster.name, "node-port", node=node.short, service=ECHO_SERVICE),
                            SERVICE_PROTOCOLS))
            targets.append((Target(cluster.name, "headless", node=node.short, service=HEADLESS_SERVICE,
                                   name=f"{pod_hostname(node.short)}.{headless}"), ("tcp",)))
    for ext in external_name_services(topology):
        # Connecting through the ExternalName reaches the cluster it points to.
        domain = topology.cluster(ext.cluster).dns_domain
        targets.append((Target(ext.target_cluster, "dns-name", service=ext.name, form="external-name",
                               name=f"{ext.name}.{NS_PLACEHOLDER}.svc.{domain}"), ("tcp",)))
    return targets


def _service(topology: Topology, profile: Profile) -> list[Cell]:
    cells = []
    targets = _service_targets(topology)
    for vantage in _vantages(topology):
        for target, protocols in targets:
            scope = _scope(vantage, target.cluster, target.node)
            cells += [_decided(profile, "service", vantage, target, Probe(p), scope) for p in protocols]
    return cells


def _globalnet(topology: Topology, profile: Profile) -> list[Cell]:
    """From the pod and host of every node of every cluster to every other cluster's exported
    Services through Globalnet: clusterset names (resolved, then connected), global ingress IPs,
    per-pod names of the exported headless Service, a non-exported name (NXDOMAIN), and the
    peer's direct pod IP and ClusterIP, which are the sender's own CIDR and must not leak across."""
    cells = []
    svc = f"{ECHO_SERVICE}.{NS_PLACEHOLDER}.svc.{CLUSTERSET_DOMAIN}"
    for vantage in _vantages(topology):
        own = vantage.cluster
        targets: list[tuple[Target, tuple[Protocol, ...]]] = [
            (Target(own, "dns-name", service=ECHO_SERVICE, name=svc, form="clusterset"), DNS_PROTOCOLS),
            (Target(own, "dns-name", service=NOT_EXPORTED_SERVICE, form="nxdomain", expect_nxdomain=True,
                    name=f"{NOT_EXPORTED_SERVICE}.{NS_PLACEHOLDER}.svc.{CLUSTERSET_DOMAIN}"), ("dns-udp",)),
        ]
        for peer in topology.peers_of(own):
            by_cluster = f"{peer.name}.{svc}"
            targets += [
                (Target(peer.name, "dns-name", service=ECHO_SERVICE, name=by_cluster, form="cluster.clusterset"),
                 (*DNS_PROTOCOLS, *SERVICE_PROTOCOLS)),
                (Target(peer.name, "global-ip", service=ECHO_SERVICE), SERVICE_PROTOCOLS),
                (Target(peer.name, "cluster-ip", service=ECHO_SERVICE), ("tcp",)),
            ]
            headless = f"{peer.name}.{HEADLESS_SERVICE}.{NS_PLACEHOLDER}.svc.{CLUSTERSET_DOMAIN}"
            for node in peer.nodes:
                name = f"{pod_hostname(node.short)}.{headless}"
                targets += [
                    (Target(peer.name, "dns-name", node=node.short, service=HEADLESS_SERVICE, name=name,
                            form="pod.cluster.clusterset"), ("dns-udp",)),
                    (Target(peer.name, "headless", node=node.short, service=HEADLESS_SERVICE, name=name,
                            form="pod.cluster.clusterset"), ("tcp",)),
                    (Target(peer.name, "pod-ip", node=node.short), ("tcp",)),
                ]
        for target, protocols in targets:
            scope = _scope(vantage, target.cluster, target.node)
            cells += [_decided(profile, "globalnet", vantage, target, Probe(p), scope) for p in protocols]
    return cells


def _for_setup(builder: Callable[[Topology, Profile], list[Cell]], globalnet: bool) -> Callable[..., list[Cell]]:
    """Routed-cluster suites ask nothing under Globalnet, and the Globalnet suite nothing without it."""
    def build(topology: Topology, profile: Profile) -> list[Cell]:
        return builder(topology, profile) if (profile.plumbing.global_cidr is not None) == globalnet else []
    return build


def _snat(topology: Topology, profile: Profile) -> list[Cell]:
    """The source IP of every path the other suites expect to reach over tcp/udp, wherever the
    profile says what the target should see (source: any is not a question worth a cell)."""
    cells = []
    origins = (_globalnet(topology, profile) if profile.plumbing.global_cidr is not None
               else _pod_to_pod(topology, profile) + _service(topology, profile))
    for origin in origins:
        if (origin.expectation.reachable != "yes" or origin.probe.protocol not in SERVICE_PROTOCOLS
                or origin.probe.payload or origin.target.kind not in SNAT_TARGETS):
            continue
        cell = _decided(profile, "snat", origin.vantage, origin.target, origin.probe, origin.scope)
        if cell.expectation.source != "any":
            cells.append(cell)
    return cells


BUILDERS = {"pod-to-pod": _for_setup(_pod_to_pod, False), "dns": _for_setup(_dns, False),
            "service": _for_setup(_service, False), "globalnet": _for_setup(_globalnet, True), "snat": _snat}


def build_cells(topology: Topology, profile: Profile, suites: Iterable[str] = SUITES) -> list[Cell]:
    """Every cell of the given suites, sorted by id: the same on every xdist worker."""
    cells = [cell for suite in suites for cell in BUILDERS[suite](topology, profile)]
    return sorted(cells, key=lambda c: (c.suite, c.id))


# --------------------------------------------------------------------------- live addresses


def search_list(namespace: str, domain: str) -> list[str]:
    """A pod's resolv.conf search list (kubelet): <ns>.svc.<domain> svc.<domain> <domain>."""
    return [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]


@dataclass(frozen=True)
class LiveCell:
    """A cell with the addresses of this run: who probes, what, and what counts as the answer."""

    cell: Cell
    agent: str
    src_ip: str
    node_ip: str
    dst_addr: str
    probe: dict[str, object]
    expected_answers: tuple[str, ...] = ()
    repro: str = ""
    global_egress: tuple[str, ...] = ()  # the sender cluster's Globalnet egress IPs
    global_ip: str = ""  # under Globalnet: the target's global ingress IP


    @property
    def probe_key(self) -> str:
        """Two cells with the same key run the same probe (the SNAT suite reuses observations)."""
        return json.dumps({k: v for k, v in self.probe.items() if k != "id"} | {"agent": self.agent}, sort_keys=True)


def _agents_of(cluster_set: ClusterSet, cluster: str) -> list[str]:
    return [pod.agent for pod in cluster_set.cluster(cluster).pods]


def live_cell(cell: Cell, cluster_set: ClusterSet, timeout: float) -> LiveCell:
    src_cluster = cluster_set.cluster(cell.vantage.cluster)
    src_node = src_cluster.node(cell.vantage.node)
    src_ip = src_cluster.pod_on(src_node.short).ip if cell.vantage.kind == "pod" else src_node.ip
    agent = agent_id(cell.vantage.cluster, cell.vantage.node, cell.vantage.kind)
    exec_target = "/".join(agent.split("/")[:2] + (["agent"] if cell.vantage.kind == "pod" else []))
    protocol = cell.probe.protocol
    target = cell.target
    probe: dict[str, object] = {"id": cell.id, "protocol": protocol, "timeout": timeout,
                                "payload": cell.probe.payload}
    expected: tuple[str, ...] = ()
    port = AGENT_PORT
    search = search_list(cluster_set.namespace, src_cluster.domain)
    by_name = target.kind in ("dns-name", "headless")
    name = cluster_set.name(target.name)
    if target.kind == "pod-ip":
        dst_pod = cluster_set.cluster(target.cluster).pod_on(target.node)
        dst, agents = dst_pod.ip, [dst_pod.agent]
    elif target.kind == "cluster-ip":
        service = cluster_set.cluster(target.cluster).service(target.service, cluster_set.namespace)
        dst, agents = str(service.cluster_ip), _agents_of(cluster_set, target.cluster)
    elif target.kind == "global-ip":
        dst, agents = cluster_set.cluster(target.cluster).global_ip(f"svc/{target.service}"), \
            _agents_of(cluster_set, target.cluster)
    elif target.kind == "node-port":
        owner = cluster_set.cluster(target.cluster)
        dst, agents = owner.node(target.node).ip, _agents_of(cluster_set, target.cluster)
        port = int(owner.service(target.service, cluster_set.namespace).node_port or 0)
    elif target.kind == "headless":
        dst, agents = name, [cluster_set.cluster(target.cluster).pod_on(target.node).agent]
    else:  # dns-name: resolve it (dns-*), or resolve and connect (tcp/udp through an ExternalName)
        dst, agents = name, _agents_of(cluster_set, target.cluster)
        if not target.expect_nxdomain and protocol.startswith("dns"):
            expected = _expected_answers(cell, cluster_set)
    if by_name:
        probe.update(qname=dst, server=src_cluster.dns_service_ip, search=search)
        flags = f" --server {src_cluster.dns_service_ip} " + " ".join(f"--search {s}" for s in search)
    else:
        probe.update(dst=dst)
        flags = ""
    if not protocol.startswith("dns"):
        probe.update(port=port, expect_agents=agents)
    payload = f" --payload {cell.probe.payload}" if cell.probe.payload else ""
    if protocol.startswith("dns"):
        dst_addr = f"{dst} @{src_cluster.dns_service_ip}"
        repro_args = f"{protocol} {dst}{flags}{payload}"
    elif protocol == "icmp":
        dst_addr, repro_args = dst, f"icmp {dst}"
    else:
        dst_addr = f"{dst}:{port}"
        repro_args = f"{protocol} {dst} {port}{flags}{payload}"
    repro = f"crossnet exec {exec_target} -- crossnet-agent probe {repro_args}"
    return LiveCell(cell, agent, src_ip, src_node.ip, dst_addr, probe, expected, repro, src_cluster.global_egress,
                    _global_ip(cell, cluster_set))


def _global_ip(cell: Cell, cluster_set: ClusterSet) -> str:
    """The global ingress IP a Globalnet cell aims at (empty for every other cell)."""
    owner = cluster_set.cluster(cell.target.cluster)
    if not owner.global_cidr or cell.target.form == "clusterset":
        return ""
    if cell.target.kind == "global-ip" or cell.target.form == "cluster.clusterset":
        return owner.global_ip(f"svc/{cell.target.service}")
    if cell.target.form == "pod.cluster.clusterset":
        return owner.global_ip(f"pod/{pod_hostname(cell.target.node)}")
    return ""


def _expected_answers(cell: Cell, cluster_set: ClusterSet) -> tuple[str, ...]:
    form = cell.target.form
    if form == "clusterset":  # every exporting cluster's global ingress IP (the lab answers with all)
        return tuple(c.global_ip(f"svc/{cell.target.service}") for c in cluster_set.clusters)
    if form == "cluster.clusterset":
        return (cluster_set.cluster(cell.target.cluster).global_ip(f"svc/{cell.target.service}"),)
    if form == "pod.cluster.clusterset":
        return (cluster_set.cluster(cell.target.cluster).global_ip(f"pod/{pod_hostname(cell.target.node)}"),)
    owner = cluster_set.cluster(cell.target.cluster)
    service = owner.service(cell.target.service, cluster_set.namespace)
    if service.type == "ExternalName":
        assert service.external_name is not None
        for cluster in cluster_set.clusters:
            if service.external_name.endswith(f".svc.{cluster.domain}"):
                name = service.external_name.split(".")[0]
                target = cluster.service(name, cluster_set.namespace)
                return (target.cluster_ip,) if target.cluster_ip else target.endpoints
        return ()
    return (service.cluster_ip,) if service.cluster_ip else service.endpoints


# --------------------------------------------------------------------------- judging


def outcome(live: LiveCell, observation: Observation) -> tuple[bool, str | None]:
    """Did the probe reach what the cell asks for? For DNS: the exact expected answer."""
    cell = live.cell
    if not cell.probe.protocol.startswith("dns"):
        return observation.reached, observation.error
    if cell.target.expect_nxdomain:
        return (True, None) if observation.error == "nxdomain" else (False, observation.error or "wrong-answer")
    if not observation.reached:
        return False, observation.error
    got = sorted(a for a in observation.answers if not a.startswith("cname:"))
    if got != sorted(live.expected_answers):
        return False, "wrong-answer"
    return True, None


def _source_ok(live: LiveCell, observation: Observation) -> tuple[bool, str | None]:
    wanted = live.cell.expectation.source
    if wanted == "any":
        return True, None
    if wanted == "global-egress":
        egress = live.global_egress
        return observation.source_ip in egress, (f"{egress[0]}-{egress[-1]}" if egress else "no egress IPs")
    expected = {"preserved": live.src_ip, "node-ip": live.node_ip}.get(wanted)
    return observation.source_ip == expected, expected


def _describe(observation: Observation, error: str | None) -> str:
    if error is None:
        return "reached"
    text = error
    if error == "timeout" and observation.latency_ms is not None:
        text += f" after {observation.latency_ms / 1000:.1f}s"
    if error == "wrong-answer" and observation.answers:
        text += f" {list(observation.answers)}"
    if observation.detail and error not in ("timeout",):
        text += f" ({observation.detail})"
    return text


def judge(live: LiveCell, first: Observation, retry: Observation | None = None) -> Judgement:
    """The verdict of one cell: pass, isolated, regression, leak, source-mismatch, flaky, optional."""
    cell, expectation = live.cell, live.cell.expectation
    reached, error = outcome(live, first)
    observation, retried = first, False
    if expectation.reachable == "yes" and not reached and retry is not None:
        retried = True
        reached_again, _ = outcome(live, retry)
        if reached_again:
            return Judgement("flaky", _line(live, first, "reachable", f"{_describe(first, error)}, then reached on "
                                            "the re-probe"), retry, retried=True)
    src = f"{cell.vantage.cluster}/{cell.vantage.node} {cell.vantage.kind} {live.src_ip}"
    if expectation.reachable == "optional":
        verdict = "optional"
        message = f"{src} -> {live.dst_addr}/{cell.probe.protocol}: optional, {_describe(observation, error)}"
        return Judgement(verdict, message, observation, retried)  # type: ignore[arg-type]
    if expectation.reachable == "no":
        if reached:
            return Judgement("leak", _line(live, observation, "isolated", "reached"), observation, retried)
        return Judgement("isolated", _line(live, observation, "isolated", _describe(observation, error)),
                         observation, retried)
    if not reached:
        return Judgement("regression", _line(live, observation, "reachable", _describe(observation, error)),
                         observation, retried)
    source_ok, expected_ip = _source_ok(live, observation)
    if not source_ok:
        return Judgement("source-mismatch", _line(
            live, observation, f"reachable with source {expectation.source} ({expected_ip})",
            f"reached, but the target saw source {observation.source_ip}"), observation, retried, expected_ip)
    return Judgement("pass", _line(live, observation, "reachable", "reached"), observation, retried, expected_ip)


def _line(live: LiveCell, observation: Observation, expected: str, got: str) -> str:
    cell = live.cell
    src = f"{cell.vantage.cluster}/{cell.vantage.node} {cell.vantage.kind} {live.src_ip}"
    what = "svc " if cell.target.kind == "dns-name" else "pod "
    return (f"{src} -> {cell.target.cluster} {what}{cell.target.label} {live.dst_addr}/{cell.probe.protocol}: "
            f"expected {expected} ({cell.expectation.rule}), got {got}")


def counts_by_expectation(cells: Sequence[Cell]) -> dict[str, int]:
    result = {"yes": 0, "no": 0, "optional": 0}
    for cell in cells:
        result[cell.expectation.reachable] += 1
    return result
