"""matrix.html and summary.md at scale: a 4-cluster x 8-node run (~24,600 cells) built through the
functions the plugin uses (build_cells, live_cell, judge, then check_cell's record), with a broken
node, a few leaks, source mismatches and flakes, each failing cell carrying its node evidence.
matrix.html must stay under 10 MB with every failing cell's details, summary.md under 1 MiB."""

from __future__ import annotations

import copy
import functools
import html
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from crossnet.config import load_topology
from crossnet.judge import cell_record, judge
from crossnet.live import LiveCell, live_cell
from crossnet.model import Observation
from crossnet.profile import load_profile
from crossnet.providers.lab.clusterset import live_cluster_set
from crossnet.providers.lab.topology import plan_lab
from crossnet.report import MATRIX_SCHEMA, VERDICTS, counts, render_html, render_summary, write_reports
from crossnet.report.document import failing_verdicts
from crossnet.suites import build_cells

MB = 1_000_000
MIB = 1024 * 1024
BROKEN = ("scale-3", "worker5")  # its pods are unreachable from the other clusters


def scale_configs(out: Path, clusters: int, nodes: int) -> list[Path]:
    """What `crossnet scale-configs --clusters N --nodes M` writes."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(1, clusters + 1):
        roles = "\n".join(["  - role: control-plane"] + ["  - role: worker"] * (nodes - 1))
        path = out / f"scale-{n}.yaml"
        path.write_text(
            f"kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: scale-{n}\n"
            f"networking:\n  podSubnet: 10.{n}.0.0/16\n  serviceSubnet: 10.{100 + n}.0.0/16\n"
            "kubeadmConfigPatches:\n  - |\n    kind: ClusterConfiguration\n    networking:\n"
            f"      dnsDomain: scale-{n}.test\nnodes:\n{roles}\n"
        )
        paths.append(path)
    return paths


def _evidence(src: str, dst: str, flow: str) -> str:
    """About what crossnet.evidence collects from both ends of a path (~5 KB)."""
    parts = []
    for node in (src, dst):
        routes = "\n".join(
            f"10.{c}.{n}.0/24 via 172.19.0.{10 + 8 * c + n} dev eth0" for c in range(1, 5) for n in range(8)
        )
        nat = "\n".join(
            f"-A KUBE-SEP-{i:016X} -p tcp -m tcp -j DNAT --to-destination 10.2.{i}.2:8080" for i in range(24)
        )
        parts += [
            f"=== {node}: ip route ===\ndefault via 172.19.0.1 dev eth0\n{routes}\n",
            f"=== {node}: ip rule ===\n0: from all lookup local\n32766: from all lookup main\n",
            f"=== {node}: rp_filter all/default ===\nnet.ipv4.conf.all.rp_filter = 0\n",
            f"=== {node}: iptables -t nat ===\n{nat}\n",
            f"=== {node}: conntrack for {flow} ===\nno entry for this flow\n",
        ]
    return "".join(parts)


def _observation(live: LiveCell, reached: bool, index: int, source: str | None = None) -> Observation:
    cell = live.cell
    if not reached:
        return Observation(False, "timeout", latency_ms=2000.0)
    if cell.target.expect_nxdomain:
        return Observation(False, "nxdomain", latency_ms=1.5, rcode="NXDOMAIN")
    wanted = cell.expectation.source
    seen = source or (live.src_ip if wanted == "preserved" else live.node_ip)
    return Observation(True, source_ip=seen, latency_ms=0.2 + (index % 97) / 31, answers=live.expected_answers)


def _record(live: LiveCell, index: int, dst_name: str) -> dict[str, Any] | None:
    """One judged cell as the plugin's check_cell records it (None: a snat regression, which it skips);
    the repro as under the default state directory."""
    cell = live.cell
    broken = (cell.target.cluster, cell.target.node) == BROKEN and cell.vantage.cluster != BROKEN[0]
    expected = cell.expectation.reachable
    leak = expected == "no" and index % 211 == 0
    first = _observation(live, reached=(expected != "no" and not broken) or leak, index=index)
    retry = None
    if expected == "yes" and not broken and index % 997 == 0:  # flaky: timed out, then reached
        first, retry = Observation(False, "timeout", latency_ms=2000.0), first
    elif expected == "yes" and broken:
        retry = first
    elif cell.expectation.source == "node-ip" and index % 173 == 0:  # source-mismatch
        first = _observation(live, True, index, source=live.src_ip)
    judgement = judge(live, first, retry)
    if cell.suite == "snat" and judgement.verdict == "regression":
        return None
    nodeid = f"suites/test_{cell.suite.replace('-', '_')}.py::test_cell[{cell.id}]"
    record: dict[str, Any] = dict(cell_record(live, judgement, nodeid, dst_name, live.repro))
    if judgement.verdict in failing_verdicts({}):
        flow = f"{live.src_ip} {live.dst_addr.split(':')[0].split(' ')[0]}"
        record["evidence"] = _evidence(record["src"], f"{cell.target.cluster}/{cell.target.node}", flow)
    return record


def synthetic_matrix(tmp: Path, clusters: int = 4, nodes: int = 8) -> dict[str, Any]:
    """The matrix document of a judged run of `clusters` x `nodes` (the plugin's `_matrix`)."""
    topology = load_topology(scale_configs(tmp, clusters, nodes))
    cells = build_cells(topology, load_profile("flat-routed"))
    cluster_set = live_cluster_set(plan_lab(topology))
    judged = []
    for index, cell in enumerate(cells):
        record = _record(live_cell(cell, cluster_set, 2.0), index, cluster_set.name(cell.target.label))
        if record is not None:
            judged.append(record)
    return {
        "schema": MATRIX_SCHEMA,
        "run": {
            "provider": "lab",
            "profile": "flat-routed",
            "clusters": [c.name for c in topology.clusters],
            "started": "2026-12-01T10:00:00Z",
            "duration_s": 812.4,
            "exit_status": 1,
            "interrupted": False,
            "complete": True,
            "not_probed": 0,
            "options": {"probe_timeout": 2.0, "strict_flakes": False},
        },
        "cells": sorted(judged, key=lambda c: (c["suite"], c["id"])),
        "facts": [],
    }


@functools.cache
def _matrix_4x8() -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="crossnet-scale-") as tmp:
        return synthetic_matrix(Path(tmp))


@functools.cache
def _page_4x8() -> tuple[str, float]:
    started = time.perf_counter()
    page = render_html(_matrix_4x8())
    return page, time.perf_counter() - started


def _slice(matrix: dict[str, Any], n: int) -> dict[str, Any]:
    """The first `n` cells of a matrix, every failing one kept (a smaller run of the same shape)."""
    failing = [c for c in matrix["cells"] if c["verdict"] not in ("pass", "isolated")]
    others = [c for c in matrix["cells"] if c["verdict"] in ("pass", "isolated")]
    rest = copy.deepcopy({k: v for k, v in matrix.items() if k != "cells"})
    return {**rest, "cells": [dict(c) for c in (failing + others)[:n]]}  # tests change a cell's fields, not its lists


def _data(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="cells">(.*?)</script>', page, re.DOTALL)
    assert found, "no cell data in the page"
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def _decoded(data: dict[str, Any]) -> list[list[dict[str, str]]]:
    """What the page's script reads from the data: per block, its detailed cells (field -> text)."""
    fields, strings = data["fields"], data["strings"]
    blocks = []
    for prefix, shared, rows, _omitted in data["blocks"]:
        cells = []
        for row in rows:
            values = iter(row)
            cell = {f: strings[s if s >= 0 else next(values)] for f, s in zip(fields, shared, strict=True)}
            cell["cell"] = strings[prefix] + cell["cell"]
            cells.append(cell)
        blocks.append(cells)
    return blocks


def _squares(section: str) -> list[tuple[int, dict[str, int]]]:
    """(block number, counts per verdict) of every square of a page section, from its tooltip."""
    found = []
    for number, title in re.findall(r'<td class="v-[a-z-]+" data-b="(\d+)" title="([^"]*)"', section):
        tally = html.unescape(title).rsplit(": ", 1)[1]
        found.append((int(number), {v: int(n) for v, n in (part.rsplit(" ", 1) for part in tally.split(", "))}))
    return found


def _suite_section(page: str, suite: str) -> str:
    start = page.index(f"<h2>{suite}</h2>")
    return page[start : page.index("<h2>", start + 1)]


@pytest.fixture
def blocks_from_100(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of more than 100 cells are folded into blocks: the same page, from a smaller (quicker) run."""
    from crossnet.report import html_blocks

    monkeypatch.setattr(html_blocks, "DETAILED_MAX_CELLS", 100)


# --------------------------------------------------------------------------- matrix.html


def test_the_synthetic_run_is_realistic() -> None:
    matrix = _matrix_4x8()
    tally = counts(matrix)
    assert len(matrix["cells"]) >= 24_000
    assert {c["suite"] for c in matrix["cells"]} == {"pod-to-pod", "service", "dns", "snat"}
    assert 200 <= tally["regression"] + tally["leak"] + tally["source-mismatch"] <= 1000
    assert tally["leak"] and tally["source-mismatch"] and tally["flaky"] and tally["isolated"]
    evidence = [c["evidence"] for c in matrix["cells"] if c["evidence"]]
    assert len(evidence) >= 200 and min(len(e) for e in evidence) > 5000


def test_matrix_html_of_24k_cells_is_under_10_mb() -> None:
    """Drawn cell by cell (before), this page was 50 MB; folded into blocks it stays under 10 MB."""
    page, took = _page_4x8()
    size = len(page.encode("utf-8"))
    print(f"matrix.html of {len(_matrix_4x8()['cells'])} cells: {size / MB:.2f} MB in {took:.2f} s")
    assert size < 10 * MB
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert 'class="detail"' not in page  # no per-cell panel
    assert "http://" not in page and "https://" not in page and "<link" not in page and "url(" not in page
    assert re.findall(r"<script\b[^>]*>", page) == ['<script type="application/json" id="cells">', "<script>"]


def test_matrix_html_keeps_every_failing_cell_with_its_details() -> None:
    matrix, (page, _) = _matrix_4x8(), _page_4x8()
    failing = failing_verdicts(matrix)
    failed = [c for c in matrix["cells"] if c["verdict"] in failing]
    flakes = [c for c in matrix["cells"] if c["verdict"] == "flaky"]
    lists = page[page.index(f"<h2>Failures ({len(failed)})</h2>") :]
    flaky = lists[lists.index(f"<h2>Flaky ({len(flakes)})</h2>") :]
    for cell in failed:
        entry = lists[lists.index(f"<code>{html.escape(cell['id'])}</code>") :]
        entry = entry[: entry.index("</li>")]
        assert html.escape(cell["message"]) in entry and f"<pre>{html.escape(cell['repro'])}</pre>" in entry
        assert "evidence" in entry
    for cell in flakes:
        assert f"<code>{html.escape(cell['id'])}</code>" in flaky
    for evidence in {c["evidence"] for c in failed}:  # each distinct evidence text, once
        assert page.count(f"<pre>{html.escape(evidence)}</pre>") == 1
    # a failing cell's details are in its square's data, with the anchor of its entry in the lists;
    # the square links to the entry of its first failing cell (what works without the script)
    data = _data(page)
    decoded = _decoded(data)
    linked = {cell["cell"]: cell["link"] for block in decoded for cell in block if cell["link"]}
    assert set(linked) == {c["id"] for c in failed + flakes}
    assert all(f'<li id="{anchor}"><span class="v-' in page for anchor in linked.values())
    squares = re.findall(r'<td class="v-[a-z-]+" data-b="(\d+)" title="[^"]*">(.*?)</td>', page)
    assert len(squares) == len(decoded)
    for number, square in squares:
        first = next((cell["link"] for cell in decoded[int(number)] if cell["link"]), None)
        assert (f'<a href="#{first}">' in square) if first else ("<a " not in square)


def test_matrix_html_counts_match_the_matrix() -> None:
    matrix, (page, _) = _matrix_4x8(), _page_4x8()
    tally = counts(matrix)
    failing = sum(n for v, n in tally.items() if v in failing_verdicts(matrix))
    assert f"<b>{len(matrix['cells'])}</b> cells, <b>{failing}</b> failing" in page
    for verdict in VERDICTS:
        assert f"</span> {verdict} <b>{tally[verdict]}</b></span>" in page
    data = _data(page)
    decoded = _decoded(data)
    for suite in ("pod-to-pod", "service", "dns", "snat"):
        cells = [c for c in matrix["cells"] if c["suite"] == suite]
        squares = _squares(_suite_section(page, suite))
        shown: dict[str, int] = {}
        for number, square in squares:
            for verdict, n in square.items():
                shown[verdict] = shown.get(verdict, 0) + n
            detailed = decoded[number]
            assert len(detailed) + data["blocks"][number][3] == sum(square.values())
            assert all(c["verdict"] in square for c in detailed)
        assert shown == {v: n for v, n in counts({"cells": cells}).items() if n}, suite
    # every cell's details are in the data, exactly once, with what matrix.json says of it
    by_id = {c["id"]: c for c in matrix["cells"]}
    ids = [cell["cell"] for block in decoded for cell in block]
    assert len(ids) == len(by_id) and set(ids) == set(by_id)
    for cell in (cell for block in decoded for cell in block):
        assert cell["verdict"] == by_id[cell["cell"]]["verdict"]
        assert cell["protocol"] == by_id[cell["cell"]]["protocol"]
    # the cluster pairs add up to the whole run
    pairs = page[page.index("<h2>clusters</h2>") : page.index("<h2>pod-to-pod</h2>")]
    total: dict[str, int] = {}
    for title in re.findall(r'<td class="v-[a-z-]+" title="([^"]*)"', pairs):
        for part in html.unescape(title).rsplit(": ", 1)[1].split(", "):
            verdict, many = part.rsplit(" ", 1)
            total[verdict] = total.get(verdict, 0) + int(many)
    assert total == {v: n for v, n in tally.items() if n}


def test_small_runs_keep_their_page_and_large_ones_are_folded() -> None:
    small = _slice(_matrix_4x8(), 600)
    page = render_html(small)
    assert "<script" not in page and page.count('<div class="detail" id="c') == 600
    from crossnet.report import html_blocks
    from crossnet.report.layout import suites

    plain = _slice(_matrix_4x8(), html_blocks.DETAILED_MAX_CELLS + 1)
    for cell in plain["cells"]:
        cell["evidence"] = ""
    assert html_blocks.wanted(suites(plain))
    plain["cells"].pop()
    assert not html_blocks.wanted(suites(plain))
    heavy = _slice(_matrix_4x8(), 200)
    for cell in heavy["cells"]:
        cell["evidence"] = "e" * 40_000  # 200 cells, each with 40 KB evidence: 16 MB drawn in full
    assert html_blocks.wanted(suites(heavy)) and len(render_html(heavy).encode()) < 2 * MB


@pytest.mark.usefixtures("blocks_from_100")
def test_budgets_leave_out_details_and_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from crossnet.report import html_blocks

    monkeypatch.setattr(html_blocks, "DATA_BUDGET", 1000)
    monkeypatch.setattr(html_blocks, "EVIDENCE_BUDGET", 20_000)
    monkeypatch.setattr(html_blocks, "MAX_LISTED", 50)
    matrix = _slice(_matrix_4x8(), 1000)
    page = render_html(matrix)
    failed = [c for c in matrix["cells"] if c["verdict"] in failing_verdicts(matrix)]
    assert "the squares detail only the cells that neither passed nor stayed isolated" in page
    data = _data(page)
    detailed = [c for block in _decoded(data) for c in block]
    assert {c["verdict"] for c in detailed} == {"regression", "leak", "source-mismatch", "flaky"}
    quiet = sum(1 for c in matrix["cells"] if c["verdict"] in ("pass", "isolated"))
    assert sum(block[3] for block in data["blocks"]) == quiet
    assert f"&hellip; and {len(failed) - 50} more, by id only here" in page
    for cell in failed:  # every failing id is still on the page
        assert f"<code>{html.escape(cell['id'])}</code>" in page
    assert page.count("<details><summary>evidence") <= 20_000 // 5000
    assert "left out to keep this page small: see the cell in matrix.json" in page


HOSTILE = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>&amp;</script><!--"


@pytest.mark.usefixtures("blocks_from_100")
def test_blocks_page_escapes_every_field() -> None:
    matrix = _slice(_matrix_4x8(), 800)
    for cell in matrix["cells"]:
        for key in ("id", "src", "dst", "dst_kind", "protocol", "observed", "message", "repro", "evidence", "rule"):
            cell[key] = f"{cell[key]}{HOSTILE}"
    matrix["run"]["profile"] = HOSTILE
    page = render_html(matrix)
    assert len(re.findall(r"<script", page)) == 2 and page.count("</script>") == 2 and "<img" not in page
    assert "<!--" not in page
    decoded = [cell for block in _decoded(_data(page)) for cell in block]
    assert {c["cell"] for c in decoded} == {c["id"] for c in matrix["cells"]}  # the data gives them back as text
    assert all(c["observed"].endswith(HOSTILE) for c in decoded)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium for a headless run of the page's script")
@pytest.mark.usefixtures("blocks_from_100")
def test_clicking_a_square_lists_its_cells(tmp_path: Path) -> None:
    page = render_html(_slice(_matrix_4x8(), 400))
    assert 'data-b="0"' in page
    click = '<script>document.querySelector("td[data-b] a").click();</script></body>'
    path = tmp_path / "matrix.html"
    path.write_text(page.replace("</body>", click), encoding="utf-8")
    argv = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()]  # fmt: skip
    dom = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    panel = dom[dom.index('<div id="panel"') :]
    panel = panel[: panel.index("<script")]
    assert 'role="dialog"><a' in panel and " hidden" not in panel.split(">", 1)[0]
    first = re.search(r'<li id="f1">.*?<code>(.*?)</code>', page)
    assert first and html.escape(html.unescape(first.group(1)), quote=False) in panel
    assert "expected</dt><dd>reachable" in panel
    assert 'href="#f1"' in panel


# --------------------------------------------------------------------------- summary.md


def _replicated(matrix: dict[str, Any], times: int) -> dict[str, Any]:
    """`times` copies of a run side by side, each with its own cluster names (ids stay unique)."""
    renamed = ("id", "src", "dst")
    cells = [
        {**c, **{k: c[k].replace("scale-", f"scale{n}-") for k in renamed}, "evidence": ""}  # summary.md shows none
        for n in range(times)
        for c in matrix["cells"]
    ]
    clusters = [f"scale{n}-{i}" for n in range(times) for i in range(1, 5)]
    return {**matrix, "run": {**matrix["run"], "clusters": clusters}, "cells": cells}


def test_summary_of_24k_cells_is_under_1_mib() -> None:
    matrix = _matrix_4x8()
    text = render_summary(matrix)
    assert len(text.encode("utf-8")) < MIB
    failed = [c for c in matrix["cells"] if c["verdict"] in failing_verdicts(matrix)]
    assert text.startswith(f"## \u2717 crossnet flat-routed (lab): {len(matrix['cells'])} cells, {len(failed)} failing")
    assert f"- \u2026 and {len(failed) - 200} more (see matrix.html / matrix.json)" in text
    assert "### cluster pairs" in text and "| scale-1 | \u2713 " in text


def test_summary_of_100k_cells_stays_under_1_mib() -> None:
    matrix = _replicated(_matrix_4x8(), 4)
    assert len(matrix["cells"]) >= 98_000
    started = time.perf_counter()
    text = render_summary(matrix)
    size = len(text.encode("utf-8"))
    print(f"summary.md of {len(matrix['cells'])} cells: {size / 1024:.0f} KiB in {time.perf_counter() - started:.2f} s")
    assert size < MIB
    failed = [c for c in matrix["cells"] if c["verdict"] in failing_verdicts(matrix)]
    flakes = [c for c in matrix["cells"] if c["verdict"] == "flaky"]
    assert f"{len(matrix['cells'])} cells, {len(failed)} failing" in text.splitlines()[0]
    assert f"### Failures ({len(failed)})" in text and f"### Flaky ({len(flakes)})" in text
    assert f"- \u2026 and {len(failed) - 200} more (see matrix.html / matrix.json)" in text
    assert f"- \u2026 and {len(flakes) - 50} more (see matrix.html / matrix.json)" in text
    for suite in ("pod-to-pod", "service", "dns", "snat"):
        assert f"### {suite}" in text


@pytest.mark.usefixtures("blocks_from_100")
def test_write_reports_of_a_large_run(tmp_path: Path) -> None:
    matrix = _slice(_matrix_4x8(), 600)
    paths = write_reports(matrix, tmp_path)
    assert [p.name for p in paths] == ["matrix.json", "matrix.html", "summary.md"]
    page = (tmp_path / "matrix.html").read_text(encoding="utf-8")
    assert page == render_html(matrix) and 'data-b="0"' in page
