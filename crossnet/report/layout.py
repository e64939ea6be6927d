"""How a matrix is laid out for people, shared by matrix.html and summary.md: the suites in order,
each a grid (rows: source vantage, columns: target, one sub-column per protocol), and the words
that describe a cell."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crossnet.report.document import VERDICTS, cells_of, failing_verdicts, strict_flakes, text

__all__ = [
    "Column",
    "Grid",
    "Row",
    "answers",
    "column_key",
    "column_label",
    "column_of",
    "describe_expected",
    "describe_observed",
    "failures",
    "flaky",
    "latency",
    "natural",
    "protocol_key",
    "row_key",
    "row_label",
    "row_of",
    "rule",
    "suites",
]

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
    "tcp",
    "udp",
    "icmp",
    "tcp-1400b",
    "udp-1400b",
    "dns-udp",
    "dns-tcp",
    "dns-udp-1400b",
    "dns-tcp-1400b",
)

_DIGITS = re.compile(r"(\d+)")

NaturalKey = tuple[tuple[int, int | str], ...]


def natural(value: str) -> NaturalKey:
    """Sort key: 'worker2' < 'worker10', pieces of the same kind compared together."""
    parts: list[tuple[int, int | str]] = []
    for piece in _DIGITS.split(value):
        if not piece:
            continue
        parts.append((0, int(piece)) if piece.isdigit() else (1, piece))
    return tuple(parts)


def _ranked(value: str, order: Sequence[str]) -> tuple[int, NaturalKey]:
    return (order.index(value) if value in order else len(order), natural(value))


def _path_key(ref: str) -> tuple[NaturalKey, ...]:
    """cluster/node (or any a/b/c reference), each part in natural order."""
    return tuple(natural(part) for part in ref.split("/"))


Row = tuple[str, str]  # (src, src_kind)
Column = tuple[str, str]  # (dst, dst_kind)


def row_of(cell: Mapping[str, Any]) -> Row:
    return (text(cell.get("src")), text(cell.get("src_kind")))


def column_of(cell: Mapping[str, Any]) -> Column:
    return (text(cell.get("dst")), text(cell.get("dst_kind")))


@functools.lru_cache(maxsize=8192)  # a few hundred distinct rows and columns sort tens of thousands of cells
def row_key(row: Row) -> tuple[object, ...]:
    """Sort key of a row: its source path (cluster/node) in natural order, then its kind."""
    return (_path_key(row[0]), _ranked(row[1], _SRC_KIND_ORDER))


@functools.lru_cache(maxsize=8192)
def column_key(column: Column) -> tuple[object, ...]:
    """Sort key of a column: its target path in natural order, then its kind."""
    return (_path_key(column[0]), _ranked(column[1], _DST_KIND_ORDER))


@functools.lru_cache(maxsize=256)
def protocol_key(protocol: str) -> tuple[object, ...]:
    return _ranked(protocol, _PROTOCOL_ORDER)


@dataclass(frozen=True)
class Grid:
    """One suite laid out: sorted rows, columns, protocols per column, cells per position."""

    suite: str
    rows: list[Row]
    columns: list[Column]
    protocols: dict[Column, list[str]]
    at: dict[tuple[Row, Column, str], list[Mapping[str, Any]]]
    cells: list[Mapping[str, Any]]


def suites(matrix: Mapping[str, Any]) -> list[Grid]:
    """One grid per suite, suites in their known order, then the others by name."""
    by_suite: dict[str, list[Mapping[str, Any]]] = {}
    for cell in cells_of(matrix):
        by_suite.setdefault(text(cell.get("suite")), []).append(cell)
    grids: list[Grid] = []
    for suite in sorted(by_suite, key=lambda s: _ranked(s, _SUITE_ORDER)):
        # each cell's row, column and protocol worked out once: a large run has ~100,000 cells
        placed = [(row_of(c), column_of(c), text(c.get("protocol")), c) for c in by_suite[suite]]
        placed.sort(key=lambda p: (row_key(p[0]), column_key(p[1]), protocol_key(p[2]), text(p[3].get("id"))))
        rows = sorted({row for row, _, _, _ in placed}, key=row_key)
        columns = sorted({column for _, column, _, _ in placed}, key=column_key)
        protocols: dict[Column, list[str]] = {}
        at: dict[tuple[Row, Column, str], list[Mapping[str, Any]]] = {}
        for row, column, protocol, cell in placed:
            if protocol not in protocols.setdefault(column, []):
                protocols[column].append(protocol)
            at.setdefault((row, column, protocol), []).append(cell)
        for column in columns:
            protocols[column].sort(key=protocol_key)
        grids.append(Grid(suite, rows, columns, protocols, at, [cell for _, _, _, cell in placed]))
    return grids


def failures(matrix: Mapping[str, Any], ordered: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The cells that fail the run, unknown verdicts included, in report order."""
    failing = failing_verdicts(matrix)
    return [c for c in ordered if text(c.get("verdict")) in failing or text(c.get("verdict")) not in VERDICTS]


def flaky(matrix: Mapping[str, Any], ordered: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The flaky cells listed on their own: none under --strict-flakes, where they are failures."""
    if strict_flakes(matrix):
        return []
    return [c for c in ordered if text(c.get("verdict")) == "flaky"]


# --------------------------------------------------------------------------- words for a cell


def describe_expected(cell: Mapping[str, Any]) -> str:
    expected = text(cell.get("expected"))
    words = {"yes": "reachable", "no": "unreachable", "optional": "optional"}.get(expected, expected or "?")
    source = text(cell.get("expected_source"))
    if source and expected != "no":
        words += f", source {source}"
    return words


def describe_observed(cell: Mapping[str, Any]) -> str:
    words = text(cell.get("observed")) or "?"
    source_ip = cell.get("source_ip")
    if source_ip:
        words += f" from {source_ip}"
    took = latency(cell)
    if took:
        words += f" in {took}"
    return words


def latency(cell: Mapping[str, Any]) -> str:
    value = cell.get("latency_ms")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.2f} ms"
    return ""


def answers(cell: Mapping[str, Any]) -> str:
    value = cell.get("answers")
    if isinstance(value, (list, tuple)):
        return ", ".join(text(a) for a in value)
    return text(value)


def rule(cell: Mapping[str, Any]) -> str:
    name = text(cell.get("rule"))
    because = text(cell.get("because"))
    if name and because:
        return f"{name}: {because}"
    return name or because


def row_label(row: Row) -> str:
    return f"{row[0]} {row[1]}".strip()


def column_label(column: Column) -> str:
    return f"{column[0]} {column[1]}".strip()
