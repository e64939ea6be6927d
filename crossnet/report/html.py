"""matrix.html: one self-contained page (inline CSS, no script, no external asset).

A grid per suite (rows: source vantage, columns: target with one sub-column per protocol), glyph
and colour per verdict, a tooltip and a click-to-open details panel per cell, then the failures
with their repro commands and evidence.

The markup is the Jinja2 template ``templates/matrix.html.j2``; this module only turns the matrix
into plain values for it (a view), so every value reaches the page through the template's escaping.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from markupsafe import Markup

from crossnet.report.document import (
    VERDICTS,
    count,
    counts,
    failing_verdicts,
    glyph,
    plumbing_facts,
    run_of,
    severity,
    strict_flakes,
    text,
)
from crossnet.report.layout import (
    Grid,
    answers,
    describe_expected,
    describe_observed,
    failures,
    flaky,
    latency,
    row_label,
    row_of,
    rule,
    suites,
)

__all__ = ["render_html"]

_TEMPLATE = "matrix.html.j2"

_LEGEND: dict[str, str] = {
    "pass": "expected reachable, reached (with the expected source)",
    "isolated": "expected unreachable, was unreachable",
    "regression": "expected reachable, was not",
    "leak": "expected unreachable, was reachable",
    "source-mismatch": "reached, but the target saw an unexpected source IP",
    "flaky": "failed, then passed on the re-probe",
    "optional": "the profile does not require it either way",
}


# --------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class Verdict:
    name: str
    vclass: str  # the CSS class that colours it
    glyph: str


@dataclass(frozen=True)
class Tally:
    verdict: Verdict
    n: int
    note: str = ""  # the legend's explanation


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


def _verdict(name: str) -> Verdict:
    return Verdict(name, f"v-{name}" if name in VERDICTS else "v-unknown", glyph(name))


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


def _joined(cell: Mapping[str, Any], *keys: str) -> str:
    return " ".join(text(cell.get(key)) for key in keys).strip()


def _panel(anchor: str, cell: Mapping[str, Any]) -> Panel:
    fields = [
        Field("cell", text(cell.get("id")), False),
        Field("source", _joined(cell, "src", "src_kind", "src_ip"), False),
        Field("target", _joined(cell, "dst", "dst_kind", "dst_addr"), False),
        Field("protocol", text(cell.get("protocol")), False),
        Field("expected", describe_expected(cell), False),
        Field("observed", text(cell.get("observed")), False),
        Field("source IP seen", text(cell.get("source_ip")), False),
        Field("global IP", text(cell.get("global_ip")), False),
        Field("latency", latency(cell), False),
        Field("answers", answers(cell), False),
        Field("re-probed", "yes" if cell.get("retried") else "", False),
        Field("rule", text(cell.get("rule")), False),
        Field("because", text(cell.get("because")), False),
        Field("expected source from", text(cell.get("expected_source")), False),
        Field("message", text(cell.get("message")), False),
        Field("repro", text(cell.get("repro")), True),
        Field("evidence", text(cell.get("evidence")), True),
        Field("test", text(cell.get("nodeid")), False),
    ]
    return Panel(anchor, _verdict(text(cell.get("verdict"))), [f for f in fields if f.text])


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


def _run_facts(matrix: Mapping[str, Any]) -> dict[str, str | None]:
    run = run_of(matrix)
    clusters = run.get("clusters")
    duration = run.get("duration_s")
    exit_status = run.get("exit_status")
    return {
        "provider": text(run.get("provider")),
        "profile": text(run.get("profile")),
        "clusters": ", ".join(text(c) for c in clusters) if isinstance(clusters, list) else text(clusters),
        "started": text(run.get("started")),
        "duration": f"{duration:.1f} s" if isinstance(duration, (int, float)) else text(duration),
        "exit_status": None if exit_status is None else text(exit_status),
        "incomplete": (
            ("still running, or killed before it could say" if exit_status is None else f"exit status {exit_status}")
            if run.get("complete") is False
            else None
        ),
        "not_probed": text(run.get("not_probed")) if run.get("not_probed") else None,
    }


def _legend(matrix: Mapping[str, Any]) -> list[Tally]:
    flaky_note = (
        " (fails this run: strict flakes)" if strict_flakes(matrix) else " (fails the run only with --strict-flakes)"
    )
    return [Tally(_verdict(v), 0, _LEGEND[v] + (flaky_note if v == "flaky" else "")) for v in VERDICTS]


# --------------------------------------------------------------------------- rendering


def _finalize(value: object) -> Markup:
    """Every ``{{ value }}`` of the template: None is empty, and text is escaped here with
    ``html.escape`` (the five characters & < > " ', as markupsafe would, spelt as the page always
    spelt them). Autoescape stays on: a value that skipped this would still be escaped."""
    if isinstance(value, Markup):  # a macro's output, already escaped
        return value
    return Markup(html.escape(text(value), quote=True))


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("crossnet.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(matrix: Mapping[str, Any]) -> str:
    """matrix.html: one self-contained page, readable offline (no script, no external asset)."""
    grids = suites(matrix)
    anchors: dict[int, str] = {}
    for grid in grids:
        for cell in grid.cells:
            anchors[id(cell)] = f"c{len(anchors) + 1}"
    ordered = [cell for grid in grids for cell in grid.cells]
    tally = counts(matrix)
    failing = failing_verdicts(matrix)
    return (
        _environment()
        .get_template(_TEMPLATE)
        .render(
            run=_run_facts(matrix),
            total=sum(tally.values()),
            failing=sum(n for v, n in tally.items() if v in failing or v not in VERDICTS),
            tally=[Tally(_verdict(v), n) for v, n in tally.items()],
            legend=_legend(matrix),
            grids=[_grid(grid, anchors) for grid in grids],
            sections=_sections(matrix, ordered, anchors),
            facts=[
                {
                    **f,
                    "verdict": Verdict("holds", "v-pass", glyph("pass"))
                    if f["ok"]
                    else Verdict("fails", "v-regression", glyph("regression")),
                }
                for f in plumbing_facts(matrix)
            ],
        )
    )
