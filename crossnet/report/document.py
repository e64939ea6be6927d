"""The matrix document (schema ``crossnet.matrix/v1``): its vocabulary, validation, loading and counts.

A matrix document is a plain dict, exactly what ``matrix.json`` holds; every report is rendered from
one, so reports can be rebuilt from a saved run and two runs compared without a live topology.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "FAILING_VERDICTS",
    "GLYPHS",
    "MATRIX_SCHEMA",
    "VERDICTS",
    "ReportError",
    "cells_of",
    "clip",
    "count",
    "counts",
    "failing_verdicts",
    "glyph",
    "load_matrix",
    "run_of",
    "severity",
    "strict_flakes",
    "text",
    "validate_matrix",
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
_FIELD_CHARS = 300


class ReportError(ValueError):
    """A matrix document that cannot be used, with the file and every problem found."""


# --------------------------------------------------------------------------- small text helpers


def text(value: object) -> str:
    """A field as text: ``None`` is empty."""
    return "" if value is None else str(value)


def clip(value: str, limit: int = _FIELD_CHARS) -> str:
    """Whitespace runs folded to one space, cut to `limit` characters with an ellipsis."""
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1] + "\u2026"


def _quote(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to about `limit` characters, without building the repr of a large value."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit])[:-1] + f"\u2026' ({len(value)} chars)"
    shower = reprlib.Repr()
    shower.maxlevel, shower.maxlist, shower.maxdict, shower.maxstring, shower.maxother = 2, 4, 4, limit, limit
    shown = shower.repr(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "\u2026"


# --------------------------------------------------------------------------- validation and loading


def plumbing_facts(matrix: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The plumbing suite's node facts of a run (optional key "facts"), failing ones first, each
    {id, ok, expected, observed}; malformed entries are left out."""
    facts = matrix.get("facts")
    if not isinstance(facts, list):
        return []
    usable = [
        {
            "id": str(f.get("id", "")),
            "ok": f.get("ok") is True,
            "expected": str(f.get("expected", "")),
            "observed": str(f.get("observed", "")),
        }
        for f in facts
        if isinstance(f, dict)
    ]
    return sorted(usable, key=lambda f: (f["ok"], f["id"]))


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
        problems += _cell_problems(cells)
    return problems


def _cell_problems(cells: list[object]) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict):
            problems.append(f"cells[{index}]: {type(cell).__name__}, expected an object")
            continue
        where = f"cells[{index}]"
        if isinstance(cell.get("id"), str):
            where += f" ({clip(cell['id'], 120)})"
        missing = [k for k in _REQUIRED_CELL if k not in cell]
        if missing:
            problems.append(f"{where}: missing keys " + ", ".join(missing))
        verdict = cell.get("verdict")
        if "verdict" in cell and verdict not in VERDICTS:
            problems.append(f"{where}: unknown verdict {_quote(verdict)} (one of {', '.join(VERDICTS)})")
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
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"{path}: cannot read matrix: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReportError(f"{path}: not JSON (not UTF-8 text: {exc.reason})") from exc
    try:
        doc: object = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError:
        raise ReportError(
            f"{path}: not a crossnet matrix.json: JSON nested too deeply to read "
            "(a matrix is a few levels deep); pass the matrix.json a run wrote"
        ) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise ReportError(f"{path}: not a crossnet matrix.json: {clip(str(exc), 200)}") from None
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


def cells_of(matrix: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The cells of a matrix that are objects (anything else is skipped)."""
    cells = matrix.get("cells") or []
    return [c for c in cells if isinstance(c, Mapping)]


def run_of(matrix: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``run`` object of a matrix (empty when it is not an object)."""
    run = matrix.get("run")
    return run if isinstance(run, Mapping) else {}


def counts(matrix: Mapping[str, Any]) -> dict[str, int]:
    """Cells per verdict: every known verdict (0 when none), then any unknown ones."""
    return count(cells_of(matrix))


def count(cells: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Cells per verdict, as ``counts`` does for a whole matrix."""
    result = dict.fromkeys(VERDICTS, 0)
    for cell in cells:
        verdict = text(cell.get("verdict"))
        result[verdict] = result.get(verdict, 0) + 1
    return result


def strict_flakes(matrix: Mapping[str, Any]) -> bool:
    """Whether the run was made with ``--strict-flakes`` (run.options.strict_flakes)."""
    options = run_of(matrix).get("options")
    return bool(isinstance(options, Mapping) and options.get("strict_flakes"))


def failing_verdicts(matrix: Mapping[str, Any]) -> frozenset[str]:
    """The verdicts that fail this run (``flaky`` too when run.options.strict_flakes)."""
    if strict_flakes(matrix):
        return FAILING_VERDICTS | {"flaky"}
    return FAILING_VERDICTS


def glyph(verdict: str) -> str:
    """The one-character glyph of a verdict (a bullet for an unknown one)."""
    return GLYPHS.get(verdict, _UNKNOWN_GLYPH)


def severity(verdict: str) -> int:
    """Sort key, worst first; unknown verdicts rank as bad as a regression: never hidden behind a pass."""
    return _SEVERITY.index(verdict) if verdict in _SEVERITY else -1
