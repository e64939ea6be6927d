"""DNS: from the pod on every node, resolve the echo Service of its own cluster (short, svc.ns,
full and trailing-dot forms) and of each peer (full, trailing-dot) over UDP and TCP through the
cluster DNS and its Corefile forwards; the answer must equal the real ClusterIP. A name that
does not exist in a peer's domain must come back NXDOMAIN, and the ExternalName Service must
resolve through to the address it points at.
"""

from crossnet.model import Cell
from crossnet.plugin import JudgeCell

SUITE = "dns"


def test_dns(cell: Cell, judge_cell: JudgeCell) -> None:
    judge_cell(cell)
