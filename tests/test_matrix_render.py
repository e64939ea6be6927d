"""matrix.html as a person sees it: headless Chromium renders it offline, the screenshot is not
blank and every verdict colour of the legend is drawn. Everything is written under the test's
tmp_path, never into the checkout; the PNG's path is printed (``pytest -s``) for a person to look at."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from crossnet import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VERDICTS = ("pass", "isolated", "regression", "leak", "source-mismatch", "flaky", "optional")


def matrix_with_every_verdict() -> dict[str, object]:
    cells = []
    for index, verdict in enumerate(VERDICTS):
        for proto in ("tcp", "udp"):
            cells.append({
                "id": f"pod:cluster-1/worker->cluster-2/worker{index}:pod-ip:{proto}", "nodeid": "x",
                "suite": "pod-to-pod",
                "src": "cluster-1/worker", "src_kind": "pod", "src_ip": "10.10.1.2", "dst": f"cluster-2/worker{index}",
                "dst_kind": "pod-ip", "dst_addr": f"10.20.{index}.2:8080", "protocol": proto,
                "expected": "no" if verdict in ("isolated", "leak") else "yes", "expected_source": "node-ip",
                "rule": "flat-routed#4", "because": "kindnet masquerades", "verdict": verdict,
                "observed": "reached" if verdict != "regression" else "timeout", "source_ip": "172.19.0.3",
                "latency_ms": 0.5, "message": f"{verdict} line", "repro": "crossnet exec cluster-1/worker/agent -- x",
                "answers": [], "retried": verdict == "flaky", "evidence": "=== cluster-1/worker: ip route ==="})
    return {"schema": report.MATRIX_SCHEMA, "run": {"provider": "lab", "profile": "flat-routed",
            "clusters": ["cluster-1", "cluster-2"], "started": "2026-11-24T21:30:00Z", "duration_s": 1.0,
            "exit_status": 1}, "cells": cells}


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium for a headless screenshot; "
                    "`apt-get install -y chromium` (.ci/setup installs it)")
def test_matrix_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    paths = report.write_reports(matrix_with_every_verdict(), tmp_path)
    html = next(p for p in paths if p.name == "matrix.html")
    png = tmp_path / "matrix.png"
    argv = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900"]
    shot = subprocess.run([*argv, f"--screenshot={png}", html.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and png.stat().st_size > 0, shot.stderr[-2000:]
    dom = subprocess.run([*argv, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "legend" in dom and all(verdict in dom for verdict in VERDICTS)
    image = Image.open(png).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    assert max(count for count, _ in colours) < 0.97 * image.width * image.height
    greens = sum(count for count, (r, g, b) in colours if g > r + 30 and g > b + 30)
    reds = sum(count for count, (r, g, b) in colours if r > g + 60 and r > b + 60)
    assert greens > 100 and reds > 100, (greens, reds)  # pass and regression are drawn in their colours
    print(f"matrix.html screenshot: {png}")
