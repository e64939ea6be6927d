"""What crossnet deploys in every cluster, whatever the provider: one definition, so cells
(built from configs alone at collection time) and providers agree on names."""

from __future__ import annotations

from dataclasses import dataclass

from crossnet.model import CROSSNET_NAMESPACE, Topology

__all__ = [
    "AGENT_POD",
    "DERIVED_PREFIX",
    "ECHO_NODE_PORT",
    "ECHO_NODE_PORT_SERVICE",
    "ECHO_SERVICE",
    "HEADLESS_SERVICE",
    "NONEXISTENT_SERVICE",
    "REMOTE_SERVICE",
    "ExternalNameService",
    "agent_id",
    "echo_port_name",
    "external_name_services",
    "pod_hostname",
]

AGENT_POD = "agent"
ECHO_SERVICE = "echo"  # type NodePort: a ClusterIP plus ECHO_NODE_PORT on every node
ECHO_NODE_PORT = 30080
# MCS on real clusters: Submariner Lighthouse exports only type ClusterIP Services (and headless ones); a
# NodePort `echo` gets Valid=False UnsupportedServiceType. So where `echo` is exported it is plain ClusterIP
# and this Service (same pods, same ports) carries the NodePort the node-port cells probe.
ECHO_NODE_PORT_SERVICE = "echo-nodeport"
HEADLESS_SERVICE = "echo-headless"  # the agent pods, each with its own DNS name
REMOTE_SERVICE = "remote-echo"  # MCS: exists in the exporting cluster only, exported (the short-name cells)
DERIVED_PREFIX = "derived-"  # MCS (Karmada): the importing cluster's derived-<svc> Service


def echo_port_name(protocol: str) -> str:
    """The echo Services name each port after its protocol ("tcp", "udp"): Kubernetes wants the
    names of a Service's ports unique, so SRV asks _tcp._tcp.<svc> and _udp._udp.<svc>."""
    return protocol


NONEXISTENT_SERVICE = "does-not-exist"


@dataclass(frozen=True)
class ExternalNameService:
    cluster: str  # where the ExternalName Service lives
    name: str
    target_cluster: str  # whose name it points to

    def external_name(self, target_domain: str, namespace: str = CROSSNET_NAMESPACE) -> str:
        return f"{ECHO_SERVICE}.{namespace}.svc.{target_domain}"


def external_name_services(topology: Topology) -> tuple[ExternalNameService, ...]:
    """Every cluster but the first gets `proxy-to-<first>`, an ExternalName Service pointing at
    the first cluster's echo Service: the classic ExternalName-across-clusters check."""
    first = topology.clusters[0].name
    return tuple(ExternalNameService(c.name, f"proxy-to-{first}", first) for c in topology.clusters[1:])


def pod_hostname(node: str) -> str:
    """The agent pod's hostname under the headless Service: agent-<node>."""
    return f"{AGENT_POD}-{node}"


def agent_id(cluster: str, node: str, vantage: str) -> str:
    """`cluster-1/worker/agent` for the pod agent, `cluster-1/worker/host` for the hostNetwork one."""
    return f"{cluster}/{node}/{AGENT_POD if vantage == 'pod' else 'host'}"
