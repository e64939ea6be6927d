"""The Corefile plugins the lab DNS implements, one module each (`errors` is the server's own
error log, see server.py). They run in CoreDNS's plugin.cfg order, not in Corefile order."""

from __future__ import annotations

__all__ = ["IMPLEMENTED_PLUGINS", "KNOWN_PLUGINS", "NO_OP_PLUGINS", "PLUGIN_ORDER"]

# As in CoreDNS's plugin.cfg (`multicluster` is external: its README puts it just below `kubernetes`).
PLUGIN_ORDER = ("cache", "header", "hosts", "kubernetes", "multicluster", "lighthouse", "forward")
"""The plugins a query meets, in this order."""

IMPLEMENTED_PLUGINS = ("errors", *PLUGIN_ORDER)

NO_OP_PLUGINS = frozenset({"health", "ready", "prometheus", "loop", "reload", "loadbalance", "log"})
"""Accepted and ignored (`reload` is always on: see server.py)."""

KNOWN_PLUGINS = frozenset({*IMPLEMENTED_PLUGINS, *NO_OP_PLUGINS})
