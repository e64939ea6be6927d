"""How true the verdicts stay over a series of runs on a healthy lab, idle or with the CPUs
saturated by another process: every verdict but `pass`/`isolated` on a healthy lab is a false one.

    .venv/bin/python benchmarks/verdict_series.py --runs 10 --stress 2        # default matrix, stress-ng --cpu 2
    .venv/bin/python benchmarks/verdict_series.py --runs 5 --clusters 4 --nodes 8   # generated 4 x 8 configs

Each run is a full `pytest suites/` (bring-up, probing, teardown) with its own reports directory;
the figures come from its matrix.json. A benchmark prints figures; no test asserts on them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEALTHY = ("pass", "isolated")


def _configs(clusters: int, nodes: int, scratch: Path) -> list[str]:
    if not clusters:
        return []
    out = scratch / "configs"
    crossnet = str(Path(sys.executable).with_name("crossnet"))
    command = [crossnet, "scale-configs", "--clusters", str(clusters), "--nodes", str(nodes), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True)
    return [arg for path in sorted(out.glob("*.yaml")) for arg in ("--kind-config", str(path))]


def _one(run: int, extra: list[str], scratch: Path) -> dict[str, object]:
    reports = scratch / f"run{run}"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider", "--reports", str(reports), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    try:
        matrix = json.loads((reports / "matrix.json").read_text())
    except (OSError, ValueError):
        return {"run": run, "wall_s": round(wall, 1), "exit": done.returncode, "error": done.stdout[-500:]}
    verdicts = Counter(str(c["verdict"]) for c in matrix["cells"])
    false = {v: n for v, n in verdicts.items() if v not in HEALTHY}
    return {
        "run": run,
        "wall_s": round(wall, 1),
        "exit": done.returncode,
        "cells": sum(verdicts.values()),
        "false_verdicts": sum(false.values()),
        "which": false,
        "not_probed": matrix["run"].get("not_probed", 0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stress", type=int, default=0, help="stress-ng --cpu N beside the runs (0: idle)")
    parser.add_argument("--clusters", type=int, default=0, help="generated configs: clusters (0: the default two)")
    parser.add_argument("--nodes", type=int, default=3, help="generated configs: nodes per cluster")
    args = parser.parse_args()
    stress = None
    with tempfile.TemporaryDirectory(prefix="crossnet-series-") as name:
        scratch = Path(name)
        extra = _configs(args.clusters, args.nodes, scratch)
        if args.stress:
            if not shutil.which("stress-ng"):
                print("stress-ng is not installed (apt-get install -y stress-ng)", file=sys.stderr)
                return 2
            stress = subprocess.Popen(["stress-ng", "--cpu", str(args.stress), "--quiet"])
        try:
            results = [_one(i + 1, extra, scratch) for i in range(args.runs)]
        finally:
            if stress is not None:
                stress.terminate()
                stress.wait()
    for result in results:
        print(json.dumps(result))
    walls = sorted(float(str(r["wall_s"])) for r in results)
    clean = sum(1 for r in results if r.get("false_verdicts") == 0 and not r.get("not_probed"))
    print(
        f"{clean} of {len(results)} runs with 0 false verdicts and every cell probed; "
        f"wall min {walls[0]} s, median {walls[len(walls) // 2]} s, max {walls[-1]} s"
        + (f" (stress-ng --cpu {args.stress})" if args.stress else " (idle)")
    )
    return 0 if clean == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
