"""Node facts of the bgp topology (the plumbing suite under a profile with `plumbing: bgp`): what
BGP must have put on each node and the switch, and what the enterprise DNS forwards.

- `<cluster>/<node>:blackhole` -- the node's own block as a blackhole route (Calico's loop guard);
- `<cluster>/<node>:bgp-routes` -- a `proto bird` route for every other block of every cluster (and
  the peers' service ranges when they are announced): learned over BGP, never injected;
- `<cluster>/<node>:nat-outgoing` -- Calico's natOutgoing chain, and under keep_source the peers'
  pools exempt from it;
- `office/tor:bgp-session:<cluster>/<node>` -- the switch's session with each ingress node Established
  (`birdc show protocols`);
- `office/tor:bgp-routes-of:<cluster>` -- the switch holds every block of the cluster (and its
  service range under -svc);
- `office/dns:forward-zone:<domain>` -- unbound forwards the cluster domain (`unbound-control list_forwards`).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from testinfra.host import Host

from crossnet.bgp import ENTERPRISE_DNS, OFFICE, SWITCH, ingress_nodes
from crossnet.lifecycle import Run
from crossnet.model import Topology
from crossnet.plumbing.bgp import NAT_OUTGOING_CHAIN
from crossnet.profile import BgpPlumbing
from crossnet.providers.base import ExecTarget, ProviderError

__all__ = ["KINDS", "bgp_evidence", "check_bgp_fact", "planned_bgp_facts"]

KINDS = frozenset({"blackhole", "bgp-routes", "nat-outgoing", "bgp-session", "bgp-routes-of", "forward-zone"})


def planned_bgp_facts(topology: Topology, bgp: BgpPlumbing, fact: Any) -> list[Any]:
    """The facts of the bgp topology; `fact` is facts.NodeFact (passed in: facts imports this module)."""
    facts = []
    for cluster in topology.clusters:
        for node in cluster.nodes:
            facts += [fact(cluster.name, node.short, kind) for kind in ("ip_forward", "blackhole", "bgp-routes")]
            facts.append(fact(cluster.name, node.short, "nat-outgoing", detail="keep" if bgp.keep_source else ""))
        facts += [fact(OFFICE, SWITCH, "bgp-session", f"{cluster.name}/{n.short}") for n in ingress_nodes(cluster)]
        facts.append(fact(OFFICE, SWITCH, "bgp-routes-of", cluster.name))
        facts.append(fact(OFFICE, ENTERPRISE_DNS, "forward-zone", cluster.dns_domain))
    return facts


def _bird_routes(host: Host) -> dict[str, str]:
    """destination -> type of every `proto bird` route on the host."""
    out = host.run("ip -j route show proto bird")
    if out.rc != 0:
        raise ProviderError(f"ip route failed: {out.stderr.strip()[:200]}")
    return {str(r.get("dst")): str(r.get("type", "unicast")) for r in json.loads(out.stdout or "[]")}


def _daemon_record(run: Run, daemon: str, netns: str = "") -> dict[str, Any]:
    """What the provider recorded of a daemon it runs (the lab: BIRD's control socket, unbound's
    config); empty when it runs the daemon at its default paths (the kind provider's containers)."""
    try:
        bgp = run.provider.state.read().get("bgp") or {}
    except ProviderError:
        return {}
    record = bgp.get("bird", {}).get(netns, {}) if daemon == "bird" else bgp.get("unbound", {})
    return dict(record) if isinstance(record, dict) else {}


def _switch_netns(run: Run) -> str:
    return next((n.handle for n in run.cluster_set.cluster(OFFICE).nodes if n.short == SWITCH), "")


def check_bgp_fact(host: Host, fact: Any, run: Run, bgp: BgpPlumbing) -> tuple[bool, str, str]:
    """(ok, expected, observed) of one bgp fact on the live host."""
    cs = run.cluster_set
    if fact.kind == "blackhole":
        block = cs.cluster(fact.cluster).node(fact.node).pod_cidr
        routes = _bird_routes(host)
        seen = f"{routes[block]} route {block}" if block in routes else "no proto bird route for it"
        return routes.get(block) == "blackhole", f"blackhole {block} proto bird", seen
    if fact.kind == "bgp-routes":
        own = cs.cluster(fact.cluster)
        want = {n.pod_cidr for c in cs.clusters for n in c.nodes} - {own.node(fact.node).pod_cidr}
        if bgp.advertise_service_ips:
            want |= {c.service_subnet for c in cs.clusters if c.name != fact.cluster}
        return _routes_fact(host, want)
    if fact.kind == "bgp-routes-of":
        cluster = cs.cluster(fact.subject)
        want = {n.pod_cidr for n in cluster.nodes} | ({cluster.service_subnet} if bgp.advertise_service_ips else set())
        return _routes_fact(host, want)
    if fact.kind == "nat-outgoing":
        return _nat_outgoing(host, run, fact)
    if fact.kind == "bgp-session":
        peer = cs.cluster(fact.subject.split("/")[0]).node(fact.subject.split("/")[1]).ip
        control = _daemon_record(run, "bird", _switch_netns(run)).get("control")
        out = host.run("birdc " + (f"-s {shlex.quote(control)} " if control else "") + "show protocols all")
        state = _session_state(out.stdout, peer) if out.rc == 0 else f"birdc failed: {out.stderr.strip()[:200]}"
        return state.startswith("Established"), f"BGP session with {fact.subject} ({peer}) Established", state
    if fact.kind == "forward-zone":
        conf = _daemon_record(run, "unbound").get("conf")
        out = host.run("unbound-control " + (f"-c {shlex.quote(conf)} " if conf else "") + "list_forwards")
        zones = {
            line.split()[0].rstrip("."): line.split()[3:] for line in out.stdout.splitlines() if len(line.split()) > 3
        }
        owner = next(c for c in cs.clusters if c.domain == fact.subject)
        servers = sorted(owner.dns_server_ips)
        seen = "; ".join(f"{z}: {' '.join(a)}" for z, a in sorted(zones.items())) or (
            out.stderr.strip()[:200] or "none"
        )
        ok = sorted(zones.get(fact.subject, [])) == servers
        return ok, f"forward-zone {fact.subject} to {' '.join(servers)}", seen
    raise ProviderError(f"unknown bgp fact {fact.kind}")


def _routes_fact(host: Host, want: set[str]) -> tuple[bool, str, str]:
    routes = _bird_routes(host)
    missing = sorted(d for d in want if d not in routes)
    expected = f"proto bird routes to {', '.join(sorted(want))}"
    seen = "all present" if not missing else f"missing {', '.join(missing)} (has {', '.join(sorted(routes)) or 'none'})"
    return not missing, expected, seen


def _session_state(shown: str, peer: str) -> str:
    """The state of the BGP protocol whose neighbour is `peer` in `birdc show protocols all`."""
    block: list[str] = []
    for line in [*shown.splitlines(), ""]:
        if line and not line.startswith(" "):
            if any(f"Neighbor address: {peer}" in b for b in block):
                break
            block = [line]
        else:
            block.append(line)
    if not any(f"Neighbor address: {peer}" in b for b in block):
        return f"no BGP protocol with neighbour {peer}"
    fields = block[0].split()
    state = next((b.split(":", 1)[1].strip() for b in block if b.strip().startswith("BGP state:")), "")
    return state or (fields[-1] if fields else "unknown")


def _nat_outgoing(host: Host, run: Run, fact: Any) -> tuple[bool, str, str]:
    cs = run.cluster_set
    own = cs.cluster(fact.cluster).pod_subnet
    rules = list(host.iptables.rules("nat", NAT_OUTGOING_CHAIN))
    masq = any("MASQUERADE" in r for r in rules)
    expected = f"{NAT_OUTGOING_CHAIN}: MASQUERADE for {own} leaving the cluster's pools"
    if fact.detail == "keep":
        peers = [c.pod_subnet for c in cs.clusters if c.name != fact.cluster]
        exempt = [p for p in peers if any(f"-d {p}" in r and r.endswith("-j RETURN") for r in rules)]
        expected += f", not for {', '.join(peers)} (disabled pools)"
        return masq and exempt == peers, expected, "; ".join(rules) or "no chain"
    return masq, expected, "; ".join(rules) or "no chain"


def bgp_evidence(run: Run, ends: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Sections for a failing cell's evidence under the bgp topology: `birdc show protocols` of the
    BIRD at each end that runs one (where the provider recorded its control socket) and of the
    switch, and the routes the switch holds. Empty for every other topology; never raises."""
    office = next((c for c in run.cluster_set.outside if c.name == OFFICE), None)
    if office is None or not any(n.short == SWITCH for n in office.nodes):
        return []
    sections: list[tuple[str, str]] = []
    speakers = [(cluster, node) for cluster, node in ends if cluster != OFFICE] + [(OFFICE, SWITCH)]
    for cluster, node in dict.fromkeys(speakers):
        netns = _switch_netns(run) if (cluster, node) == (OFFICE, SWITCH) else f"{cluster}.{node}"
        control = _daemon_record(run, "bird", netns).get("control")
        if control is None and cluster != OFFICE:
            continue  # Calico's BIRD on a real node: its sessions are the switch's to show
        birdc = "birdc " + (f"-s {shlex.quote(control)} " if control else "") + "show protocols"
        commands = [("BGP sessions (birdc show protocols)", birdc)]
        if cluster == OFFICE:
            commands.append(("the switch's routes (ip route show proto bird)", "ip route show proto bird"))
        for title, command in commands:
            try:
                rc, out, err = run.provider.exec(ExecTarget(cluster, node), ["sh", "-c", command], timeout=10.0)
                text = out if rc == 0 else f"{(out + err).strip()}\n({command}: exit {rc})"
            except Exception as exc:  # noqa: BLE001 - evidence never breaks a report
                text = f"could not collect it: {exc.__class__.__name__}: {exc}"
            sections.append((f"{cluster}/{node}: {title}", text))
    return sections
