"""The BGP flat network's daemon configurations and Calico's natOutgoing, as text planned from data.

Pure: the lab writes these files into its namespaces and runs Debian's `bird2` and `unbound` on
them; the kind provider gives the switch and enterprise-DNS containers the same text (on kind the
nodes' BIRD is Calico's own). Every value that reaches a file is validated here first (IPv4
addresses and CIDRs, AS numbers, DNS names, absolute paths): a config is text a root daemon parses.

BIRD is configured the way Calico configures it on a node: a static blackhole for the node's own
block (the loop guard, `proto bird` in `ip route`), the block announced over a direct iBGP mesh,
every learned route exported to the kernel; eBGP to the switch from the ingress nodes. Timers are a
lab's, not BIRD's defaults (hold 3 s, keepalive 1 s, connect retry 1 s): the defaults cost ~6 s of
convergence per bring-up.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = [
    "NAT_OUTGOING_CHAIN",
    "BgpSpeaker",
    "bird_conf",
    "nat_outgoing_rules",
    "unbound_conf",
]

NAT_OUTGOING_CHAIN = "cali-nat-outgoing"
TIMERS = "hold time 3; keepalive time 1; connect delay time 1; connect retry time 1; error wait time 1, 5;"
_DOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*")
_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")


@dataclass(frozen=True)
class BgpSpeaker:
    """One BIRD instance: a node or the switch."""

    name: str  # for the config's comment and protocol names only (validated)
    router_id: str  # its underlay IPv4 address
    local_as: int
    blocks: tuple[str, ...] = ()  # announced, with a blackhole in the kernel (a node's pod block)
    announce_only: tuple[str, ...] = ()  # announced, never installed (a service range under -svc)
    mesh: tuple[str, ...] = ()  # iBGP neighbours (same AS, directly connected)
    peers: tuple[tuple[str, int], ...] = ()  # eBGP neighbours (address, AS)


def _ip(value: str) -> str:
    return str(ipaddress.IPv4Address(value))


def _cidr(value: str) -> str:
    return str(ipaddress.IPv4Network(value))


def _as(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4294967295:
        raise ValueError(f"AS number {value!r} is not 1-4294967295")
    return value


def _ident(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", value)[:48]


def bird_conf(speaker: BgpSpeaker) -> str:
    """The bird.conf of one speaker (BIRD 2)."""
    router_id, local_as = _ip(speaker.router_id), _as(speaker.local_as)
    blocks = [_cidr(b) for b in speaker.blocks]
    announce_only = [_cidr(b) for b in speaker.announce_only]
    lines = [
        f"# crossnet: BIRD of {_ident(speaker.name)} (AS {local_as})",
        f"router id {router_id};",
        "protocol device { scan time 10; }",
        # Learned routes go to the kernel; of our own statics only the blackholes (never a service range).
        "protocol kernel {",
        "  ipv4 { import none; export filter { if source = RTS_BGP then accept; "
        'if proto = "own_blocks" then accept; reject; }; };',
        "  merge paths on;",
        "}",
    ]
    if blocks:
        lines += ["protocol static own_blocks {", "  ipv4;", *(f"  route {b} blackhole;" for b in blocks), "}"]
    if announce_only:
        lines += ["protocol static announced {", "  ipv4;", *(f"  route {b} blackhole;" for b in announce_only), "}"]
    export = "export where source ~ [ RTS_STATIC, RTS_BGP ];"
    for neighbour in speaker.mesh:
        address = _ip(neighbour)
        lines += [
            f"protocol bgp mesh_{_ident(address)} {{",
            f"  local as {local_as}; neighbor {address} as {local_as}; direct; {TIMERS}",
            f"  ipv4 {{ import all; {export} next hop self; }};",
            "}",
        ]
    for neighbour, peer_as in speaker.peers:
        address = _ip(neighbour)
        lines += [
            f"protocol bgp peer_{_ident(address)} {{",
            f"  local as {local_as}; neighbor {address} as {_as(peer_as)}; {TIMERS}",
            f"  ipv4 {{ import all; {export} }};",
            "}",
        ]
    return "\n".join(lines) + "\n"


def unbound_conf(listen_ip: str, workdir: str, forwards: list[tuple[str, tuple[str, ...]]], control_socket: str) -> str:
    """An enterprise resolver: one forward zone per cluster domain to that cluster's DNS servers.
    No DNSSEC validator (a private zone cannot be validated from the root: it would time out),
    every domain also declared insecure, answers never cached beyond a second (a fault injected
    into a forward zone shows at once), control over a unix socket."""
    if not _PATH.fullmatch(workdir) or not _PATH.fullmatch(control_socket):
        raise ValueError(f"unbound paths must be absolute and plain: {workdir!r}, {control_socket!r}")
    lines = [
        "server:",
        f"  interface: {_ip(listen_ip)}",
        "  port: 53",
        "  access-control: 0.0.0.0/0 allow",
        '  username: ""',
        '  chroot: ""',
        f'  directory: "{workdir}"',
        f'  pidfile: "{workdir}/unbound.pid"',
        "  use-syslog: no",
        "  num-threads: 1",
        "  so-reuseport: no",
        '  module-config: "iterator"',
        "  do-not-query-localhost: no",
        "  qname-minimisation: no",
        "  cache-max-ttl: 1",
        "  cache-max-negative-ttl: 1",
        "  infra-host-ttl: 1",
    ]
    # Nothing but the forwarded domains is resolved: no query ever leaves for the root servers.
    lines.append('  local-zone: "." refuse')
    for domain, _ in forwards:
        lines += [f'  domain-insecure: "{_domain(domain)}"', f'  local-zone: "{_domain(domain)}." transparent']
    lines += ["remote-control:", "  control-enable: yes", f'  control-interface: "{control_socket}"']
    for domain, servers in forwards:
        lines += ["forward-zone:", f'  name: "{_domain(domain)}"', *(f"  forward-addr: {_ip(s)}" for s in servers)]
    return "\n".join(lines) + "\n"


def _domain(value: str) -> str:
    if len(value) > 253 or not _DOMAIN.fullmatch(value):
        raise ValueError(f"{value!r} is not a DNS domain")
    return value


def nat_outgoing_rules(pod_subnet: str, disabled_pools: tuple[str, ...] = ()) -> list[str]:
    """Calico's natOutgoing (iptables-restore lines of the nat table, after the chain is declared):
    pod traffic to anything outside the cluster's own pools -- enabled or disabled -- leaves with
    the node's address. A disabled pool for a peer's pod CIDR keeps the pod's source to that peer."""
    pools = [_cidr(pod_subnet), *(_cidr(p) for p in disabled_pools)]
    rules = ['-A POSTROUTING -m comment --comment "cali:natOutgoing" -j ' + NAT_OUTGOING_CHAIN]
    rules += [f"-A {NAT_OUTGOING_CHAIN} -s {pools[0]} -d {pool} -j RETURN" for pool in pools]
    rules.append(f"-A {NAT_OUTGOING_CHAIN} -s {pools[0]} -j MASQUERADE")
    return rules
