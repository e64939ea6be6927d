"""Build the cells of each suite (from configs + profile only), turn them into probes (with the
live addresses), and judge observations. Probes report; this module judges."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crossnet.model import (
    AGENT_PORT,
    CROSSNET_NAMESPACE,
    Cell,
    ClusterSet,
    Judgement,
    Observation,
    Probe,
    Scope,
    Target,
    Topology,
    Vantage,
    VantageKind,
)
from crossnet.profile import Profile
from crossnet.workloads import ECHO_SERVICE, NONEXISTENT_SERVICE, agent_id, external_name_services

__all__ = ["SUITES", "LiveCell", "build_cells", "cell_facts", "judge", "live_cell", "search_list"]

SUITES = ("pod-to-pod", "dns")
POD_PROTOCOLS = ("tcp", "udp", "icmp")
DNS_PROTOCOLS = ("dns-udp", "dns-tcp")
VANTAGE_KINDS: tuple[VantageKind, ...] = ("pod", "host")


def cell_facts(cell: Cell) -> dict[str, str]:
    """What a profile rule can match on."""
    facts = {"suite": cell.suite, "vantage": cell.vantage.kind, "target": cell.target.kind,
             "protocol": cell.probe.protocol, "scope": cell.scope, "src_cluster": cell.vantage.cluster,
             "dst_cluster": cell.target.cluster}
    if cell.target.form:
        facts["form"] = cell.target.form
    return facts


def _scope(vantage: Vantage, cluster: str, node: str) -> Scope:
    if vantage.cluster != cluster:
        return "peer-cluster"
    return "same-node" if vantage.node == node else "same-cluster"


def _decided(profile: Profile, suite: str, vantage: Vantage, target: Target, probe: Probe, scope: Scope) -> Cell:
    draft = Cell(suite, vantage, target, probe, profile.defaults.expectation(), scope)
    return Cell(suite, vantage, target, probe, profile.decide(cell_facts(draft)), scope)


def _pod_to_pod(topology: Topology, profile: Profile) -> list[Cell]:
    cells = []
    for src in topology.clusters:
        for node in src.nodes:
            for kind in VANTAGE_KINDS:
                vantage = Vantage(src.name, node.short, kind)
                for dst in topology.clusters:
                    for dst_node in dst.nodes:
                        target = Target(dst.name, "pod-ip", node=dst_node.short)
                        scope = _scope(vantage, dst.name, dst_node.short)
                        for protocol in POD_PROTOCOLS:
                            cells.append(_decided(profile, "pod-to-pod", vantage, target,
                                                  Probe(protocol), scope))  # type: ignore[arg-type]
    return cells


def _dns_targets(topology: Topology, src: str) -> list[Target]:
    own = topology.cluster(src)
    svc_ns = f"{ECHO_SERVICE}.{CROSSNET_NAMESPACE}"
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
                   name=f"{NONEXISTENT_SERVICE}.{CROSSNET_NAMESPACE}.svc.{peer.dns_domain}"),
        ]
    for ext in external_name_services(topology):
        domain = topology.cluster(ext.cluster).dns_domain
        targets.append(Target(ext.cluster, "dns-name", service=ext.name, form="external-name",
                              name=f"{ext.name}.{CROSSNET_NAMESPACE}.svc.{domain}"))
    return targets


def _dns(topology: Topology, profile: Profile) -> list[Cell]:
    cells = []
    for src in topology.clusters:
        for node in src.nodes:
            vantage = Vantage(src.name, node.short, "pod")
            for target in _dns_targets(topology, src.name):
                scope: Scope = "peer-cluster" if target.cluster != src.name else "same-cluster"
                for protocol in DNS_PROTOCOLS:
                    cells.append(_decided(profile, "dns", vantage, target, Probe(protocol, port=53), scope))  # type: ignore[arg-type]
    return cells


BUILDERS = {"pod-to-pod": _pod_to_pod, "dns": _dns}


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


def live_cell(cell: Cell, cluster_set: ClusterSet, timeout: float) -> LiveCell:
    src_cluster = cluster_set.cluster(cell.vantage.cluster)
    src_node = src_cluster.node(cell.vantage.node)
    src_ip = src_cluster.pod_on(src_node.short).ip if cell.vantage.kind == "pod" else src_node.ip
    agent = agent_id(cell.vantage.cluster, cell.vantage.node, cell.vantage.kind)
    exec_target = "/".join(agent.split("/")[:2] + (["agent"] if cell.vantage.kind == "pod" else []))
    protocol = cell.probe.protocol
    probe: dict[str, object] = {"id": cell.id, "protocol": protocol, "timeout": timeout,
                                "payload": cell.probe.payload}
    expected: tuple[str, ...] = ()
    if cell.target.kind == "pod-ip":
        dst_pod = cluster_set.cluster(cell.target.cluster).pod_on(cell.target.node)
        probe.update(dst=dst_pod.ip, port=AGENT_PORT, expect_agent=dst_pod.agent)
        dst_addr = dst_pod.ip if protocol == "icmp" else f"{dst_pod.ip}:{AGENT_PORT}"
        repro_args = f"{protocol} {dst_pod.ip}" + ("" if protocol == "icmp" else f" {AGENT_PORT}")
    else:
        search = search_list(CROSSNET_NAMESPACE, src_cluster.domain)
        probe.update(qname=cell.target.name, server=src_cluster.dns_service_ip, search=search, port=53)
        if not cell.target.expect_nxdomain:
            expected = _expected_answers(cell, cluster_set)
        dst_addr = f"{cell.target.name} @{src_cluster.dns_service_ip}"
        repro_args = (f"{protocol} {cell.target.name} --server {src_cluster.dns_service_ip} "
                      + " ".join(f"--search {s}" for s in search))
    repro = f"crossnet exec {exec_target} -- crossnet-agent probe {repro_args}"
    return LiveCell(cell, agent, src_ip, src_node.ip, dst_addr, probe, expected, repro)


def _expected_answers(cell: Cell, cluster_set: ClusterSet) -> tuple[str, ...]:
    owner = cluster_set.cluster(cell.target.cluster)
    service = owner.service(cell.target.service)
    if service.type == "ExternalName":
        assert service.external_name is not None
        for cluster in cluster_set.clusters:
            if service.external_name.endswith(f".svc.{cluster.domain}"):
                name = service.external_name.split(".")[0]
                target = cluster.service(name)
                return (target.cluster_ip,) if target.cluster_ip else target.endpoints
        return ()
    return (service.cluster_ip,) if service.cluster_ip else service.endpoints


# --------------------------------------------------------------------------- judging


def outcome(live: LiveCell, observation: Observation) -> tuple[bool, str | None]:
    """Did the probe reach what the cell asks for? For DNS: the exact expected answer."""
    cell = live.cell
    if cell.target.kind != "dns-name":
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
