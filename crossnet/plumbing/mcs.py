"""The Corefile side of Multi-Cluster Services: the server block that answers clusterset.local
with CoreDNS's `multicluster` plugin (CoreDNS rebuilt with it, as Karmada documents), appended
inside crossnet's fence with the peer forwards, so the original is restored byte for byte."""

from __future__ import annotations

from crossnet.globalnet import CLUSTERSET_DOMAIN
from crossnet.profile import McsPlumbing

__all__ = ["clusterset_block"]


def clusterset_block(mcs: McsPlumbing) -> list[str]:
    """The Corefile server block that serves clusterset.local (appended inside crossnet's fence,
    like the peer forwards): CoreDNS rebuilt with the multicluster plugin, as Karmada documents it."""
    lines = [f"{CLUSTERSET_DOMAIN}:53 {{", "    errors", f"    multicluster {CLUSTERSET_DOMAIN}"]
    if mcs.header_ra:  # without it `dig` says "recursion requested but not available"
        lines += ["    header {", "        response set ra", "    }"]
    return [*lines, "}"]
