"""A cell on a running cluster set: the agent that probes, the addresses it aims at, what counts
as the answer, and the command that reproduces the probe by hand. No judging."""

from __future__ import annotations

import functools
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from crossnet.globalnet import CLUSTERSET_DOMAIN
from crossnet.model import AGENT_PORT, Cell, ClusterSet
from crossnet.wire import ProbeSpec
from crossnet.workloads import ECHO_SERVICE, HEADLESS_SERVICE, agent_id, pod_hostname

__all__ = ["LiveCell", "live_cell", "repro_command", "search_list", "state_dir_implied"]


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
    probe: ProbeSpec
    expected_answers: tuple[str, ...] = ()
    repro: str = ""
    global_egress: tuple[str, ...] = ()  # the sender cluster's Globalnet egress IPs
    global_ip: str = ""  # under Globalnet: the target's global ingress IP
    target_node_ips: tuple[str, ...] = ()  # the IPs of the target cluster's nodes

    @functools.cached_property
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
    probe: ProbeSpec = {"id": cell.id, "protocol": protocol, "timeout": timeout, "payload": cell.probe.payload}
    expected: tuple[str, ...] = ()
    port = AGENT_PORT
    # An office host asks its enterprise DNS full names only; a pod and a node have kubelet's search list.
    search = search_list(cluster_set.namespace, src_cluster.domain) if cell.vantage.kind != "external" else []
    if target.form == "clusterset-search":  # a pod configured with svc.clusterset.local in its search list
        search.append(f"svc.{CLUSTERSET_DOMAIN}")
    by_name = target.kind in ("dns-name", "headless")
    name = cluster_set.name(target.name)
    if target.kind == "pod-ip":
        dst_pod = cluster_set.cluster(target.cluster).pod_on(target.node)
        dst, agents = dst_pod.ip, [dst_pod.agent]
    elif target.kind == "cluster-ip":
        service = cluster_set.cluster(target.cluster).service(target.service, cluster_set.namespace)
        dst, agents = str(service.cluster_ip), _agents_of(cluster_set, target.cluster)
    elif target.kind == "global-ip":
        dst, agents = (
            cluster_set.cluster(target.cluster).global_ip(f"svc/{target.service}"),
            _agents_of(cluster_set, target.cluster),
        )
    elif target.kind == "node-port":
        owner = cluster_set.cluster(target.cluster)
        dst, agents = owner.node(target.node).ip, _agents_of(cluster_set, target.cluster)
        port = int(owner.service(target.service, cluster_set.namespace).node_port or 0)
    elif target.kind == "external-host":  # a host outside the clusters: its agent answers
        dst, agents = cluster_set.cluster(target.cluster).node(target.node).ip, [f"{target.cluster}/{target.node}/host"]
    elif target.kind == "headless":
        dst, agents = name, [cluster_set.cluster(target.cluster).pod_on(target.node).agent]
    else:  # dns-name: resolve it (dns-*), or resolve and connect (tcp/udp through an ExternalName)
        dst, agents = name, _agents_of(cluster_set, target.cluster)
        if not target.expect_nxdomain and protocol.startswith("dns"):
            expected = _expected_answers(cell, cluster_set)
        if target.form == "srv" and protocol.startswith("dns"):
            probe["qtype"] = "SRV"
    if by_name:
        probe.update({"qname": dst, "server": src_cluster.dns_service_ip, "search": search})
        flags = f" --server {src_cluster.dns_service_ip} " + " ".join(f"--search {s}" for s in search)
        flags += " --qtype SRV" if probe.get("qtype") else ""
    else:
        probe["dst"] = dst
        flags = ""
    if not protocol.startswith("dns"):
        probe.update({"port": port, "expect_agents": agents})
        if len(agents) > 1 and not by_name and protocol in ("tcp", "udp") and cell.expectation.reachable != "no":
            probe["cover"] = True  # a Service: every endpoint must answer, not just one
    if target.kind == "pod-ip" and target.cluster != cell.vantage.cluster and protocol == "udp" and cell.probe.payload:
        probe["measure_mtu"] = True  # one DF ladder per cross-cluster path: its path MTU, recorded
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
    return LiveCell(
        cell,
        agent,
        src_ip,
        src_node.ip,
        dst_addr,
        probe,
        expected,
        repro,
        src_cluster.global_egress,
        _global_ip(cell, cluster_set),
        cluster_set.cluster(target.cluster).sender_addresses,
    )


MCS_FORMS = frozenset(
    {"clusterset", "clusterset-search", "clusterset-nosearch", "pod.cluster.clusterset", "derived", "srv"}
)


def _mcs_answers(cell: Cell, cluster_set: ClusterSet) -> tuple[str, ...]:
    """What the vantage's DNS answers for an MCS name: the ServiceImport's ClusterSetIP (its own
    cluster's import), the exporter's pods for the headless Service, one pod for its own name, the
    derived Service's ClusterIP in the vantage's cluster, SRV records as "srv:<port> <target>"."""
    target, own = cell.target, cluster_set.cluster(cell.vantage.cluster)
    exporter = cluster_set.cluster(target.cluster)
    if target.form == "derived":  # absent where the setup has no derived Services: nothing is the answer
        derived = [s.cluster_ip for s in own.services if s.name == target.service and s.cluster_ip]
        return tuple(str(ip) for ip in derived)
    if target.form == "pod.cluster.clusterset":
        return (exporter.pod_on(target.node).ip,)
    if target.form == "srv":
        name = ".".join(target.name.split(".")[2:])
        return tuple(
            f"srv:{port} {cluster_set.name(name)}."
            for proto, port in exporter.service(ECHO_SERVICE, cluster_set.namespace).ports
            if f"_{proto}." in target.name
        )
    if target.service == HEADLESS_SERVICE:
        return exporter.service(HEADLESS_SERVICE, cluster_set.namespace).endpoints
    return tuple(ip for name, ip in own.clusterset_ips if name == target.service)


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
    if form in MCS_FORMS and not cluster_set.cluster(cell.target.cluster).global_cidr:
        return _mcs_answers(cell, cluster_set)
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


def state_dir_implied(state_dir: Path, where: Path) -> bool:
    """`crossnet exec` run in `where` finds this run without --state-dir: it is under ./.crossnet/
    and the only run there."""
    runs = where / ".crossnet"
    return state_dir.resolve().parent == runs.resolve() and len(list(runs.glob("*/state.json"))) <= 1


def repro_command(repro: str, state_dir: Path, where: Path, implied: bool | None = None) -> str:
    """The repro command as a user pastes it in `where` (where pytest ran): any state directory
    `crossnet exec` would not find by itself (state_dir_implied, unless `implied` says) is named,
    quoted for a shell."""
    if not repro.startswith("crossnet exec ") or (state_dir_implied(state_dir, where) if implied is None else implied):
        return repro
    return f"crossnet exec --state-dir {shlex.quote(str(state_dir))} {repro.removeprefix('crossnet exec ')}"
