"""The command-line options of existing-cluster mode, declared once: crossnet.options merges them
into its OPTIONS (pytest and `crossnet up`), this package's commands add them directly. No import
beyond the standard library, so declaring them costs nothing."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["DEFAULT_DEBUG_IMAGE", "OPTION_DESTS", "OPTION_SPECS"]

DEFAULT_DEBUG_IMAGE = "nicolaka/netshoot:v0.13"  # ip, iptables, conntrack: what node evidence runs


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give at least 1")
    return value


# flag -> argparse/pytest attributes (crossnet.options merges these into its OPTIONS).
OPTION_SPECS: dict[str, dict[str, Any]] = {
    "--kubeconfig": {
        "help": "existing: the kubeconfig (default $KUBECONFIG, then ~/.kube/config)",
        "default": None,
        "metavar": "PATH",
    },
    "--context": {
        "help": "existing: a cluster as NAME=CONTEXT (repeat, in order; at least two)",
        "action": "append",
        "default": None,
        "metavar": "NAME=CONTEXT",
    },
    "--clusterset": {
        "help": "existing: a cluster-set file (clustersets/*.yaml: per cluster name, context, hints)",
        "default": None,
        "metavar": "FILE",
    },
    "--nodes": {
        "help": "existing: agents on at most N nodes per cluster (a labelled gateway first, then by name)",
        "type": _count,
        "default": None,
        "metavar": "N",
    },
    "--host-vantage": {
        "help": "existing: also probe from the nodes (hostNetwork pods; skipped with the reason where refused)",
        "action": "store_true",
    },
    "--node-evidence": {
        "help": "existing: privileged debug pods for node evidence of failing cells (needs pods/exec)",
        "action": "store_true",
    },
    "--keep": {"help": "existing: keep the run's namespace at the end (for debugging)", "action": "store_true"},
    "--skip-preflight": {"help": "existing: do not run the pre-flight checks before the run", "action": "store_true"},
    "--namespace": {
        "help": "existing: run in this namespace, created beforehand (least privilege; default crossnet-<run-id>)",
        "default": None,
        "metavar": "NS",
    },
    "--debug-image": {
        "help": f"existing: the image of the --node-evidence debug pods (default {DEFAULT_DEBUG_IMAGE})",
        "default": None,
        "metavar": "IMAGE",
    },
    "--image-pull-secret": {
        "help": "existing: an imagePullSecret for the agents (repeat)",
        "action": "append",
        "default": None,
        "metavar": "NAME",
    },
    "--node-selector": {
        "help": "existing: only nodes with this label get agents (KEY=VALUE, repeat)",
        "action": "append",
        "default": None,
        "metavar": "KEY=VALUE",
    },
    "--toleration": {
        "help": "existing: the agents' tolerations (KEY[=VALUE][:EFFECT], repeat; default: every taint)",
        "action": "append",
        "default": None,
        "metavar": "TAINT",
    },
}

# The dests of those options, plus --agent-image (crossnet.options declares it for every provider).
OPTION_DESTS = (*(flag[2:].replace("-", "_") for flag in OPTION_SPECS), "agent_image")
