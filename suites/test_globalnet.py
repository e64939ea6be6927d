"""Globalnet: clusters with identical CIDRs (kind-configs/globalnet-*.yaml) reached only through
Submariner Globalnet. From the pod and host of every node of every cluster to every other
cluster's exported Services: clusterset names (`<svc>.<ns>.svc.clusterset.local`,
`<cluster>.<svc>...`, `<pod>.<cluster>.<svc>...` for the exported headless Service) resolved over
UDP and TCP to global IPs of the owner's slice, then connected by name and by global IP over TCP
and UDP; a non-exported Service is NXDOMAIN; the peer's direct pod IP and ClusterIP (the sender's
own CIDR) must not reach the peer. Source IPs are the snat suite's question (global egress).
Run with `pytest suites/ --topology globalnet`.
"""

from crossnet.model import Cell
from crossnet.plugin import JudgeCell

SUITE = "globalnet"


def test_globalnet(cell: Cell, judge_cell: JudgeCell) -> None:
    judge_cell(cell)
