"""Pod-to-pod: from the pod and from the host (hostNetwork) of every node, to the pod on every
node of every cluster (same node, same cluster, peer cluster), over TCP, UDP and ICMP.

The cells and their expectations come from the kind configs and the profile; see
`crossnet/builders/` and `profiles/`.
"""

from crossnet.model import Cell
from crossnet.plugin import JudgeCell

SUITE = "pod-to-pod"


def test_pod_to_pod(cell: Cell, judge_cell: JudgeCell) -> None:
    judge_cell(cell)
