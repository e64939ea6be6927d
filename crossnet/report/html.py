"""matrix.html: one self-contained page (inline CSS, no script, no external asset).

A grid per suite (rows: source vantage, columns: target with one sub-column per protocol), glyph
and colour per verdict, a tooltip and a click-to-open details panel per cell, then the failures
with their repro commands and evidence.

The markup is the Jinja2 template ``templates/matrix.html.j2``; this module only turns the matrix
into plain values for it (a view), so every value reaches the page through the template's escaping.

A run too large to draw cell by cell (``html_blocks.wanted``: over a few thousand cells, or a page
that would pass ~8 MB) is folded into blocks instead: see ``crossnet.report.html_blocks``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import crossnet.report.html_blocks as html_blocks
from crossnet.report.document import (
    VERDICTS,
    count,
    counts,
    failing_verdicts,
    glyph,
    severity,
    text,
)
from crossnet.report.layout import (
    Grid,
    describe_expected,
    describe_observed,
    failures,
    flaky,
    row_label,
    row_of,
    rule,
    suites,
)
from crossnet.report.view import (
    Tally,
    Verdict,
    cell_fields,
    environment,
    legend,
    node_facts,
    run_facts,
)
from crossnet.report.view import verdict_view as _verdict

__all__ = ["render_html"]

_TEMPLATE = "matrix.html.j2"

_environment = environment  # the templates' environment (tests look at it here)


# --------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class Link:
    """One cell inside a grid position: its glyph, linking to its details panel."""

    anchor: str
    tooltip: str
    cell_id: str
    glyph: str
    source_ip: str


@dataclass(frozen=True)
class Position:
    """One grid position (source x target x protocol), coloured by its worst cell."""

    vclass: str
    links: list[Link]


@dataclass(frozen=True)
class GridRow:
    label: str
    src_ip: str
    positions: list[Position | None]  # None: not probed


@dataclass(frozen=True)
class Field:
    label: str
    text: str
    pre: bool  # preformatted (commands, evidence)


@dataclass(frozen=True)
class Panel:
    anchor: str
    verdict: Verdict
    fields: list[Field]


@dataclass(frozen=True)
class GridView:
    suite: str
    tally: list[Tally]
    columns: list[tuple[str, str, int]]  # (dst, dst_kind, protocols)
    protocols: list[str]
    rows: list[GridRow]
    panels: list[Panel]


@dataclass(frozen=True)
class Failure:
    anchor: str
    verdict: Verdict
    cell_id: str
    expected: str
    observed: str
    message: str
    repro: str
    evidence: str


@dataclass(frozen=True)
class Section:
    title: str
    note: str
    items: list[Failure]


def _tooltip(cell: Mapping[str, Any]) -> str:
    lines = [
        text(cell.get("id")),
        f"{text(cell.get('verdict'))}: expected {describe_expected(cell)}; observed {describe_observed(cell)}",
    ]
    because = rule(cell)
    if because:
        lines.append(f"rule {because}")
    message = text(cell.get("message"))
    if message:
        lines.append(message)
    return "\n".join(lines)


_PRE = ("repro", "evidence")  # preformatted fields of a panel


def _panel(anchor: str, cell: Mapping[str, Any]) -> Panel:
    fields = [Field(label, value, label in _PRE) for label, value in cell_fields(cell) if value]
    return Panel(anchor, _verdict(text(cell.get("verdict"))), fields)


def _grid(grid: Grid, anchors: Mapping[int, str]) -> GridView:
    rows: list[GridRow] = []
    for row in grid.rows:
        src_ip = next((text(c.get("src_ip")) for c in grid.cells if row_of(c) == row and c.get("src_ip")), "")
        positions: list[Position | None] = []
        for column in grid.columns:
            for protocol in grid.protocols[column]:
                here = grid.at.get((row, column, protocol), [])
                if not here:
                    positions.append(None)
                    continue
                worst = min((text(c.get("verdict")) for c in here), key=severity)
                links = [
                    Link(
                        anchors[id(c)],
                        _tooltip(c),
                        text(c.get("id")),
                        glyph(text(c.get("verdict"))),
                        text(c.get("source_ip")),
                    )
                    for c in here
                ]
                positions.append(Position(_verdict(worst).vclass, links))
        rows.append(GridRow(row_label(row), src_ip, positions))
    return GridView(
        suite=grid.suite,
        tally=[Tally(_verdict(v), n) for v, n in count(grid.cells).items() if n],
        columns=[(c[0], c[1], len(grid.protocols[c])) for c in grid.columns],
        protocols=[p for c in grid.columns for p in grid.protocols[c]],
        rows=rows,
        panels=[_panel(anchors[id(c)], c) for c in grid.cells],
    )


def _failure(cell: Mapping[str, Any], anchors: Mapping[int, str]) -> Failure:
    def shown(key: str) -> str:
        return text(cell.get(key)) if cell.get(key) else ""

    return Failure(
        anchor=anchors[id(cell)],
        verdict=_verdict(text(cell.get("verdict"))),
        cell_id=text(cell.get("id")),
        expected=describe_expected(cell),
        observed=describe_observed(cell),
        message=shown("message"),
        repro=shown("repro"),
        evidence=shown("evidence"),
    )


def _sections(
    matrix: Mapping[str, Any], ordered: Sequence[Mapping[str, Any]], anchors: Mapping[int, str]
) -> list[Section]:
    sections = [Section("Failures", "", [_failure(c, anchors) for c in failures(matrix, ordered)])]
    flakes = flaky(matrix, ordered)
    if flakes:
        note = "Failed, then passed on the single re-probe; these fail the run only with --strict-flakes."
        sections.append(Section("Flaky", note, [_failure(c, anchors) for c in flakes]))
    return sections


# --------------------------------------------------------------------------- rendering


def render_html(matrix: Mapping[str, Any]) -> str:
    """matrix.html: one self-contained page, readable offline (no external asset). A run of up to a few
    thousand cells shows every cell (no script); a larger one is folded into blocks (``html_blocks``)."""
    grids = suites(matrix)
    if html_blocks.wanted(grids):
        return html_blocks.render(matrix, grids)
    anchors: dict[int, str] = {}
    for grid in grids:
        for cell in grid.cells:
            anchors[id(cell)] = f"c{len(anchors) + 1}"
    ordered = [cell for grid in grids for cell in grid.cells]
    tally = counts(matrix)
    failing = failing_verdicts(matrix)
    return (
        environment()
        .get_template(_TEMPLATE)
        .render(
            run=run_facts(matrix),
            total=sum(tally.values()),
            failing=sum(n for v, n in tally.items() if v in failing or v not in VERDICTS),
            tally=[Tally(_verdict(v), n) for v, n in tally.items()],
            legend=legend(matrix),
            grids=[_grid(grid, anchors) for grid in grids],
            sections=_sections(matrix, ordered, anchors),
            facts=node_facts(matrix),
        )
    )
