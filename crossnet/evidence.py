"""Failure evidence: what a failing cell needs, from BOTH ends of its path — routes, rules,
rp_filter, the link MTUs, the filter table with its counters, the nat chains, conntrack entries of
the flow, the MTUs of the pods at either end, and for DNS cells the Corefile in effect.
Plain text; never raises (a node that cannot be reached is written into the text)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

from testinfra.host import Host

from crossnet.facts import node_host
from crossnet.facts_bgp import bgp_evidence
from crossnet.lifecycle import Run
from crossnet.model import ClusterSet
from crossnet.providers.base import ExecTarget
from crossnet.workloads import AGENT_POD, agent_id

__all__ = ["End", "collect_evidence", "filter_excerpt", "link_mtus", "path_ends"]


class End(NamedTuple):
    """One end of a cell's path: its node and, when that end is a pod, the pod (else "")."""

    cluster: str
    node: str
    pod: str = ""


SECTION_LIMIT = 4000
# nat chains in evidence, most telling first (a section is cut at SECTION_LIMIT): the hooks, kindnet's
# masquerade, kube-proxy's portals and postrouting, then per-Service chains, then Submariner's.
NAT_CHAINS = (
    "PREROUTING",
    "OUTPUT",
    "POSTROUTING",
    "KIND-MASQ-AGENT",
    "KUBE-SERVICES",
    "KUBE-POSTROUTING",
    "KUBE-NODEPORTS",
    "KUBE-SVC-",
    "KUBE-SEP-",
    "KUBE-EXT-",
    "SUBMARINER-",
)


def _section(title: str, text: str) -> str:
    text = text.strip() or "(empty)"
    if len(text) > SECTION_LIMIT:
        text = text[:SECTION_LIMIT] + f"\n... ({len(text) - SECTION_LIMIT} more characters)"
    return f"=== {title} ===\n{text}\n"


def _nat_excerpt(save: str) -> str:
    """The rules of NAT_CHAINS from `iptables-save -t nat`, grouped in that order (chain
    declarations and counters left out), so a cut section loses per-endpoint detail first."""
    groups: list[list[str]] = [[] for _ in NAT_CHAINS]
    for line in save.splitlines():
        if not line.startswith("-A "):
            continue
        chain = line.split()[1]
        for index, name in enumerate(NAT_CHAINS):
            if chain == name or (name.endswith("-") and chain.startswith(name)):
                groups[index].append(line)
                break
    return "\n".join(line for group in groups for line in group)


_TERMINAL = re.compile(r" -j (DROP|REJECT)\b")


def filter_excerpt(save: str) -> str:
    """`iptables-save -c -t filter` as evidence: first what drops (DROP/REJECT rules, chains whose
    policy is DROP), with their [packets:bytes] counters, then every other rule and policy, in
    order; comments and COMMIT left out. A cut section loses ACCEPT detail first."""
    drops: list[str] = []
    rest: list[str] = []
    for line in save.splitlines():
        if line.startswith(("#", "*", "COMMIT")) or not line.strip():
            continue
        policy_drops = line.startswith(":") and line.split()[1:2] == ["DROP"]
        (drops if policy_drops or _TERMINAL.search(line) else rest).append(line)
    if not drops and not rest:
        return ""
    head = ["# what drops or rejects ([packets:bytes] since the rule was made):", *(drops or ["(no DROP/REJECT)"])]
    return "\n".join([*head, "# the rest of the filter table:", *rest])


_LINK = re.compile(r"^\d+:\s+(\S+?):\s+<[^>]*>\s+mtu\s+(\d+)(?:.*?\sstate\s+(\S+))?")
# `ip -o link` where iproute2 is installed; else each interface's sysfs mtu (a kind pod's image has no `ip`).
LINKS_COMMAND = 'ip -o link show 2>/dev/null || for i in /sys/class/net/*; do echo "${i##*/} mtu $(cat "$i/mtu")"; done'


def link_mtus(text: str) -> str:
    """One line per interface, `eth0@if3 mtu 1500 (UP)`, from `ip -o link show` (lines it does not
    know, like the sysfs fallback's `eth0 mtu 1500`, pass through)."""
    lines = []
    for line in text.splitlines():
        found = _LINK.match(line)
        if found:
            name, mtu, state = found.groups()
            lines.append(f"{name} mtu {mtu}" + (f" ({state})" if state else ""))
        elif line.strip():
            lines.append(line.strip())
    return "\n".join(lines)


def _conntrack(host: Host, flow: tuple[str, ...]) -> tuple[str, str]:
    """(title, text) of the conntrack entries that mention one of the flow's addresses."""
    title = f"conntrack for {' '.join(flow)}"
    track = host.run("conntrack -L 2>&1")
    if track.rc == 127 or (track.rc != 0 and "not found" in track.stdout):
        return "conntrack", "conntrack is not installed on this node (install conntrack to see the flow's NAT state)"
    if track.rc != 0:
        return title, f"conntrack -L failed (exit {track.rc}): {track.stdout.strip()}"
    wanted = {f"{side}={ip}" for ip in flow for side in ("src", "dst")}
    lines = [line for line in track.stdout.splitlines() if wanted & set(line.split())]
    return title, "\n".join(lines) or "no entry for this flow"


NODE_EVIDENCE_ADDS = (
    "--node-evidence would add, from a privileged debug pod on this node: ip route, ip rule, rp_filter, "
    "link MTUs, the filter table with counters, the nat chains and the flow's conntrack entries"
)


def _agent_view(run: Run, end: End, why: str, flow: tuple[str, ...], source: bool) -> str:
    """What crossnet can tell of one end without running anything on its node (clusters somebody
    else built, no --node-evidence): the node and its agent as recorded, the DNS search list the
    agent was given, and -- from the sending agent -- an ICMP echo to the destination now (an ICMP
    error names the router that refused it). Unprivileged: the pod proxy and the pod log only."""
    cluster, node = end.cluster, end.node
    lines = [f"crossnet runs nothing on this node ({why}); what its agent sees instead:"]
    try:
        live = run.cluster_set.cluster(cluster)
        spec = live.node(node)
        lines.append(f"node {node}: IP {spec.ip}, pod CIDR {spec.pod_cidr or '?'}")
        pod = live.pod_on(node)
        lines.append(f"its agent {pod.agent}: pod IP {pod.ip}")
    except KeyError as exc:
        lines.append(f"not in the run's cluster set: {exc}")
    kube, namespace = getattr(run.provider, "kube", None), getattr(run.provider, "namespace", "")
    if callable(kube) and namespace:
        try:
            log = str(kube(cluster).pod_log(namespace, f"{AGENT_POD}-{node}"))
            search = next((line for line in log.splitlines() if line.startswith("crossnet-resolv:")), "")
            lines.append(f"its resolv.conf: {search.removeprefix('crossnet-resolv:').strip() or '(not announced)'}")
        except Exception as exc:  # noqa: BLE001 - evidence never breaks a report
            lines.append(f"its resolv.conf could not be read: {exc.__class__.__name__}: {str(exc)[:200]}")
    destination = flow[-1] if len(flow) > 1 else ""
    if source and destination:
        lines.append(_echo_now(run, agent_id(cluster, node, "pod" if end.pod else "host"), destination))
    lines.append(NODE_EVIDENCE_ADDS)
    return _section(f"{cluster}/{node}: what the agent sees (no node evidence)", "\n".join(lines))


def _echo_now(run: Run, agent: str, destination: str) -> str:
    try:
        result = dict(
            run.provider.agent_client(agent).probe(
                [{"id": "evidence-icmp", "protocol": "icmp", "dst": destination, "timeout": 2.0}], 10.0
            )[0]
        )
    except Exception as exc:  # noqa: BLE001 - evidence never breaks a report
        return f"ICMP echo from {agent} to {destination} now: could not ask the agent ({exc.__class__.__name__})"
    if result.get("reached"):
        return f"ICMP echo from {agent} to {destination} now: answered"
    detail = " ".join(str(result.get(k) or "") for k in ("error", "detail")).strip()
    return f"ICMP echo from {agent} to {destination} now: no answer ({detail or 'no detail'})"


def _node_evidence(
    run: Run, cluster: str, node: str, flow: tuple[str, ...], end: End | None = None, source: bool = False
) -> str:
    """Each section on its own: a missing tool or a dead node is written into the text, and once
    the node itself cannot be reached the remaining sections are skipped (each would time out).
    Where the provider may not run anything on the node (`node_access_refused`: clusters somebody
    else built, without --node-evidence), what the agent sees instead (`_agent_view`)."""
    where = f"{cluster}/{node}"
    refused = getattr(run.provider, "node_access_refused", None)
    why = refused(cluster) if callable(refused) else None
    if why:
        return _agent_view(run, end or End(cluster, node), str(why), flow, source)
    try:
        host = node_host(run, cluster, node)
    except Exception as exc:  # noqa: BLE001 - evidence never breaks a report; say what failed instead
        return _section(where, f"could not reach the node: {exc.__class__.__name__}: {exc}")

    def command(cmd: str) -> str:
        out = host.run(cmd)
        text = out.stdout + out.stderr
        return text if out.rc == 0 else f"{text.strip()}\n({cmd}: exit {out.rc})"

    def nat() -> str:
        out = host.run("iptables-save -t nat")
        return _nat_excerpt(out.stdout) if out.rc == 0 else f"{out.stderr.strip()}\n(iptables-save: exit {out.rc})"

    def filter_table() -> str:
        out = host.run("iptables-save -c -t filter")
        if out.rc != 0:
            return f"{out.stderr.strip()}\n(iptables-save -c -t filter: exit {out.rc})"
        return filter_excerpt(out.stdout)

    rp_filter = "sysctl net.ipv4.conf.all.rp_filter net.ipv4.conf.default.rp_filter"
    sections: list[tuple[str, Callable[[], str]]] = [
        ("ip route", lambda: command("ip route")),
        ("ip rule", lambda: command("ip rule")),
        ("rp_filter all/default", lambda: command(rp_filter)),
        ("link MTUs", lambda: link_mtus(command(LINKS_COMMAND))),
        ("iptables -t filter (counters)", filter_table),
        ("iptables -t nat", nat),
    ]
    parts = []
    for title, read in sections:
        try:
            parts.append(_section(f"{where}: {title}", read()))
        except Exception as exc:  # noqa: BLE001
            parts.append(
                _section(
                    f"{where}: {title}",
                    f"could not collect it: {exc.__class__.__name__}: {exc}; "
                    "the remaining sections of this node are skipped",
                )
            )
            return "".join(parts)
    if flow:
        try:
            title, text = _conntrack(host, flow)
            parts.append(_section(f"{where}: {title}", text))
        except Exception as exc:  # noqa: BLE001
            parts.append(_section(f"{where}: conntrack", f"could not collect it: {exc.__class__.__name__}: {exc}"))
    return "".join(parts)


def _pod_links(run: Run, end: End) -> str:
    """The link MTUs inside a pod at one end of the path (its own namespace, not the node's)."""
    title = f"{end.cluster}/{end.node}/{end.pod}: link MTUs"
    try:
        rc, out, err = run.provider.exec(ExecTarget(*end), ["sh", "-c", LINKS_COMMAND], timeout=10.0)
    except Exception as exc:  # noqa: BLE001 - evidence never breaks a report
        return _section(title, f"could not collect it: {exc.__class__.__name__}: {exc}")
    return _section(title, link_mtus(out) if rc == 0 else f"{(out + err).strip()}\n(exit {rc})")


def collect_evidence(
    run: Run,
    src: tuple[str, ...],
    dst: tuple[str, ...],
    flow: tuple[str, ...] | str = (),
    dns_cluster: str | None = None,
) -> str:
    """What a failing cell needs, from both ends of its path (`src`, `dst`: (cluster, node) or
    (cluster, node, pod), as path_ends gives them): routes, rules, rp_filter, link MTUs, the filter
    table with counters, the nat chains, conntrack entries for the flow's addresses ("10.10.1.2
    10.20.2.2" or a tuple), the link MTUs of a pod at either end, and for DNS cells the Corefile in
    effect in `dns_cluster`. Where nothing may run on a node (existing clusters without
    --node-evidence), what the agents see instead, saying what --node-evidence would add. Plain
    text, a `=== where: what ===` header per section, each cut to SECTION_LIMIT; never raises."""
    ends = [End(*src), End(*dst)]
    addresses = tuple(flow.split()) if isinstance(flow, str) else tuple(flow)
    parts = [_node_evidence(run, ends[0].cluster, ends[0].node, addresses, ends[0], source=True)]
    if ends[1][:2] != ends[0][:2]:
        parts.append(_node_evidence(run, ends[1].cluster, ends[1].node, addresses, ends[1]))
    refused = getattr(run.provider, "node_access_refused", None)
    for index, end in enumerate(ends):
        if end.pod and end not in ends[:index] and not (callable(refused) and refused(end.cluster)):
            parts.append(_pod_links(run, end))
    parts += [_section(title, text) for title, text in bgp_evidence(run, [(e.cluster, e.node) for e in ends])]
    if dns_cluster:
        try:
            parts.append(_section(f"{dns_cluster}: Corefile", run.provider.read_corefile(dns_cluster)))
        except Exception as exc:  # noqa: BLE001
            parts.append(_section(f"{dns_cluster}: Corefile", f"could not read it: {exc}"))
    return "".join(parts)


def path_ends(cs: ClusterSet, cell: Any) -> tuple[End, End, str | None]:
    """Each end of a cell's path, (cluster, node, pod): the pod is the agent pod when that end is
    one (a pod vantage; a pod IP or headless pod target), else ""; and the cluster whose DNS it asked."""
    vantage, target = cell.vantage, cell.target
    src = End(vantage.cluster, vantage.node, AGENT_POD if vantage.kind == "pod" else "")
    if target.kind in ("pod-ip", "headless"):
        dst = End(target.cluster, target.node, AGENT_POD)
    elif target.kind == "node-port":
        dst = End(target.cluster, target.node)
    else:
        owner = cs.cluster(target.cluster)
        dst = End(owner.name, next((n.short for n in owner.nodes if n.role == "control-plane"), owner.nodes[0].short))
    dns = vantage.cluster if target.kind in ("dns-name", "headless") else None
    return src, dst, dns
