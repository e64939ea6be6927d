"""The BGP flat network (Calico without encapsulation) as data, shared by every provider and the
suite builders:

- each cluster is one AS, 64513, 64514, ... in config order (Calico's default is 64512; distinct
  numbers keep the switch's AS paths readable and avoid iBGP between clusters);
- every node announces its /24 pod block (a blackhole for it on the node, Calico's loop guard)
  over a node-to-node iBGP mesh;
- the nodes labelled `crossnet.io/bgp-ingress: "true"` (the field guide's ingress nodes; a
  cluster without one uses its first worker) peer over eBGP with a top-of-rack switch of AS
  `switch_as` (65200), which re-announces every block to the other cluster's ingress nodes;
- an office network sits behind the switch: the office host (the `external` vantage and the
  egress target) and the enterprise DNS, which forwards each cluster domain to that cluster's DNS.
"""

from __future__ import annotations

from crossnet.model import Cluster, NodeSpec, Topology

__all__ = [
    "CLUSTER_AS_BASE",
    "ENTERPRISE_DNS",
    "INGRESS_LABEL",
    "OFFICE",
    "OFFICE_HOST",
    "SWITCH",
    "cluster_as",
    "ingress_nodes",
]

INGRESS_LABEL = "crossnet.io/bgp-ingress"
CLUSTER_AS_BASE = 64513
OFFICE = "office"  # the network outside every cluster (a ClusterSet.outside entry)
OFFICE_HOST = "host"  # its host: the external vantage, the target of pod egress cells
SWITCH = "tor"  # the top-of-rack switch (BIRD)
ENTERPRISE_DNS = "dns"  # the office's resolver (unbound)


def cluster_as(topology: Topology, name: str) -> int:
    """The AS number of a cluster: 64513 for the first in config order, then one more each."""
    for index, cluster in enumerate(topology.clusters):
        if cluster.name == name:
            return CLUSTER_AS_BASE + index
    raise KeyError(name)


def ingress_nodes(cluster: Cluster) -> tuple[NodeSpec, ...]:
    """The nodes that peer with the switch: those labelled INGRESS_LABEL "true", else the first
    worker (else the control-plane) -- a cluster is never left without a way out."""
    labelled = tuple(n for n in cluster.nodes if dict(n.labels).get(INGRESS_LABEL) == "true")
    if labelled:
        return labelled
    workers = [n for n in cluster.nodes if n.role == "worker"]
    return ((workers or list(cluster.nodes))[0],)
