"""Opt-in node evidence on existing clusters (--node-evidence): a privileged hostNetwork debug pod
per sampled node in crossnet's own namespace, whose commands (`ip route`, `iptables-save`,
`conntrack -L`) see the node's network namespace. Without it, failing cells carry what the agents
see; crossnet never execs into anything it did not make."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from crossnet.providers.kube_agents import AgentNode

if TYPE_CHECKING:
    from crossnet.providers.existing.settings import ExistingSettings

__all__ = ["DEBUG_APP", "debug_pod", "debug_pod_name"]

DEBUG_APP = "crossnet-debug"


def debug_pod_name(node: str) -> str:
    return f"debug-{node}"


def debug_pod(node: AgentNode, namespace: str, labels: Mapping[str, str], settings: ExistingSettings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeName": node.node_name,
        "hostNetwork": True,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 0,
        "tolerations": [dict(t) for t in settings.tolerations] if settings.tolerations else [{"operator": "Exists"}],
        "containers": [
            {
                "name": "debug",
                "image": settings.debug_image,
                "command": ["sleep", "infinity"],
                "securityContext": {"privileged": True},  # iptables-save and conntrack read the node's tables
            }
        ],
    }
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": debug_pod_name(node.short),
            "namespace": namespace,
            "labels": {**labels, "app": DEBUG_APP},
        },
        "spec": spec,
    }
