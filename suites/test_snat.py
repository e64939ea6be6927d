"""SNAT: for every path the other suites expect to reach over TCP/UDP, the source IP the target
saw, judged against the profile's `source:` (preserved = the sender's own IP, node-ip = the
sending node's IP). Observations of the other suites are reused where the path is the same;
only what is new is probed. A path that was not reached is skipped here (its own cell fails).
"""

from crossnet.model import Cell
from crossnet.plugin import JudgeCell

SUITE = "snat"


def test_snat(cell: Cell, judge_cell: JudgeCell) -> None:
    judge_cell(cell)
