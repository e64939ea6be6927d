"""summary.md: compact Markdown for ``$GITHUB_STEP_SUMMARY``, size-bounded.

Counts, a glyph table per suite, then the failures with their repro commands. GitHub refuses step
summaries over 1 MiB: fields are clipped, lists capped (each ends "… and N more (see matrix.html /
matrix.json)"), and tables give way first, never the failures. A large run (``DETAILED_MAX_CELLS``)
also gets a table per cluster pair; a suite table too large for the summary is folded to clusters
(``blocks.fold``) before it is left out.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

from crossnet.report.blocks import DETAILED_MAX_CELLS, cluster_pairs, fold
from crossnet.report.document import (
    VERDICTS,
    clip,
    count,
    counts,
    glyph,
    plumbing_facts,
    run_of,
    severity,
    strict_flakes,
    text,
)
from crossnet.report.layout import Grid, column_label, failures, flaky, protocol_key, row_label, suites

__all__ = ["SUMMARY_MAX_FAILURES", "render_summary"]

SUMMARY_MAX_FAILURES = 200
_SUMMARY_MAX_COLUMNS = 12
_SUMMARY_MAX_GRID = 10_000  # rows x columns of one suite table before it is left out
_SUMMARY_FIELD_CHARS = 300
_SUMMARY_BUDGET = 768 * 1024  # bytes; tables give way first, never the failures
_SUMMARY_MAX_PAIRS = 400  # cluster pairs in the per-cluster table (20 x 20 clusters)

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def _md(value: str) -> str:
    """Plain text for a Markdown paragraph or table cell (GitHub flavour)."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(clip(value, _SUMMARY_FIELD_CHARS), quote=False))


def _md_code(value: str) -> str:
    """An inline code span holding ``value`` literally (no HTML, no Markdown inside)."""
    value = clip(value, _SUMMARY_FIELD_CHARS)
    longest = max((len(run) for run in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    if value.startswith("`") or value.endswith("`"):
        value = f" {value} "
    return f"{fence}{value}{fence}"


def _counts_line(tally: Mapping[str, int], *, zeros: bool) -> str:
    return " \u00b7 ".join(f"{glyph(v)} {_md(v)} {n}" for v, n in tally.items() if n or zeros)


def _md_table(grid: Grid) -> list[str]:
    columns_full = [(c, p) for c in grid.columns for p in grid.protocols[c]]
    collapse = len(columns_full) > _SUMMARY_MAX_COLUMNS
    width = len(grid.columns) if collapse else len(columns_full)
    if len(grid.rows) * width > _SUMMARY_MAX_GRID:
        return _md_folded(grid, width)
    if collapse:
        header = [_md(column_label(c)) for c in grid.columns]
    else:
        # the target label once, over its first protocol; the others show the protocol only
        header = [
            f"{_md(column_label(c))}<br>{_md(p)}" if p == grid.protocols[c][0] else _md(p) for c, p in columns_full
        ]
    out = [
        "| source | " + " | ".join(header) + " |",
        "|---|" + "|".join(":-:" for _ in header) + "|",
    ]
    for row in grid.rows:
        glyphs: list[str] = []
        if collapse:
            for column in grid.columns:
                verdicts = [
                    text(cell.get("verdict"))
                    for p in grid.protocols[column]
                    for cell in grid.at.get((row, column, p), [])
                ]
                glyphs.append(glyph(min(verdicts, key=severity)) if verdicts else "")
        else:
            for column, protocol in columns_full:
                here = grid.at.get((row, column, protocol), [])
                glyphs.append("".join(glyph(text(c.get("verdict"))) for c in here))
        out.append(f"| {_md(row_label(row))} | " + " | ".join(glyphs) + " |")
    if collapse:
        out.append("")
        out.append(
            "_protocols collapsed: each target shows its worst verdict over "
            + ", ".join(sorted({p for _, p in columns_full}, key=protocol_key))
            + "_"
        )
    return out


def _md_folded(grid: Grid, width: int) -> list[str]:
    """A suite too large for a table of its own: folded to clusters (blocks.fold), worst verdict per block."""
    folded = fold(grid, _SUMMARY_MAX_GRID)
    too_large = f"grid of {len(grid.rows)} sources \u00d7 {width} targets is too large for the summary"
    if len(folded.rows) * len(folded.columns) > _SUMMARY_MAX_GRID:
        return [f"_{too_large}; see matrix.html_"]
    header = [_md(column_label(c)) for c in folded.columns]
    out = [
        "| source | " + " | ".join(header) + " |",
        "|---|" + "|".join(":-:" for _ in header) + "|",
    ]
    for row in folded.rows:
        blocks = [folded.at.get((row, column)) for column in folded.columns]
        out.append(f"| {_md(row_label(row))} | " + " | ".join(glyph(b.worst) if b else "" for b in blocks) + " |")
    out += ["", f"_{too_large}: each square is the worst verdict of {_md(folded.holds)}; see matrix.html_"]
    return out


def _md_pairs(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    """Cells per source and target cluster, counts per verdict (a large run's overview)."""
    sources, targets, tallies = cluster_pairs(cells)
    out = ["### cluster pairs", ""]
    if len(sources) * len(targets) > _SUMMARY_MAX_PAIRS:
        return [
            *out,
            f"_{len(sources)} \u00d7 {len(targets)} cluster pairs, too many for the summary; see matrix.html_",
            "",
        ]
    out += [
        "| source \\ target | " + " | ".join(_md(t) for t in targets) + " |",
        "|---|" + "|".join(":-:" for _ in targets) + "|",
    ]
    for source in sources:
        tallies_of = [tallies.get((source, target), {}) for target in targets]
        shown = [" \u00b7 ".join(f"{glyph(v)} {n}" for v, n in tally.items()) for tally in tallies_of]
        out.append(f"| {_md(source)} | " + " | ".join(shown) + " |")
    return [*out, "", "_cells per source and target cluster, every suite, by verdict (see the legend)_", ""]


def _md_cell_item(cell: Mapping[str, Any]) -> str:
    verdict = text(cell.get("verdict"))
    parts = [f"- {glyph(verdict)} **{_md(verdict)}** {_md_code(text(cell.get('id')))}"]
    message = text(cell.get("message"))
    if message:
        parts.append(_md(message))
    repro = text(cell.get("repro"))
    if repro:
        parts.append("repro: " + _md_code(repro))
    return "<br>".join(parts)


def _md_list(cells: Sequence[Mapping[str, Any]], cap: int) -> list[str]:
    out = [_md_cell_item(c) for c in cells[:cap]]
    if len(cells) > cap:
        out.append(f"- \u2026 and {len(cells) - cap} more (see matrix.html / matrix.json)")
    return out


def _md_head(matrix: Mapping[str, Any], cells: int, failing: int) -> list[str]:
    run = run_of(matrix)
    status = "\u2717" if failing else "\u2713"
    clusters = run.get("clusters")
    cluster_text = ", ".join(text(c) for c in clusters) if isinstance(clusters, list) else text(clusters)
    duration = run.get("duration_s")
    duration_text = f"{duration:.1f} s" if isinstance(duration, (int, float)) else ""
    facts = (
        f"clusters {_md(cluster_text)}" if cluster_text else "",
        f"started {_md(text(run.get('started')))}" if run.get("started") else "",
        f"duration {duration_text}" if duration_text else "",
        f"exit status {_md(text(run.get('exit_status')))}" if run.get("exit_status") is not None else "",
    )
    not_probed = run.get("not_probed") if isinstance(run.get("not_probed"), int) else 0
    incomplete = run.get("complete") is False
    if incomplete or not_probed:
        status = "\u2717"
    ended = (
        "still running, or killed before it could say"
        if run.get("exit_status") is None
        else f"exit status {text(run.get('exit_status'))}" + (", interrupted" if run.get("interrupted") else "")
    )
    warnings = [
        f"**the run did not complete** ({_md(ended)}): only the cells judged before it ended are below"
        if incomplete
        else "",
        f"**infrastructure error: {not_probed} cells not probed** (an agent or the sandbox failed; see the "
        "pytest errors: these are not network verdicts)"
        if not_probed
        else "",
    ]
    shown = [w for w in warnings if w]
    return [
        *([*shown, ""] if shown else []),
        (
            f"## {status} crossnet {_md(text(run.get('profile')))} "
            f"({_md(text(run.get('provider')))}): {cells} cells, {failing} failing "
            f"\u2014 {_counts_line(counts(matrix), zeros=False)}"
        ),
        "",
        " \u00b7 ".join(part for part in facts if part),
        "",
        "Legend: "
        + " \u00b7 ".join(f"{glyph(v)} {v}" for v in VERDICTS)
        + (
            " (flaky fails the run only with --strict-flakes)"
            if not strict_flakes(matrix)
            else " (strict flakes: flaky fails the run)"
        ),
        "",
    ]


def render_summary(matrix: Mapping[str, Any], *, max_failures: int = SUMMARY_MAX_FAILURES) -> str:
    """summary.md for ``$GITHUB_STEP_SUMMARY``: counts, a glyph table per suite, failures."""
    grids = suites(matrix)
    ordered = [cell for grid in grids for cell in grid.cells]
    failed = failures(matrix, ordered)
    flakes = flaky(matrix, ordered)
    out = _md_head(matrix, len(ordered), len(failed))
    if len(ordered) > DETAILED_MAX_CELLS:
        out += _md_pairs(ordered)
    tail = [f"### Failures ({len(failed)})", ""]
    tail += _md_list(failed, max_failures) if failed else ["none"]
    tail.append("")
    if flakes:
        tail += [f"### Flaky ({len(flakes)})", ""]
        tail += _md_list(flakes, max(1, max_failures // 4))
        tail.append("")
    facts = plumbing_facts(matrix)
    if facts:
        broken = [f for f in facts if not f["ok"]]
        tail += [f"### Plumbing: {len(facts)} node facts, {len(broken)} failing", ""]
        tail += [
            f"- `{clip(f['id'], 200)}`: expected {clip(f['expected'], 200)}; found {clip(f['observed'], 200)}"
            for f in broken[:max_failures]
        ]
        if len(broken) > max_failures:
            tail.append(f"- \u2026 and {len(broken) - max_failures} more failing facts (see matrix.html / matrix.json)")
        if not broken:
            tail.append("every fact holds")
        tail.append("")
    # Fields are clipped and lists capped, so only the tables can grow without bound: they get
    # what the header and the failures leave of the budget, suite by suite.
    left = _SUMMARY_BUDGET - _utf8_len(out) - _utf8_len(tail)
    for grid in grids:
        section = [
            f"### {_md(grid.suite)}",
            "",
            _counts_line(count(grid.cells), zeros=False),
            "",
            *_md_table(grid),
            "",
        ]
        if _utf8_len(section) > left:
            section = [
                *section[:4],
                "_table left out to keep the summary small; see matrix.html_",
                "",
            ]
        left -= _utf8_len(section)
        out += section
    return "\n".join(out + tail)


def _utf8_len(lines: Sequence[str]) -> int:
    return sum(len(line.encode("utf-8")) + 1 for line in lines)
