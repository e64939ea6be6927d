"""Reports from a judged matrix: matrix.json, matrix.html and summary.md.

Everything here works on the *matrix document* (schema ``crossnet.matrix/v1``), a plain dict
that is also what ``matrix.json`` holds, so reports can be rebuilt from a saved run and two runs
can be compared (``diff_matrices``) without a live topology. Stdlib only.

- ``matrix.html``: one self-contained file (inline CSS, no script, no external asset), a grid
  per suite (rows: source vantage, columns: target with one sub-column per protocol), glyph and
  colour per verdict, a tooltip and a click-to-open details panel per cell, then the failures
  with their repro commands and evidence.
- ``summary.md``: compact Markdown for ``$GITHUB_STEP_SUMMARY``, size-bounded.
"""

from __future__ import annotations

import html
import json
import re
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FAILING_VERDICTS",
    "GLYPHS",
    "MATRIX_SCHEMA",
    "VERDICTS",
    "CellChange",
    "ReportError",
    "counts",
    "diff_matrices",
    "failing_verdicts",
    "load_matrix",
    "render_diff",
    "render_html",
    "render_summary",
    "validate_matrix",
    "write_reports",
]

MATRIX_SCHEMA = "crossnet.matrix/v1"

VERDICTS: tuple[str, ...] = (
    "pass",
    "isolated",
    "regression",
    "leak",
    "source-mismatch",
    "flaky",
    "optional",
)
"""Every verdict, in the order reports list them."""

FAILING_VERDICTS: frozenset[str] = frozenset({"regression", "leak", "source-mismatch"})
"""Verdicts that fail a run; ``flaky`` joins them only under ``--strict-flakes``."""

GLYPHS: dict[str, str] = {
    "pass": "\u2713",  # ✓
    "isolated": "\u2298",  # ⊘
    "regression": "\u2717",  # ✗
    "leak": "!",
    "source-mismatch": "\u2260",  # ≠
    "flaky": "~",
    "optional": "?",
}

_UNKNOWN_GLYPH = "\u2022"  # • for a verdict this module does not know

# Worst first: used to pick one glyph when protocols are collapsed into one column.
_SEVERITY: tuple[str, ...] = (
    "regression",
    "leak",
    "source-mismatch",
    "flaky",
    "optional",
    "isolated",
    "pass",
)

_SUITE_ORDER: tuple[str, ...] = (
    "plumbing",
    "pod-to-pod",
    "service",
    "dns",
    "snat",
    "globalnet",
)
_SRC_KIND_ORDER: tuple[str, ...] = ("pod", "host", "external")
_DST_KIND_ORDER: tuple[str, ...] = (
    "pod-ip",
    "cluster-ip",
    "node-port",
    "headless",
    "dns-name",
    "global-ip",
)
_PROTOCOL_ORDER: tuple[str, ...] = (
    "tcp", "udp", "icmp", "tcp-1400b", "udp-1400b", "dns-udp", "dns-tcp", "dns-udp-1400b", "dns-tcp-1400b")

_REQUIRED_TOP = ("schema", "run", "cells")
_REQUIRED_RUN = ("provider", "profile", "clusters")
_REQUIRED_CELL = (
    "id",
    "suite",
    "src",
    "src_kind",
    "dst",
    "dst_kind",
    "protocol",
    "expected",
    "verdict",
    "observed",
)
_MAX_PROBLEMS = 20

# summary.md bounds (GitHub refuses step summaries over 1 MiB).
SUMMARY_MAX_FAILURES = 200
_SUMMARY_MAX_COLUMNS = 12
_SUMMARY_MAX_GRID = 10_000  # rows x columns of one suite table before it is left out
_SUMMARY_FIELD_CHARS = 300
_SUMMARY_BUDGET = 768 * 1024  # bytes; tables give way first, never the failures


class ReportError(ValueError):
    """A matrix document that cannot be used, with the file and every problem found."""


@dataclass(frozen=True)
class CellChange:
    """A cell whose verdict differs between two runs; ``None`` = absent from that run."""

    id: str
    suite: str
    old_verdict: str | None
    new_verdict: str | None


# --------------------------------------------------------------------------- loading


def _quote(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to about `limit` characters, without building the repr of a large value."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit])[:-1] + f"\u2026' ({len(value)} chars)"
    shower = reprlib.Repr()
    shower.maxlevel, shower.maxlist, shower.maxdict, shower.maxstring, shower.maxother = 2, 4, 4, limit, limit
    text = shower.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def validate_matrix(doc: object) -> list[str]:
    """Every problem of a matrix document (empty when it is usable)."""
    if not isinstance(doc, dict):
        return [f"top level is {type(doc).__name__}, expected a JSON object"]
    problems: list[str] = []
    if "schema" not in doc:
        problems.append(f'missing key "schema" (expected "{MATRIX_SCHEMA}")')
    elif doc["schema"] != MATRIX_SCHEMA:
        # A different schema means the rest cannot be judged by v1 rules.
        return [f"schema is {_quote(doc['schema'])}, expected {MATRIX_SCHEMA!r}"]
    for key in _REQUIRED_TOP[1:]:
        if key not in doc:
            problems.append(f'missing key "{key}"')
    run = doc.get("run")
    if "run" in doc:
        if not isinstance(run, dict):
            problems.append(f'"run" is {type(run).__name__}, expected an object')
        else:
            missing = [k for k in _REQUIRED_RUN if k not in run]
            if missing:
                problems.append("run: missing keys " + ", ".join(missing))
    cells = doc.get("cells")
    if "cells" in doc and not isinstance(cells, list):
        problems.append(f'"cells" is {type(cells).__name__}, expected a list')
    elif isinstance(cells, list):
        seen: set[str] = set()
        for index, cell in enumerate(cells):
            if not isinstance(cell, dict):
                problems.append(
                    f"cells[{index}]: {type(cell).__name__}, expected an object"
                )
                continue
            where = f"cells[{index}]"
            if isinstance(cell.get("id"), str):
                where += f" ({_clip(cell['id'], 120)})"
            missing = [k for k in _REQUIRED_CELL if k not in cell]
            if missing:
                problems.append(f"{where}: missing keys " + ", ".join(missing))
            verdict = cell.get("verdict")
            if "verdict" in cell and verdict not in VERDICTS:
                problems.append(
                    f"{where}: unknown verdict {_quote(verdict)} (one of {', '.join(VERDICTS)})"
                )
            cell_id = cell.get("id")
            if isinstance(cell_id, str):
                if cell_id in seen:
                    problems.append(f"{where}: duplicate cell id")
                seen.add(cell_id)
    return problems


def load_matrix(path: str | Path) -> dict[str, Any]:
    """Read and validate a ``matrix.json``; raise one ReportError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"{path}: cannot read matrix: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReportError(f"{path}: not JSON (not UTF-8 text: {exc.reason})") from exc
    try:
        doc: object = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError:
        raise ReportError(
            f"{path}: not a crossnet matrix.json: JSON nested too deeply to read "
            "(a matrix is a few levels deep); pass the matrix.json a run wrote"
        ) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise ReportError(
            f"{path}: not a crossnet matrix.json: {_clip(str(exc), 200)}"
        ) from None
    problems = validate_matrix(doc)
    if problems:
        shown = problems[:_MAX_PROBLEMS]
        lines = [f"{path}: not a usable {MATRIX_SCHEMA} matrix:"]
        lines += [f"  - {p}" for p in shown]
        if len(problems) > len(shown):
            lines.append(f"  ... and {len(problems) - len(shown)} more problems")
        raise ReportError("\n".join(lines))
    assert isinstance(doc, dict)
    return doc


# --------------------------------------------------------------------------- facts


def _cells(matrix: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    cells = matrix.get("cells") or []
    return [c for c in cells if isinstance(c, Mapping)]


def _run(matrix: Mapping[str, Any]) -> Mapping[str, Any]:
    run = matrix.get("run")
    return run if isinstance(run, Mapping) else {}


def _str(value: object) -> str:
    return "" if value is None else str(value)


def counts(matrix: Mapping[str, Any]) -> dict[str, int]:
    """Cells per verdict: every known verdict (0 when none), then any unknown ones."""
    return _count(_cells(matrix))


def _count(cells: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    result = dict.fromkeys(VERDICTS, 0)
    for cell in cells:
        verdict = _str(cell.get("verdict"))
        result[verdict] = result.get(verdict, 0) + 1
    return result


def _strict_flakes(matrix: Mapping[str, Any]) -> bool:
    options = _run(matrix).get("options")
    return bool(isinstance(options, Mapping) and options.get("strict_flakes"))


def failing_verdicts(matrix: Mapping[str, Any]) -> frozenset[str]:
    """The verdicts that fail this run (``flaky`` too when run.options.strict_flakes)."""
    if _strict_flakes(matrix):
        return FAILING_VERDICTS | {"flaky"}
    return FAILING_VERDICTS


def _glyph(verdict: str) -> str:
    return GLYPHS.get(verdict, _UNKNOWN_GLYPH)


def _severity(verdict: str) -> int:
    # Unknown verdicts rank as bad as a regression: never hide them behind a pass.
    return _SEVERITY.index(verdict) if verdict in _SEVERITY else -1


_DIGITS = re.compile(r"(\d+)")


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key: 'worker2' < 'worker10', pieces of the same kind compared together."""
    parts: list[tuple[int, int | str]] = []
    for piece in _DIGITS.split(text):
        if not piece:
            continue
        parts.append((0, int(piece)) if piece.isdigit() else (1, piece))
    return tuple(parts)


def _ranked(
    value: str, order: Sequence[str]
) -> tuple[int, tuple[tuple[int, int | str], ...]]:
    return (order.index(value) if value in order else len(order), _natural(value))


def _path_key(ref: str) -> tuple[tuple[tuple[int, int | str], ...], ...]:
    """cluster/node (or any a/b/c reference), each part in natural order."""
    return tuple(_natural(part) for part in ref.split("/"))


Row = tuple[str, str]  # (src, src_kind)
Column = tuple[str, str]  # (dst, dst_kind)


def _row_of(cell: Mapping[str, Any]) -> Row:
    return (_str(cell.get("src")), _str(cell.get("src_kind")))


def _column_of(cell: Mapping[str, Any]) -> Column:
    return (_str(cell.get("dst")), _str(cell.get("dst_kind")))


def _row_key(row: Row) -> tuple[object, ...]:
    return (_path_key(row[0]), _ranked(row[1], _SRC_KIND_ORDER))


def _column_key(column: Column) -> tuple[object, ...]:
    return (_path_key(column[0]), _ranked(column[1], _DST_KIND_ORDER))


def _protocol_key(protocol: str) -> tuple[object, ...]:
    return _ranked(protocol, _PROTOCOL_ORDER)


def _cell_key(cell: Mapping[str, Any]) -> tuple[object, ...]:
    return (
        _row_key(_row_of(cell)),
        _column_key(_column_of(cell)),
        _protocol_key(_str(cell.get("protocol"))),
        _str(cell.get("id")),
    )


@dataclass(frozen=True)
class _Grid:
    """One suite laid out: sorted rows, columns, protocols per column, cells per position."""

    suite: str
    rows: list[Row]
    columns: list[Column]
    protocols: dict[Column, list[str]]
    at: dict[tuple[Row, Column, str], list[Mapping[str, Any]]]
    cells: list[Mapping[str, Any]]


def _suites(matrix: Mapping[str, Any]) -> list[_Grid]:
    by_suite: dict[str, list[Mapping[str, Any]]] = {}
    for cell in _cells(matrix):
        by_suite.setdefault(_str(cell.get("suite")), []).append(cell)
    grids: list[_Grid] = []
    for suite in sorted(by_suite, key=lambda s: _ranked(s, _SUITE_ORDER)):
        cells = sorted(by_suite[suite], key=_cell_key)
        rows = sorted({_row_of(c) for c in cells}, key=_row_key)
        columns = sorted({_column_of(c) for c in cells}, key=_column_key)
        protocols: dict[Column, list[str]] = {}
        at: dict[tuple[Row, Column, str], list[Mapping[str, Any]]] = {}
        for cell in cells:
            column = _column_of(cell)
            protocol = _str(cell.get("protocol"))
            if protocol not in protocols.setdefault(column, []):
                protocols[column].append(protocol)
            at.setdefault((_row_of(cell), column, protocol), []).append(cell)
        for column in columns:
            protocols[column].sort(key=_protocol_key)
        grids.append(_Grid(suite, rows, columns, protocols, at, cells))
    return grids


def _describe_expected(cell: Mapping[str, Any]) -> str:
    expected = _str(cell.get("expected"))
    text = {"yes": "reachable", "no": "unreachable", "optional": "optional"}.get(
        expected, expected or "?"
    )
    source = _str(cell.get("expected_source"))
    if source and expected != "no":
        text += f", source {source}"
    return text


def _describe_observed(cell: Mapping[str, Any]) -> str:
    text = _str(cell.get("observed")) or "?"
    source_ip = cell.get("source_ip")
    if source_ip:
        text += f" from {source_ip}"
    latency = _latency(cell)
    if latency:
        text += f" in {latency}"
    return text


def _latency(cell: Mapping[str, Any]) -> str:
    value = cell.get("latency_ms")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.2f} ms"
    return ""


def _answers(cell: Mapping[str, Any]) -> str:
    answers = cell.get("answers")
    if isinstance(answers, (list, tuple)):
        return ", ".join(_str(a) for a in answers)
    return _str(answers)


def _rule(cell: Mapping[str, Any]) -> str:
    rule = _str(cell.get("rule"))
    because = _str(cell.get("because"))
    if rule and because:
        return f"{rule}: {because}"
    return rule or because


def _row_label(row: Row) -> str:
    return f"{row[0]} {row[1]}".strip()


def _column_label(column: Column) -> str:
    return f"{column[0]} {column[1]}".strip()


# --------------------------------------------------------------------------- HTML

_COLOURS: dict[str, tuple[str, str]] = {
    # verdict: (glyph colour, cell background)
    "pass": ("#1a7f37", "#dafbe1"),
    "isolated": ("#57606a", "#eaeef2"),
    "regression": ("#cf222e", "#ffebe9"),
    "leak": ("#d4400b", "#fff1e5"),
    "source-mismatch": ("#8250df", "#fbefff"),
    "flaky": ("#9a6700", "#fff8c5"),
    "optional": ("#8c959f", "#f6f8fa"),
}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#1f2328;
background:#fff;font-size:14px}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.6em 0 .4em}
.run{margin:.2em 0}.run b{font-weight:600}
.counts span,.legend span{display:inline-block;margin:.15em .6em .15em 0;padding:.1em .45em;
border-radius:4px}
.verdict-word{font-weight:600}
table.grid{border-collapse:collapse;margin:.4em 0 1em}
.grid th,.grid td{border:1px solid #d0d7de;padding:.2em .35em;text-align:center;
vertical-align:middle}
.grid thead th{background:#f6f8fa;font-weight:600;font-size:.85em}
.grid th.src{text-align:left;white-space:nowrap;background:#f6f8fa}
.grid td.none{background:#fff;color:#d0d7de}
.grid a{text-decoration:none;color:inherit;display:block;min-width:2.2em}
.glyph{font-size:1.25em;font-weight:700;line-height:1.1}
.ip,.sub{display:block;font-size:.72em;color:#57606a;font-family:ui-monospace,monospace}
.detail{display:none}
.detail:target{display:block;position:fixed;right:1em;bottom:1em;max-width:46em;
max-height:70vh;overflow:auto;background:#fff;border:2px solid #57606a;border-radius:6px;
padding:.6em 1em;box-shadow:0 4px 18px rgba(0,0,0,.25);z-index:10}
.detail dl{display:grid;grid-template-columns:max-content 1fr;gap:.15em .8em;margin:.4em 0}
.detail dt{font-weight:600;color:#57606a}.detail dd{margin:0;word-break:break-word}
.close{float:right;text-decoration:none;font-weight:700;color:#57606a}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:4px;padding:.4em .6em;
white-space:pre-wrap;word-break:break-word;margin:.3em 0}
ol.failures li{margin:.6em 0}
.note{color:#57606a;font-size:.9em}
"""


def _verdict_css() -> str:
    lines = []
    for verdict, (fg, bg) in _COLOURS.items():
        lines.append(
            f".v-{verdict}{{background:{bg}}}.v-{verdict} .glyph{{color:{fg}}}"
        )
        lines.append(f".v-{verdict}.verdict-word{{color:{fg}}}")
    lines.append(".v-flaky{outline:2px dashed #d4a72c;outline-offset:-2px}")
    lines.append(".v-unknown{background:#ffebe9}.v-unknown .glyph{color:#cf222e}")
    return "\n".join(lines)


def _vclass(verdict: str) -> str:
    return f"v-{verdict}" if verdict in VERDICTS else "v-unknown"


def _e(value: object) -> str:
    return html.escape(_str(value), quote=True)


def _tooltip(cell: Mapping[str, Any]) -> str:
    lines = [
        _str(cell.get("id")),
        (
            f"{_str(cell.get('verdict'))}: expected {_describe_expected(cell)}; "
            f"observed {_describe_observed(cell)}"
        ),
    ]
    rule = _rule(cell)
    if rule:
        lines.append(f"rule {rule}")
    message = _str(cell.get("message"))
    if message:
        lines.append(message)
    return "\n".join(lines)


def _detail_panel(anchor: str, cell: Mapping[str, Any]) -> str:
    verdict = _str(cell.get("verdict"))
    fields: list[tuple[str, str, bool]] = [  # (label, text, preformatted)
        ("cell", _str(cell.get("id")), False),
        (
            "source",
            f"{_str(cell.get('src'))} {_str(cell.get('src_kind'))} "
            f"{_str(cell.get('src_ip'))}".strip(),
            False,
        ),
        (
            "target",
            f"{_str(cell.get('dst'))} {_str(cell.get('dst_kind'))} "
            f"{_str(cell.get('dst_addr'))}".strip(),
            False,
        ),
        ("protocol", _str(cell.get("protocol")), False),
        ("expected", _describe_expected(cell), False),
        ("observed", _str(cell.get("observed")), False),
        ("source IP seen", _str(cell.get("source_ip")), False),
        ("global IP", _str(cell.get("global_ip")), False),
        ("latency", _latency(cell), False),
        ("answers", _answers(cell), False),
        ("re-probed", "yes" if cell.get("retried") else "", False),
        ("rule", _str(cell.get("rule")), False),
        ("because", _str(cell.get("because")), False),
        ("expected source from", _str(cell.get("expected_source")), False),
        ("message", _str(cell.get("message")), False),
        ("repro", _str(cell.get("repro")), True),
        ("evidence", _str(cell.get("evidence")), True),
        ("test", _str(cell.get("nodeid")), False),
    ]
    parts = [
        f'<div class="detail" id="{anchor}" role="dialog">',
        '<a class="close" href="#_" title="close">\u00d7</a>',
        (
            f'<span class="{_vclass(verdict)} verdict-word"><span class="glyph">'
            f"{_e(_glyph(verdict))}</span> {_e(verdict)}</span>"
        ),
        "<dl>",
    ]
    for label, text, pre in fields:
        if not text:
            continue
        body = f"<pre>{_e(text)}</pre>" if pre else _e(text)
        parts.append(f"<dt>{_e(label)}</dt><dd>{body}</dd>")
    parts += ["</dl>", "</div>"]
    return "".join(parts)


def _html_header(matrix: Mapping[str, Any], tally: Mapping[str, int]) -> list[str]:
    run = _run(matrix)
    clusters = run.get("clusters")
    cluster_text = (
        ", ".join(_str(c) for c in clusters)
        if isinstance(clusters, list)
        else _str(clusters)
    )
    duration = run.get("duration_s")
    duration_text = (
        f"{duration:.1f} s" if isinstance(duration, (int, float)) else _str(duration)
    )
    total = sum(tally.values())
    failing = sum(
        n
        for v, n in tally.items()
        if v in failing_verdicts(matrix) or v not in VERDICTS
    )
    out = [
        f"<h1>crossnet matrix: {_e(run.get('profile'))} on {_e(run.get('provider'))}</h1>",
        f'<p class="run"><b>provider</b> {_e(run.get("provider"))} &middot; '
        f"<b>profile</b> {_e(run.get('profile'))} &middot; <b>clusters</b> {_e(cluster_text)}"
        f" &middot; <b>started</b> {_e(run.get('started'))} &middot; "
        f"<b>duration</b> {_e(duration_text)}"
        + (
            f" &middot; <b>exit status</b> {_e(run.get('exit_status'))}"
            if run.get("exit_status") is not None
            else ""
        )
        + "</p>",
        f'<p class="run"><b>{total}</b> cells, <b>{failing}</b> failing</p>',
        '<p class="counts">'
        + "".join(
            f'<span class="{_vclass(v)}"><span class="glyph">{_e(_glyph(v))}</span> '
            f"{_e(v)} <b>{n}</b></span>"
            for v, n in tally.items()
        )
        + "</p>",
    ]
    return out


def _html_legend(matrix: Mapping[str, Any]) -> str:
    notes = {
        "pass": "expected reachable, reached (with the expected source)",
        "isolated": "expected unreachable, was unreachable",
        "regression": "expected reachable, was not",
        "leak": "expected unreachable, was reachable",
        "source-mismatch": "reached, but the target saw an unexpected source IP",
        "flaky": "failed, then passed on the re-probe"
        + (
            " (fails this run: strict flakes)"
            if _strict_flakes(matrix)
            else " (fails the run only with --strict-flakes)"
        ),
        "optional": "the profile does not require it either way",
    }
    items = "".join(
        f'<span class="{_vclass(v)}" title="{_e(notes[v])}"><span class="glyph">'
        f"{_e(_glyph(v))}</span> {_e(v)}</span>"
        for v in VERDICTS
    )
    return (
        f'<p class="legend"><b>legend</b> {items}</p>'
        '<p class="note">Hover a cell for expected vs observed; click it for the details. '
        "The small address under a glyph is the source IP the target saw.</p>"
    )


def _html_grid(grid: _Grid, anchors: Mapping[int, str]) -> list[str]:
    tally = _count(grid.cells)
    out = [
        f"<h2>{_e(grid.suite)}</h2>",
        '<p class="counts">'
        + "".join(
            f'<span class="{_vclass(v)}"><span class="glyph">{_e(_glyph(v))}</span> '
            f"{_e(v)} {n}</span>"
            for v, n in tally.items()
            if n
        )
        + "</p>",
        '<table class="grid">',
        "<thead><tr>"
        '<th rowspan="2">source \\ target</th>'
        + "".join(
            f'<th colspan="{len(grid.protocols[c])}">{_e(c[0])}'
            f'<span class="sub">{_e(c[1])}</span></th>'
            for c in grid.columns
        )
        + "</tr><tr>"
        + "".join(f"<th>{_e(p)}</th>" for c in grid.columns for p in grid.protocols[c])
        + "</tr></thead>",
        "<tbody>",
    ]
    for row in grid.rows:
        src_ip = next(
            (
                _str(c.get("src_ip"))
                for c in grid.cells
                if _row_of(c) == row and c.get("src_ip")
            ),
            "",
        )
        tds = [
            f'<th class="src">{_e(_row_label(row))}'
            + (f'<span class="ip">{_e(src_ip)}</span>' if src_ip else "")
            + "</th>"
        ]
        for column in grid.columns:
            for protocol in grid.protocols[column]:
                here = grid.at.get((row, column, protocol), [])
                if not here:
                    tds.append('<td class="none" title="not probed">\u00b7</td>')
                    continue
                worst = min((_str(c.get("verdict")) for c in here), key=_severity)
                links = []
                for cell in here:
                    verdict = _str(cell.get("verdict"))
                    source_ip = _str(cell.get("source_ip"))
                    links.append(
                        f'<a href="#{anchors[id(cell)]}" title="{_e(_tooltip(cell))}" '
                        f'data-cell="{_e(cell.get("id"))}">'
                        f'<span class="glyph">{_e(_glyph(verdict))}</span>'
                        + (
                            f'<span class="ip">{_e(source_ip)}</span>'
                            if source_ip
                            else ""
                        )
                        + "</a>"
                    )
                tds.append(f'<td class="{_vclass(worst)}">{"".join(links)}</td>')
        out.append("<tr>" + "".join(tds) + "</tr>")
    out += ["</tbody>", "</table>"]
    out += [_detail_panel(anchors[id(cell)], cell) for cell in grid.cells]
    return out


def _html_failures(
    cells: Sequence[Mapping[str, Any]],
    anchors: Mapping[int, str],
    title: str,
    note: str,
) -> list[str]:
    out = [f"<h2>{_e(title)} ({len(cells)})</h2>"]
    if note:
        out.append(f'<p class="note">{_e(note)}</p>')
    if not cells:
        out.append("<p>none</p>")
        return out
    out.append('<ol class="failures">')
    for cell in cells:
        verdict = _str(cell.get("verdict"))
        item = [
            (
                f'<li><span class="{_vclass(verdict)} verdict-word"><span class="glyph">'
                f"{_e(_glyph(verdict))}</span> {_e(verdict)}</span> "
                f'<a href="#{anchors[id(cell)]}"><code>{_e(cell.get("id"))}</code></a>'
            ),
            (
                f"<div>expected {_e(_describe_expected(cell))}; "
                f"observed {_e(_describe_observed(cell))}</div>"
            ),
        ]
        if cell.get("message"):
            item.append(f"<div>{_e(cell.get('message'))}</div>")
        if cell.get("repro"):
            item.append(f"<pre>{_e(cell.get('repro'))}</pre>")
        if cell.get("evidence"):
            item.append(f"<pre>{_e(cell.get('evidence'))}</pre>")
        item.append("</li>")
        out.append("".join(item))
    out.append("</ol>")
    return out


def render_html(matrix: Mapping[str, Any]) -> str:
    """matrix.html: one self-contained page, readable offline (no script, no external asset)."""
    grids = _suites(matrix)
    anchors: dict[int, str] = {}
    for grid in grids:
        for cell in grid.cells:
            anchors[id(cell)] = f"c{len(anchors) + 1}"
    ordered = [cell for grid in grids for cell in grid.cells]
    failing = failing_verdicts(matrix)
    failures = [
        c
        for c in ordered
        if _str(c.get("verdict")) in failing or _str(c.get("verdict")) not in VERDICTS
    ]
    run = _run(matrix)
    title = (
        f"crossnet matrix: {_str(run.get('profile'))} on {_str(run.get('provider'))}"
    )
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}{_verdict_css()}</style>",
        "</head><body>",
    ]
    tally = counts(matrix)
    out += _html_header(matrix, tally)
    out.append(_html_legend(matrix))
    if not grids:
        out.append("<p>The matrix has no cells.</p>")
    for grid in grids:
        out += _html_grid(grid, anchors)
    out += _html_failures(failures, anchors, "Failures", "")
    if not _strict_flakes(matrix):
        flaky = [c for c in ordered if _str(c.get("verdict")) == "flaky"]
        if flaky:
            out += _html_failures(
                flaky,
                anchors,
                "Flaky",
                "Failed, then passed on the single re-probe; these fail the run only with "
                "--strict-flakes.",
            )
    out += ["</body></html>", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- Markdown


def _clip(text: str, limit: int = _SUMMARY_FIELD_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def _md(text: str) -> str:
    """Plain text for a Markdown paragraph or table cell (GitHub flavour)."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(_clip(text), quote=False))


def _md_code(text: str) -> str:
    """An inline code span holding ``text`` literally (no HTML, no Markdown inside)."""
    text = _clip(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    if text.startswith("`") or text.endswith("`"):
        text = f" {text} "
    return f"{fence}{text}{fence}"


def _counts_line(tally: Mapping[str, int], *, zeros: bool) -> str:
    return " \u00b7 ".join(
        f"{_glyph(v)} {_md(v)} {n}" for v, n in tally.items() if n or zeros
    )


def _md_table(grid: _Grid) -> list[str]:
    columns_full = [(c, p) for c in grid.columns for p in grid.protocols[c]]
    collapse = len(columns_full) > _SUMMARY_MAX_COLUMNS
    width = len(grid.columns) if collapse else len(columns_full)
    if len(grid.rows) * width > _SUMMARY_MAX_GRID:
        return [
            (
                f"_grid of {len(grid.rows)} sources \u00d7 {width} targets is too large for the "
                "summary; see matrix.html_"
            )
        ]
    if collapse:
        header = [_md(_column_label(c)) for c in grid.columns]
    else:
        # the target label once, over its first protocol; the others show the protocol only
        header = [
            f"{_md(_column_label(c))}<br>{_md(p)}"
            if p == grid.protocols[c][0]
            else _md(p)
            for c, p in columns_full
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
                    _str(cell.get("verdict"))
                    for p in grid.protocols[column]
                    for cell in grid.at.get((row, column, p), [])
                ]
                glyphs.append(_glyph(min(verdicts, key=_severity)) if verdicts else "")
        else:
            for column, protocol in columns_full:
                here = grid.at.get((row, column, protocol), [])
                glyphs.append("".join(_glyph(_str(c.get("verdict"))) for c in here))
        out.append(f"| {_md(_row_label(row))} | " + " | ".join(glyphs) + " |")
    if collapse:
        out.append("")
        out.append(
            "_protocols collapsed: each target shows its worst verdict over "
            + ", ".join(sorted({p for _, p in columns_full}, key=_protocol_key))
            + "_"
        )
    return out


def _md_cell_item(cell: Mapping[str, Any]) -> str:
    verdict = _str(cell.get("verdict"))
    parts = [f"- {_glyph(verdict)} **{_md(verdict)}** {_md_code(_str(cell.get('id')))}"]
    message = _str(cell.get("message"))
    if message:
        parts.append(_md(message))
    repro = _str(cell.get("repro"))
    if repro:
        parts.append("repro: " + _md_code(repro))
    return "<br>".join(parts)


def _md_list(cells: Sequence[Mapping[str, Any]], cap: int) -> list[str]:
    out = [_md_cell_item(c) for c in cells[:cap]]
    if len(cells) > cap:
        out.append(
            f"- \u2026 and {len(cells) - cap} more (see matrix.html / matrix.json)"
        )
    return out


def render_summary(
    matrix: Mapping[str, Any], *, max_failures: int = SUMMARY_MAX_FAILURES
) -> str:
    """summary.md for ``$GITHUB_STEP_SUMMARY``: counts, a glyph table per suite, failures."""
    run = _run(matrix)
    tally = counts(matrix)
    failing = failing_verdicts(matrix)
    grids = _suites(matrix)
    ordered = [cell for grid in grids for cell in grid.cells]
    failures = [
        c
        for c in ordered
        if _str(c.get("verdict")) in failing or _str(c.get("verdict")) not in VERDICTS
    ]
    flaky = (
        []
        if _strict_flakes(matrix)
        else [c for c in ordered if _str(c.get("verdict")) == "flaky"]
    )
    status = "\u2717" if failures else "\u2713"
    clusters = run.get("clusters")
    cluster_text = (
        ", ".join(_str(c) for c in clusters)
        if isinstance(clusters, list)
        else _str(clusters)
    )
    duration = run.get("duration_s")
    duration_text = f"{duration:.1f} s" if isinstance(duration, (int, float)) else ""
    out = [
        (
            f"## {status} crossnet {_md(_str(run.get('profile')))} "
            f"({_md(_str(run.get('provider')))}): {len(ordered)} cells, {len(failures)} failing "
            f"\u2014 {_counts_line(tally, zeros=False)}"
        ),
        "",
        " \u00b7 ".join(
            part
            for part in (
                f"clusters {_md(cluster_text)}" if cluster_text else "",
                f"started {_md(_str(run.get('started')))}"
                if run.get("started")
                else "",
                f"duration {duration_text}" if duration_text else "",
                f"exit status {_md(_str(run.get('exit_status')))}"
                if run.get("exit_status") is not None
                else "",
            )
            if part
        ),
        "",
        "Legend: "
        + " \u00b7 ".join(f"{_glyph(v)} {v}" for v in VERDICTS)
        + (
            " (flaky fails the run only with --strict-flakes)"
            if not _strict_flakes(matrix)
            else " (strict flakes: flaky fails the run)"
        ),
        "",
    ]
    tail = [f"### Failures ({len(failures)})", ""]
    tail += _md_list(failures, max_failures) if failures else ["none"]
    tail.append("")
    if flaky:
        tail += [f"### Flaky ({len(flaky)})", ""]
        tail += _md_list(flaky, max(1, max_failures // 4))
        tail.append("")
    # Fields are clipped and lists capped, so only the tables can grow without bound: they get
    # what the header and the failures leave of the budget, suite by suite.
    left = _SUMMARY_BUDGET - _utf8_len(out) - _utf8_len(tail)
    for grid in grids:
        section = [
            f"### {_md(grid.suite)}",
            "",
            _counts_line(_count(grid.cells), zeros=False),
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


# --------------------------------------------------------------------------- files and diff


def write_reports(matrix: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write matrix.json, matrix.html and summary.md into ``out_dir`` (created if needed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    documents = (
        (
            "matrix.json",
            json.dumps(matrix, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
        ),
        ("matrix.html", render_html(matrix)),
        ("summary.md", render_summary(matrix)),
    )
    written: list[Path] = []
    for name, text in documents:
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _clusters(matrix: Mapping[str, Any]) -> frozenset[str] | None:
    clusters = _run(matrix).get("clusters")
    if not isinstance(clusters, list):
        return None
    return frozenset(_str(c) for c in clusters)


def _names(clusters: frozenset[str]) -> str:
    names = sorted(clusters, key=_natural)
    shown = ", ".join(_clip(n, 60) for n in names[:8])
    if len(names) > 8:
        shown += f" and {len(names) - 8} more"
    return shown or "(none)"


def diff_matrices(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[CellChange]:
    """Cells whose verdict changed, appeared or disappeared between two runs, by id.

    Raise ReportError when the runs come from different topologies (different cluster sets):
    their cells would all show as appeared or disappeared, which says nothing."""
    old_clusters, new_clusters = _clusters(old), _clusters(new)
    if old_clusters is not None and new_clusters is not None and old_clusters != new_clusters:
        raise ReportError(
            f"the matrices come from different topologies: clusters {_names(old_clusters)} vs "
            f"{_names(new_clusters)}; diff runs of the same topology"
        )
    before = {_str(c.get("id")): c for c in _cells(old)}
    after = {_str(c.get("id")): c for c in _cells(new)}
    changes: list[CellChange] = []
    for cell_id in sorted(before.keys() | after.keys()):
        was, now = before.get(cell_id), after.get(cell_id)
        old_verdict = None if was is None else _str(was.get("verdict"))
        new_verdict = None if now is None else _str(now.get("verdict"))
        if old_verdict == new_verdict:
            continue
        suite = _str((now if now is not None else was or {}).get("suite"))
        changes.append(CellChange(cell_id, suite, old_verdict, new_verdict))
    return changes


def render_diff(changes: Sequence[CellChange]) -> str:
    """One line per change, ``new <- old  id``; ``(absent)`` for a cell missing from a run."""
    if not changes:
        return "no verdict changed\n"
    width = max(len("(absent)"), *(len(v) for v in VERDICTS))
    lines = [
        f"{c.new_verdict or '(absent)':<{width}} <- {c.old_verdict or '(absent)':<{width}}  {c.id}"
        for c in changes
    ]
    return "\n".join(lines) + "\n"
