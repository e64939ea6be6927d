"""What both layouts of matrix.html share: the Jinja2 environment (autoescaping, strict), the run's
facts, the legend, a verdict's colour and glyph, and the fields that describe one cell.

``html`` draws every cell of a run (up to a few thousand); ``html_blocks`` folds a large run into
blocks. Both turn the matrix into the plain values below, so every value reaches the page through
the templates' escaping.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from markupsafe import Markup

from crossnet.report.document import VERDICTS, glyph, plumbing_facts, run_of, strict_flakes, text
from crossnet.report.layout import answers, describe_expected, latency

__all__ = [
    "Tally",
    "Verdict",
    "cell_fields",
    "environment",
    "legend",
    "node_facts",
    "run_facts",
    "verdict_view",
]

_LEGEND: dict[str, str] = {
    "pass": "expected reachable, reached (with the expected source)",
    "isolated": "expected unreachable, was unreachable",
    "regression": "expected reachable, was not",
    "leak": "expected unreachable, was reachable",
    "source-mismatch": "reached, but the target saw an unexpected source IP",
    "flaky": "failed, then passed on the re-probe",
    "optional": "the profile does not require it either way",
}


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


def verdict_view(name: str) -> Verdict:
    return Verdict(name, f"v-{name}" if name in VERDICTS else "v-unknown", glyph(name))


def _joined(cell: Mapping[str, Any], *keys: str) -> str:
    return " ".join(text(cell.get(key)) for key in keys).strip()


def cell_fields(cell: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, text) of everything a details panel shows of a cell, in order; empty ones included."""
    return [
        ("cell", text(cell.get("id"))),
        ("source", _joined(cell, "src", "src_kind", "src_ip")),
        ("target", _joined(cell, "dst", "dst_kind", "dst_addr")),
        ("protocol", text(cell.get("protocol"))),
        ("expected", describe_expected(cell)),
        ("observed", text(cell.get("observed"))),
        ("source IP seen", text(cell.get("source_ip"))),
        ("global IP", text(cell.get("global_ip"))),
        ("latency", latency(cell)),
        ("answers", answers(cell)),
        ("answer TTL", f"{cell['ttl']} s" if isinstance(cell.get("ttl"), int) else ""),
        ("path MTU", f"{cell['path_mtu']} bytes (DF ladder)" if isinstance(cell.get("path_mtu"), int) else ""),
        ("re-probed", "yes" if cell.get("retried") else ""),
        ("rule", text(cell.get("rule"))),
        ("because", text(cell.get("because"))),
        ("expected source from", text(cell.get("expected_source"))),
        ("message", text(cell.get("message"))),
        ("repro", text(cell.get("repro"))),
        ("evidence", text(cell.get("evidence"))),
        ("test", text(cell.get("nodeid"))),
    ]


def run_facts(matrix: Mapping[str, Any]) -> dict[str, str | None]:
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


def legend(matrix: Mapping[str, Any]) -> list[Tally]:
    flaky_note = (
        " (fails this run: strict flakes)" if strict_flakes(matrix) else " (fails the run only with --strict-flakes)"
    )
    return [Tally(verdict_view(v), 0, _LEGEND[v] + (flaky_note if v == "flaky" else "")) for v in VERDICTS]


def node_facts(matrix: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The plumbing suite's node facts, failing first, each with the verdict that colours it."""
    return [
        {
            **f,
            "verdict": Verdict("holds", "v-pass", glyph("pass"))
            if f["ok"]
            else Verdict("fails", "v-regression", glyph("regression")),
        }
        for f in plumbing_facts(matrix)
    ]


# --------------------------------------------------------------------------- the templates


def _finalize(value: object) -> Markup:
    """Every ``{{ value }}`` of the templates: None is empty, and text is escaped here with
    ``html.escape`` (the five characters & < > " ', as markupsafe would, spelt as the page always
    spelt them). Autoescape stays on: a value that skipped this would still be escaped."""
    if isinstance(value, Markup):  # a macro's output, or the blocks' data (made safe by html_blocks)
        return value
    return Markup(html.escape(text(value), quote=True))


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("crossnet.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
