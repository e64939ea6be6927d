"""Reports from a judged matrix: matrix.json, matrix.html and summary.md, and diffs of two runs.

Everything here works on the *matrix document* (schema ``crossnet.matrix/v1``), a plain dict that
is also what ``matrix.json`` holds, so reports can be rebuilt from a saved run and two runs can be
compared (``diff_matrices``) without a live topology. The package follows the data flow:

- ``document``: the schema, its vocabulary, validation and loading (``load_matrix``), counts;
- ``layout``: suites as grids, sorted, and the words describing a cell (shared by the renderers);
- ``view``: what both layouts of matrix.html share (the Jinja2 environment, run facts, legend);
- ``html``: ``matrix.html`` from the Jinja2 template ``templates/matrix.html.j2``, every cell drawn;
- ``blocks`` and ``html_blocks``: a run of more than a few thousand cells folded into blocks (source x
  target, counts per verdict, details on click from JSON embedded once), ``templates/matrix-blocks.html.j2``,
  so matrix.html stays under ~10 MB at 100,000 cells;
- ``markdown``: ``summary.md`` for ``$GITHUB_STEP_SUMMARY``, size-bounded;
- ``diff``: ``diff_matrices`` and ``render_diff``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crossnet.report.diff import CellChange, diff_matrices, render_diff
from crossnet.report.document import (
    FAILING_VERDICTS,
    GLYPHS,
    MATRIX_SCHEMA,
    VERDICTS,
    ReportError,
    counts,
    failing_verdicts,
    load_matrix,
    validate_matrix,
)
from crossnet.report.html import render_html
from crossnet.report.markdown import render_summary

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


def write_reports(matrix: Mapping[str, Any], out_dir: Path, extra: Sequence[tuple[str, str]] = ()) -> list[Path]:
    """Write matrix.json, matrix.html and summary.md (and `extra` (name, text) documents) into
    ``out_dir`` (created if needed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    documents = (
        ("matrix.json", json.dumps(matrix, indent=1, sort_keys=True, ensure_ascii=False) + "\n"),
        ("matrix.html", render_html(matrix)),
        ("summary.md", render_summary(matrix)),
        *extra,
    )
    written: list[Path] = []
    for name, content in documents:  # each atomically: two runs at once never leave a torn file
        path = out_dir / name
        temporary = out_dir / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        temporary.write_text(content, encoding="utf-8")
        os.replace(temporary, path)
        written.append(path)
    return written
