"""Failure evidence: what a failing cell needs, from BOTH ends of its path — routes, rules,
rp_filter, the nat chains, conntrack entries of the flow, and for DNS cells the Corefile in effect.
Plain text; never raises (a node that cannot be reached is written into the text)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from testinfra.host import Host

from crossnet.facts import node_host
from crossnet.lifecycle import Run
from crossnet.model import ClusterSet

__all__ = ["collect_evidence", "path_ends"]

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


def _node_evidence(run: Run, cluster: str, node: str, flow: tuple[str, ...]) -> str:
    """Each section on its own: a missing tool or a dead node is written into the text, and once
    the node itself cannot be reached the remaining sections are skipped (each would time out)."""
    where = f"{cluster}/{node}"
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

    rp_filter = "sysctl net.ipv4.conf.all.rp_filter net.ipv4.conf.default.rp_filter"
    sections: list[tuple[str, Callable[[], str]]] = [
        ("ip route", lambda: command("ip route")),
        ("ip rule", lambda: command("ip rule")),
        ("rp_filter all/default", lambda: command(rp_filter)),
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


def collect_evidence(
    run: Run,
    src: tuple[str, str],
    dst: tuple[str, str],
    flow: tuple[str, ...] | str = (),
    dns_cluster: str | None = None,
) -> str:
    """What a failing cell needs, from both ends of its path (`src`, `dst`: (cluster, node)): routes,
    rules, rp_filter, the nat chains, conntrack entries for the flow's addresses ("10.10.1.2
    10.20.2.2" or a tuple), and for DNS cells the Corefile in effect in `dns_cluster`. Plain text,
    a `=== cluster/node: what ===` header per section, each cut to SECTION_LIMIT; never raises."""
    addresses = tuple(flow.split()) if isinstance(flow, str) else tuple(flow)
    parts = [_node_evidence(run, *src, addresses)]
    if dst != src:
        parts.append(_node_evidence(run, *dst, addresses))
    if dns_cluster:
        try:
            parts.append(_section(f"{dns_cluster}: Corefile", run.provider.read_corefile(dns_cluster)))
        except Exception as exc:  # noqa: BLE001
            parts.append(_section(f"{dns_cluster}: Corefile", f"could not read it: {exc}"))
    return "".join(parts)


def path_ends(cs: ClusterSet, cell: Any) -> tuple[tuple[str, str], tuple[str, str], str | None]:
    """The (cluster, node) at each end of a cell's path, and the cluster whose DNS it asked."""
    src = (cell.vantage.cluster, cell.vantage.node)
    target = cell.target
    if target.kind in ("pod-ip", "node-port", "headless"):
        dst = (target.cluster, target.node)
    else:
        owner = cs.cluster(target.cluster)
        dst = (owner.name, next((n.short for n in owner.nodes if n.role == "control-plane"), owner.nodes[0].short))
    dns = cell.vantage.cluster if target.kind in ("dns-name", "headless") else None
    return src, dst, dns
