"""Link-layer addresses of the lab, derived from IPs, so every neighbour entry is written in advance.

Linux counts the ARP entries of ALL network namespaces against one host-wide limit
(net.ipv4.neigh.default.gc_thresh3, 1024 by default). A lab of 4 clusters x 8 nodes needs about a
thousand underlay entries alone; past the limit sends fail with ENOBUFS and dmesg says "neighbor
table overflow!" -- the harness, not the network under test, would be failing. Permanent entries
are exempt from that limit (Linux >= 5.0), so the lab writes them instead of resolving by broadcast.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

__all__ = [
    "MAC_BRIDGE",
    "MAC_NODE",
    "MAC_POD",
    "MAC_POD_GATEWAY",
    "UNDERLAY_GATEWAY",
    "mac_for",
    "underlay_neighbours",
]

MAC_BRIDGE, MAC_NODE, MAC_POD, MAC_POD_GATEWAY = "02:c0", "02:c1", "02:c2", "02:c3"
UNDERLAY_GATEWAY = "172.19.0.1"  # the underlay bridge's own address (like docker's kind network gateway)


class _Node(Protocol):
    @property
    def ip(self) -> str: ...


class _Plan(Protocol):
    @property
    def nodes(self) -> tuple[_Node, ...]: ...


def mac_for(kind: str, ip: str) -> str:
    """A locally administered MAC: a 2-byte kind prefix and the 4 bytes of the IP."""
    return kind + "".join(f":{octet:02x}" for octet in ipaddress.IPv4Address(ip).packed)


def underlay_neighbours(plan: _Plan, dev: str, except_ip: str = "") -> list[str]:
    """Permanent neighbour entries for every node (and the underlay gateway) on the underlay."""
    lines = [
        f"neigh replace {node.ip} lladdr {mac_for(MAC_NODE, node.ip)} dev {dev} nud permanent"
        for node in plan.nodes
        if node.ip != except_ip
    ]
    if except_ip:
        lines.append(
            f"neigh replace {UNDERLAY_GATEWAY} lladdr {mac_for(MAC_BRIDGE, UNDERLAY_GATEWAY)} dev {dev} nud permanent"
        )
    return lines
