"""External: the office network outside the clusters (`pytest suites/ --topology bgp`). From the
office host to every pod, each cluster's ClusterIP and NodePorts, and the Service names through the
enterprise DNS (resolved, then connected); from every pod and node to the office host. Under
bgp-flat the ClusterIPs are not announced, so the office cannot reach them (the field's "why can't
I reach the Cluster IP?"); under bgp-flat-svc it can. Source IPs are the snat suite's question.
"""

from crossnet.model import Cell
from crossnet.plugin import JudgeCell

SUITE = "external"


def test_external(cell: Cell, judge_cell: JudgeCell) -> None:
    judge_cell(cell)
