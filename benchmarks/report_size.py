"""Sizes and render times of matrix.html and summary.md for a synthetic judged run (no lab needed).

    .venv/bin/python benchmarks/report_size.py                   # 4 clusters x 8 nodes (~24,500 cells)
    .venv/bin/python benchmarks/report_size.py --nodes 8 --clusters 8   # ~98,700 cells
    .venv/bin/python benchmarks/report_size.py --cell-by-cell    # also the page drawing every cell

The run is built as tests/test_report_scale.py builds it (build_cells, live_cell, judge, the
plugin's record), with a broken node, leaks, source mismatches and flakes. ``--cell-by-cell`` also
renders the page every cell drawn, what matrix.html was for every run before blocks (slow: ~10 s
and ~50 MB at 24,000 cells). A benchmark prints figures; no test asserts on time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossnet.report import counts, html_blocks, render_html, render_summary
from tests.test_report_scale import synthetic_matrix


def _timed(label: str, render: object, matrix: dict[str, object]) -> None:
    assert callable(render)
    started = time.perf_counter()
    text = render(matrix)
    took = time.perf_counter() - started
    size = len(text.encode("utf-8"))
    print(f"{label:<28}{size / 1_000_000:>10.2f} MB{size / 1024:>12.0f} KiB{took:>10.2f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--cell-by-cell", action="store_true", help="also render every cell drawn (before)")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crossnet-report-size-") as tmp:
        matrix = synthetic_matrix(Path(tmp), args.clusters, args.nodes)
    tally = {v: n for v, n in counts(matrix).items() if n}
    print(f"{len(matrix['cells'])} cells ({args.clusters} clusters x {args.nodes} nodes) built in "
          f"{time.perf_counter() - started:.1f} s: {tally}\n")  # fmt: skip
    print(f"{'report':<28}{'size':>13}{'':>16}{'render':>10}")
    _timed("matrix.html (blocks)", render_html, matrix)
    _timed("summary.md", render_summary, matrix)
    if args.cell_by_cell:
        wanted = html_blocks.wanted
        html_blocks.wanted = lambda _grids: False  # type: ignore[assignment]
        try:
            _timed("matrix.html (cell by cell)", render_html, matrix)
        finally:
            html_blocks.wanted = wanted
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
