"""A large matrix folded into blocks, for a matrix.html that stays small at tens of thousands of cells.

A suite's grid becomes one square per *block*: the cells of a source vantage and a target, every
protocol together (level "node"). When that still makes too many squares the targets are folded to
their cluster, then the sources too (levels "target-cluster", "cluster"). Each block keeps its cells
and their counts per verdict. ``cluster_pairs`` counts the whole run per source and target cluster.

``CellData`` holds the details of the cells, block by block, as compact JSON that the page's script
reads when a square is clicked: the strings once in a table, the fields every cell of a block shares
once per block, and a common prefix of the block's cell ids once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crossnet.report.document import GLYPHS, VERDICTS, count, severity, text
from crossnet.report.layout import Column, Grid, Row, column_key, column_of, row_key, row_of
from crossnet.report.view import cell_fields

__all__ = [
    "DETAILED_MAX_CELLS",
    "DETAIL_FIELDS",
    "Block",
    "BlockGrid",
    "CellData",
    "cluster_pairs",
    "fold",
    "source_cluster",
    "target_cluster",
]

DETAILED_MAX_CELLS = 3_000
"""Up to this many cells the reports draw every cell; a larger run is folded into blocks (matrix.html)
and gets a table per cluster pair (summary.md)."""

Key = Callable[[Mapping[str, Any]], tuple[str, str]]

_TARGET_CLUSTER = re.compile(r"->([^/:\s]+)")  # cell ids name the target's cluster right after "->"


def source_cluster(cell: Mapping[str, Any]) -> str:
    return text(cell.get("src")).split("/")[0]


def target_cluster(cell: Mapping[str, Any]) -> str:
    """The target's cluster: from ``dst`` (cluster/node, cluster/service) or else from the cell id."""
    dst = text(cell.get("dst"))
    if "/" in dst:
        return dst.split("/")[0]
    found = _TARGET_CLUSTER.search(text(cell.get("id")))
    return found.group(1) if found else dst


def _source_cluster_row(cell: Mapping[str, Any]) -> Row:
    return (source_cluster(cell), text(cell.get("src_kind")))


def _target_cluster_column(cell: Mapping[str, Any]) -> Column:
    return (target_cluster(cell), text(cell.get("dst_kind")))


# (level, what one square holds, row of a cell, column of a cell), finest first
_LEVELS: tuple[tuple[str, str, Key, Key], ...] = (
    ("node", "a source and a target, every protocol", row_of, column_of),
    ("target-cluster", "a source and the targets of one kind in a cluster", row_of, _target_cluster_column),
    ("cluster", "the sources of one kind in a cluster and the targets of one kind in a cluster", _source_cluster_row,
     _target_cluster_column),
)  # fmt: skip


@dataclass(frozen=True)
class Block:
    """The cells of one square, in report order, their counts and worst verdict."""

    row: Row
    column: Column
    cells: list[Mapping[str, Any]]
    tally: dict[str, int]  # non-zero counts, VERDICTS order, then unknown verdicts
    worst: str


@dataclass(frozen=True)
class BlockGrid:
    suite: str
    level: str
    holds: str  # what one square holds, in words
    rows: list[Row]
    columns: list[Column]
    at: dict[tuple[Row, Column], Block]
    cells: list[Mapping[str, Any]]


def fold(grid: Grid, max_squares: int) -> BlockGrid:
    """The grid as blocks, at the finest level with at most `max_squares` squares (else the coarsest)."""
    for chosen in _LEVELS:
        level, holds, row_key_of, column_key_of = chosen
        if level == "node" and len(grid.rows) * len(grid.columns) > max_squares:
            continue  # the grid's own rows and columns: too many, without placing a cell
        placed = [(row_key_of(c), column_key_of(c), c) for c in grid.cells]  # already in report order
        rows = sorted({row for row, _, _ in placed}, key=row_key)
        columns = sorted({column for _, column, _ in placed}, key=column_key)
        if len(rows) * len(columns) <= max_squares:
            break
    grouped: dict[tuple[Row, Column], list[Mapping[str, Any]]] = {}
    for row, column, cell in placed:
        grouped.setdefault((row, column), []).append(cell)
    at = {}
    for (row, column), cells in grouped.items():
        tally = {v: n for v, n in count(cells).items() if n}
        at[(row, column)] = Block(row, column, cells, tally, min(tally, key=severity))
    return BlockGrid(grid.suite, level, holds, rows, columns, at, grid.cells)


def cluster_pairs(
    cells: Sequence[Mapping[str, Any]],
) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, int]]]:
    """Source clusters, target clusters, and the counts per verdict of each pair that has cells."""
    by_pair: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for cell in cells:
        by_pair.setdefault((source_cluster(cell), target_cluster(cell)), []).append(cell)
    sources = sorted({s for s, _ in by_pair}, key=lambda s: row_key((s, "")))
    targets = sorted({t for _, t in by_pair}, key=lambda t: column_key((t, "")))
    return sources, targets, {pair: {v: n for v, n in count(c).items() if n} for pair, c in by_pair.items()}


# --------------------------------------------------------------------------- the details, as data


def _common_prefix(values: Sequence[str]) -> str:
    first, last = min(values), max(values)  # what the smallest and the largest share, all share
    shared = min(len(first), len(last))
    return first[: next((i for i in range(shared) if first[i] != last[i]), shared)]


_LEFT_TO_THE_LISTS = frozenset({"message", "repro", "evidence", "test"})
DETAIL_FIELDS: tuple[str, ...] = (
    "verdict",
    "link",
    *(label for label, _ in cell_fields({}) if label not in _LEFT_TO_THE_LISTS),
)
"""The fields of a cell in the page's data: its verdict, the anchor of its entry in the failure
lists (if any), then what a details panel shows ("cell" holds the id), message, repro, evidence
and test id left to the lists and matrix.json."""


@dataclass
class CellData:
    """The details of the cells, block by block; ``add`` a block, then ``dumps`` them."""

    links: Mapping[int, str]  # id(cell) -> anchor of its entry in the failure lists
    detailed: Callable[[Mapping[str, Any]], bool] = lambda _cell: True
    _strings: dict[str, int] = field(default_factory=lambda: {"": 0})
    _blocks: list[Block] = field(default_factory=list)
    _data: list[list[Any]] = field(default_factory=list)

    def add(self, block: Block) -> int:
        """The block's number: what its square names (``data-b``)."""
        self._blocks.append(block)
        cells = [c for c in block.cells if self.detailed(c)]
        rows = [self._values(c) for c in cells]
        at = DETAIL_FIELDS.index("cell")
        prefix = _common_prefix([r[at] for r in rows]) if len(rows) > 1 else ""
        for r in rows:
            r[at] = r[at][len(prefix) :]
        columns = list(zip(*rows, strict=True))  # one tuple per field
        shared = [self._string(c[0]) if len(set(c)) == 1 else -1 for c in columns] or [0] * len(DETAIL_FIELDS)
        varying = [f for f, s in enumerate(shared) if s < 0]
        packed = [[self._string(r[f]) for f in varying] for r in rows]
        self._data.append([self._string(prefix), shared, packed, len(block.cells) - len(cells)])
        return len(self._data) - 1

    def narrowed(self, detailed: Callable[[Mapping[str, Any]], bool]) -> CellData:
        """The same blocks (same numbers), detailing only the cells `detailed` keeps."""
        again = CellData(self.links, detailed)
        for block in self._blocks:
            again.add(block)
        return again

    def dumps(self) -> str:
        """JSON safe inside a ``<script type="application/json">`` element: no ``<``, ``>`` or ``&``."""
        data = {
            "fields": DETAIL_FIELDS,
            "strings": list(self._strings),
            "blocks": self._data,
            "glyphs": {v: GLYPHS[v] for v in VERDICTS},
        }
        raw = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")

    def _values(self, cell: Mapping[str, Any]) -> list[str]:
        shown = dict(cell_fields(cell))
        extra = {"verdict": text(cell.get("verdict")), "link": self.links.get(id(cell), "")}
        return [extra[f] if f in extra else shown[f] for f in DETAIL_FIELDS]

    def _string(self, value: str) -> int:
        return self._strings.setdefault(value, len(self._strings))
