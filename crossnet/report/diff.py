"""Compare two runs of the same topology: the cells whose verdict changed, appeared or disappeared."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crossnet.report.document import VERDICTS, ReportError, cells_of, clip, run_of, text
from crossnet.report.layout import natural

__all__ = ["CellChange", "diff_matrices", "render_diff"]


@dataclass(frozen=True)
class CellChange:
    """A cell whose verdict differs between two runs; ``None`` = absent from that run."""

    id: str
    suite: str
    old_verdict: str | None
    new_verdict: str | None


def _clusters(matrix: Mapping[str, Any]) -> frozenset[str] | None:
    clusters = run_of(matrix).get("clusters")
    if not isinstance(clusters, list):
        return None
    return frozenset(text(c) for c in clusters)


def _names(clusters: frozenset[str]) -> str:
    names = sorted(clusters, key=natural)
    shown = ", ".join(clip(n, 60) for n in names[:8])
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
    before = {text(c.get("id")): c for c in cells_of(old)}
    after = {text(c.get("id")): c for c in cells_of(new)}
    changes: list[CellChange] = []
    for cell_id in sorted(before.keys() | after.keys()):
        was, now = before.get(cell_id), after.get(cell_id)
        old_verdict = None if was is None else text(was.get("verdict"))
        new_verdict = None if now is None else text(now.get("verdict"))
        if old_verdict == new_verdict:
            continue
        suite = text((now if now is not None else was or {}).get("suite"))
        changes.append(CellChange(cell_id, suite, old_verdict, new_verdict))
    return changes


def render_diff(changes: Sequence[CellChange]) -> str:
    """One line per change, ``new <- old  id``; ``(absent)`` for a cell missing from a run."""
    if not changes:
        return "no verdict changed\n"
    width = max(len("(absent)"), *(len(v) for v in VERDICTS))
    lines = [
        f"{c.new_verdict or '(absent)':<{width}} <- {c.old_verdict or '(absent)':<{width}}  {c.id}" for c in changes
    ]
    return "\n".join(lines) + "\n"
