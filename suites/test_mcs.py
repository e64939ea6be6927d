"""Multi-Cluster Services (`pytest suites/ --topology mcs`): from the importing cluster's pods and
nodes, the exported Services through clusterset.local (A, SRV, headless pods, the search list),
Karmada's derived Services, and the unexported `private` (NXDOMAIN, unreachable); the exporting
cluster's own view. Answers must carry the RA bit when the profile configures CoreDNS's header."""

from crossnet.model import Cell
from crossnet.plugin import JudgeCell

SUITE = "mcs"


def test_mcs(cell: Cell, judge_cell: JudgeCell) -> None:
    judge_cell(cell)
