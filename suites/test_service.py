"""Services: from the pod and the host of every node of both clusters to each cluster's
Services — the ClusterIP (TCP and UDP), the NodePort on every node IP, the headless Service
(its A records, then each pod's own name resolved and connected), and the ExternalName
Service connected by name. Same-cluster cells are the baseline; peer-cluster cells are what
the profile decides (under flat-routed a peer ClusterIP is not routed: expected isolated).
"""

from crossnet.model import Cell
from crossnet.plugin import JudgeCell

SUITE = "service"


def test_service(cell: Cell, judge_cell: JudgeCell) -> None:
    judge_cell(cell)
