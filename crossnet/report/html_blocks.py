"""matrix.html for a large run: blocks instead of cells, details on demand, bounded size.

Drawing every cell (``html``) takes about 2 KB a cell: 50-60 MB at 24,000 cells, which no browser
opens comfortably. Past ``DETAILED_MAX_CELLS`` cells (or a page that would pass ~8 MB) the page is
built from ``blocks`` instead:

- per run, a table of source cluster x target cluster with the counts per verdict;
- per suite, one square per block (source x target, every protocol together), coloured by its
  worst verdict, its counts in the tooltip; a click lists the block's cells and their details,
  read by a small inline script from JSON embedded once (``blocks.CellData``);
- every failing and flaky cell in the lists below with its message and repro; an evidence text
  shared by several cells (the plugin collects it once per path) is shown once, collapsed.

Everything stays within budgets (squares per suite, cells listed with their details, characters of
evidence, bytes of cell data); what a budget leaves out is said on the page and is in matrix.json.
The page needs no network: no external asset, and without JavaScript the squares link to the lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from crossnet.report.blocks import DETAILED_MAX_CELLS, BlockGrid, CellData, cluster_pairs, fold
from crossnet.report.document import VERDICTS, count, counts, failing_verdicts, severity, text
from crossnet.report.layout import (
    Grid,
    column_label,
    describe_expected,
    describe_observed,
    failures,
    flaky,
    row_label,
    row_of,
)
from crossnet.report.view import Tally, Verdict, environment, legend, node_facts, run_facts, verdict_view

__all__ = [
    "DATA_BUDGET",
    "DETAILED_MAX_CELLS",
    "EVIDENCE_BUDGET",
    "MAX_LISTED",
    "MAX_SQUARES",
    "render",
    "wanted",
]

_TEMPLATE = "matrix-blocks.html.j2"

_FULL_PAGE_BUDGET = 8_000_000  # bytes a page drawing every cell may reach before it is folded
_FULL_PAGE_CELL = 2_000  # about what one cell costs there, evidence aside (which it shows twice)
MAX_SQUARES = 5_000
"""Squares of one suite's table, before targets, then sources, are folded to their cluster."""
MAX_LISTED = 1_000
"""Cells of one list (failures, flaky) shown with their details; the others by id only."""
EVIDENCE_BUDGET = 2_500_000
"""Characters of (distinct) evidence the lists show; later evidence is left to matrix.json."""
DATA_BUDGET = 3_000_000
"""Bytes of cell details behind the squares; past it only the cells that neither passed nor stayed
isolated are detailed, the others counted."""


def wanted(grids: Sequence[Grid]) -> bool:
    """Whether a run is too large to draw cell by cell."""
    cells = sum(len(g.cells) for g in grids)
    if cells > DETAILED_MAX_CELLS:
        return True
    evidence = sum(len(text(c.get("evidence"))) for g in grids for c in g.cells)
    return cells * _FULL_PAGE_CELL + 2 * evidence > _FULL_PAGE_BUDGET


# --------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class Square:
    """One block: its number in the data, colour and glyph of its worst verdict, how many cells
    have that verdict (when the block is mixed), counts in words, and the failure it links to."""

    number: int
    vclass: str
    glyph: str
    n: str
    title: str
    link: str


@dataclass(frozen=True)
class SquareRow:
    label: str
    src_ip: str
    squares: list[Square | None]  # None: nothing probed there


@dataclass(frozen=True)
class BlocksView:
    suite: str
    tally: list[Tally]
    holds: str
    columns: list[tuple[str, str]]  # (target, kind)
    rows: list[SquareRow]


@dataclass(frozen=True)
class Pair:
    vclass: str
    title: str
    tally: list[Tally]


@dataclass(frozen=True)
class PairRow:
    source: str
    pairs: list[Pair | None]


@dataclass(frozen=True)
class Evidence:
    text: str  # shown here ("" when shown at `first` or left out)
    size: str  # e.g. "5.2 KB, 64 lines"
    shared: int  # listed cells with this same evidence
    first: str  # anchor of the entry that shows it, when not this one
    left_out: bool  # past EVIDENCE_BUDGET


@dataclass(frozen=True)
class Item:
    anchor: str
    verdict: Verdict
    cell_id: str
    expected: str
    observed: str
    message: str
    repro: str
    evidence: Evidence | None


@dataclass(frozen=True)
class ItemList:
    title: str
    note: str
    items: list[Item]  # with their details
    brief: list[Item]  # past MAX_LISTED: id and verdict only

    @property
    def total(self) -> int:
        return len(self.items) + len(self.brief)


def _tally_words(tally: Mapping[str, int]) -> str:
    return ", ".join(f"{v} {n}" for v, n in tally.items())


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


def _blocks_view(grid: BlockGrid, data: CellData) -> BlocksView:
    ips: dict[tuple[str, str], str] = {}
    for cell in grid.cells:
        if cell.get("src_ip"):
            ips.setdefault(row_of(cell), text(cell.get("src_ip")))
    rows: list[SquareRow] = []
    for row in grid.rows:
        squares: list[Square | None] = []
        for column in grid.columns:
            block = grid.at.get((row, column))
            if block is None:
                squares.append(None)
                continue
            worst = verdict_view(block.worst)
            link = next((data.links[id(c)] for c in block.cells if id(c) in data.links), "")
            squares.append(
                Square(
                    number=data.add(block),
                    vclass=worst.vclass,
                    glyph=worst.glyph,
                    n=str(block.tally[block.worst]) if len(block.tally) > 1 else "",
                    title=f"{row_label(row)} \u2192 {column_label(column)}: {_cells(len(block.cells))}: "
                    + _tally_words(block.tally),
                    link=link,
                )
            )
        rows.append(SquareRow(row_label(row), ips.get(row, ""), squares))
    return BlocksView(
        suite=grid.suite,
        tally=[Tally(verdict_view(v), n) for v, n in count(grid.cells).items() if n],
        holds=grid.holds,
        columns=list(grid.columns),
        rows=rows,
    )


def _pairs_view(cells: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[PairRow]]:
    sources, targets, tallies = cluster_pairs(cells)
    rows = []
    for source in sources:
        pairs: list[Pair | None] = []
        for target in targets:
            tally = tallies.get((source, target))
            if tally is None:
                pairs.append(None)
                continue
            title = f"{source} \u2192 {target}: {_cells(sum(tally.values()))}: {_tally_words(tally)}"
            worst = min(tally, key=severity)
            pairs.append(Pair(verdict_view(worst).vclass, title, [Tally(verdict_view(v), n) for v, n in tally.items()]))
        rows.append(PairRow(source, pairs))
    return targets, rows


def _size(evidence: str) -> str:
    return f"{len(evidence.encode('utf-8')) / 1000:.1f} KB, {evidence.count(chr(10)) + 1} lines"


class _Lists:
    """The failure lists' entries: anchors f1, f2, ... and the evidence each shows or refers to."""

    def __init__(self, listed: Iterable[Mapping[str, Any]]) -> None:
        self.links: dict[int, str] = {}
        self.uses: dict[str, int] = {}
        for cell in listed:
            self.links[id(cell)] = f"f{len(self.links) + 1}"
            evidence = text(cell.get("evidence"))
            if evidence:
                self.uses[evidence] = self.uses.get(evidence, 0) + 1
        self.shown_at: dict[str, str] = {}
        self.spent = 0

    def evidence(self, cell: Mapping[str, Any]) -> Evidence | None:
        evidence = text(cell.get("evidence"))
        if not evidence:
            return None
        size, shared = _size(evidence), self.uses[evidence]
        if evidence in self.shown_at:
            return Evidence("", size, shared, self.shown_at[evidence], False)
        if self.spent + len(evidence) > EVIDENCE_BUDGET:
            return Evidence("", size, shared, "", True)
        self.spent += len(evidence)
        self.shown_at[evidence] = self.links[id(cell)]
        return Evidence(evidence, size, shared, "", False)

    def item(self, cell: Mapping[str, Any], full: bool) -> Item:
        def shown(key: str) -> str:
            return text(cell.get(key)) if full and cell.get(key) else ""

        return Item(
            anchor=self.links[id(cell)],
            verdict=verdict_view(text(cell.get("verdict"))),
            cell_id=text(cell.get("id")),
            expected=describe_expected(cell) if full else "",
            observed=describe_observed(cell) if full else "",
            message=shown("message"),
            repro=shown("repro"),
            evidence=self.evidence(cell) if full else None,
        )

    def section(self, title: str, note: str, cells: Sequence[Mapping[str, Any]]) -> ItemList:
        return ItemList(
            title,
            note,
            [self.item(c, True) for c in cells[:MAX_LISTED]],
            [self.item(c, False) for c in cells[MAX_LISTED:]],
        )


# --------------------------------------------------------------------------- rendering


def render(matrix: Mapping[str, Any], grids: Sequence[Grid]) -> str:
    """matrix.html of a large run, from its grids (``layout.suites``)."""
    ordered = [cell for grid in grids for cell in grid.cells]
    failed, flakes = failures(matrix, ordered), flaky(matrix, ordered)
    lists = _Lists([*failed, *flakes])
    sections = [lists.section("Failures", "", failed)]
    if flakes:
        note = "Failed, then passed on the single re-probe; these fail the run only with --strict-flakes."
        sections.append(lists.section("Flaky", note, flakes))
    data = CellData(lists.links)
    views = [_blocks_view(fold(grid, MAX_SQUARES), data) for grid in grids]
    dumped, narrowed = data.dumps(), False
    if len(dumped.encode("utf-8")) > DATA_BUDGET:
        dumped, narrowed = data.narrowed(lambda c: text(c.get("verdict")) not in ("pass", "isolated")).dumps(), True
    tally = counts(matrix)
    failing = failing_verdicts(matrix)
    targets, pairs = _pairs_view(ordered)
    return (
        environment()
        .get_template(_TEMPLATE)
        .render(
            run=run_facts(matrix),
            total=sum(tally.values()),
            failing=sum(n for v, n in tally.items() if v in failing or v not in VERDICTS),
            tally=[Tally(verdict_view(v), n) for v, n in tally.items()],
            legend=legend(matrix),
            targets=targets,
            pairs=pairs,
            grids=views,
            sections=sections,
            max_listed=MAX_LISTED,
            facts=node_facts(matrix),
            data=Markup(dumped),  # JSON without < > & (CellData.dumps): inert in its script element
            narrowed=narrowed,
        )
    )
