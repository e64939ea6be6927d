"""crossnet.report: matrix.html, summary.md, matrix.json, diffs and load errors."""

from __future__ import annotations

import copy
import hashlib
import html
import importlib.resources
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import pytest

from crossnet.report import (
    GLYPHS,
    MATRIX_SCHEMA,
    VERDICTS,
    CellChange,
    ReportError,
    counts,
    diff_matrices,
    load_matrix,
    render_diff,
    render_html,
    render_summary,
    validate_matrix,
    write_reports,
)

XSS = "<script>alert('x')</script>"


def _cell(
    suite: str,
    src: str,
    src_kind: str,
    dst: str,
    dst_kind: str,
    protocol: str,
    verdict: str,
    **extra: Any,
) -> dict[str, Any]:
    prefix = "pod" if src_kind == "pod" else "host"
    cell: dict[str, Any] = {
        "id": f"{suite}[{prefix}:{src}->{dst}:{dst_kind}:{protocol}]",
        "nodeid": f"suites/test_{suite.replace('-', '_')}.py::test_cell[{src}->{dst}]",
        "suite": suite,
        "src": src,
        "src_kind": src_kind,
        "src_ip": "10.10.1.2",
        "dst": dst,
        "dst_kind": dst_kind,
        "dst_addr": "10.20.2.2:8080",
        "protocol": protocol,
        "expected": "yes",
        "expected_source": "node-ip",
        "rule": "flat-routed#3",
        "because": "kindnet masquerades traffic leaving the podSubnet",
        "verdict": verdict,
        "observed": "reached",
        "source_ip": "172.19.0.3",
        "latency_ms": 1.23,
        "message": "",
        "repro": f"crossnet exec {src}/{src_kind} -- probe {protocol} {dst}",
        "answers": [],
        "retried": False,
        "evidence": "",
    }
    cell.update(extra)
    return cell


def make_matrix() -> dict[str, Any]:
    cells = [
        # pod-to-pod: deliberately out of order, to check the sorting
        _cell(
            "pod-to-pod",
            "cluster-1/worker2",
            "pod",
            "cluster-2/worker",
            "pod-ip",
            "tcp",
            "pass",
        ),
        _cell(
            "pod-to-pod",
            "cluster-1/worker",
            "host",
            "cluster-2/worker",
            "pod-ip",
            "tcp",
            "pass",
        ),
        _cell(
            "pod-to-pod",
            "cluster-1/worker",
            "pod",
            "cluster-2/worker",
            "pod-ip",
            "udp",
            "flaky",
            retried=True,
            message="timeout, then reached on the re-probe",
        ),
        _cell(
            "pod-to-pod",
            "cluster-1/worker",
            "pod",
            "cluster-2/worker",
            "pod-ip",
            "tcp",
            "regression",
            observed="timeout",
            source_ip=None,
            latency_ms=None,
            message=f"expected reachable, got timeout after 2.0s {XSS}",
            evidence="ip route get 10.20.2.2\n  RTNETLINK answers: Network is unreachable",
        ),
        _cell(
            "pod-to-pod",
            "cluster-1/worker",
            "pod",
            "cluster-2/worker",
            "pod-ip",
            "icmp",
            "source-mismatch",
            source_ip="10.10.1.2",
            message="expected source node-ip 172.19.0.3, target saw 10.10.1.2",
        ),
        # service
        _cell(
            "service",
            "cluster-1/worker",
            "pod",
            "cluster-2/echo",
            "cluster-ip",
            "tcp",
            "isolated",
            expected="no",
            observed="timeout",
            source_ip=None,
        ),
        _cell(
            "service",
            "cluster-1/worker",
            "pod",
            "cluster-2/echo",
            "cluster-ip",
            "udp",
            "leak",
            expected="no",
            message="expected unreachable, got reached",
        ),
        _cell(
            "service",
            "cluster-1/worker",
            "pod",
            "echo.crossnet.svc.cluster-2.com",
            "dns-name",
            "dns-udp",
            "optional",
            expected="optional",
            observed="nxdomain",
            source_ip=None,
            answers=["10.50.0.100"],
        ),
    ]
    return {
        "schema": MATRIX_SCHEMA,
        "run": {
            "provider": "lab",
            "profile": "flat-routed",
            "clusters": ["cluster-1", "cluster-2"],
            "started": "2026-11-24T21:30:00Z",
            "duration_s": 4.2,
            "exit_status": 1,
            "options": {"probe_timeout": 2.0},
        },
        "cells": cells,
    }


FAILING_IDS = {
    "pod-to-pod[pod:cluster-1/worker->cluster-2/worker:pod-ip:tcp]",
    "pod-to-pod[pod:cluster-1/worker->cluster-2/worker:pod-ip:icmp]",
    "service[pod:cluster-1/worker->cluster-2/echo:cluster-ip:udp]",
}


# --------------------------------------------------------------------------- counts


def test_counts_per_verdict() -> None:
    tally = counts(make_matrix())
    assert list(tally) == list(VERDICTS)
    assert tally == {**dict.fromkeys(VERDICTS, 1), "pass": 2}


def test_counts_empty_matrix_has_zeros() -> None:
    assert counts({"schema": MATRIX_SCHEMA, "run": {}, "cells": []}) == dict.fromkeys(
        VERDICTS, 0
    )


# --------------------------------------------------------------------------- HTML


def test_html_lists_every_cell_and_the_legend() -> None:
    matrix = make_matrix()
    page = render_html(matrix)
    assert page.startswith("<!DOCTYPE html>")
    for cell in matrix["cells"]:
        assert html.escape(cell["id"]) in page, cell["id"]
    legend = page[page.index('class="legend"') :]
    for verdict in VERDICTS:
        assert f"{html.escape(GLYPHS[verdict])}</span> {verdict}</span>" in legend
    # header facts
    for fact in (
        "lab",
        "flat-routed",
        "cluster-1, cluster-2",
        "2026-11-24T21:30:00Z",
        "4.2 s",
    ):
        assert fact in page
    assert "<b>8</b> cells, <b>3</b> failing" in page


def test_html_escapes_text() -> None:
    page = render_html(make_matrix())
    assert "<script" not in page
    assert html.escape(XSS) in page


def test_html_is_self_contained() -> None:
    page = render_html(make_matrix())
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "@import" not in page and "url(" not in page
    for attr, value in re.findall(r"\b(src|href)\s*=\s*[\"']?([^\"' >]*)", page):
        assert attr == "href" and value.startswith("#"), (attr, value)


def test_html_cells_link_to_a_details_panel() -> None:
    page = render_html(make_matrix())
    anchors = set(re.findall(r'href="#(c\d+)"', page))
    assert len(anchors) == 8
    for anchor in anchors:
        assert f'<div class="detail" id="{anchor}"' in page
    # the regression's panel carries the deciding rule, message, repro and evidence
    panels = [
        p
        for p in re.findall(r'<div class="detail".*?</div>', page, re.DOTALL)
        if "cluster-1/worker-&gt;cluster-2/worker:pod-ip:tcp]" in p
        and "regression" in p
    ]
    (detail,) = panels
    assert "expected</dt><dd>reachable, source node-ip" in detail
    assert "observed</dt><dd>timeout" in detail
    assert "flat-routed#3" in detail and "kindnet masquerades" in detail
    assert (
        "<pre>crossnet exec cluster-1/worker/pod -- probe tcp cluster-2/worker</pre>"
        in detail
    )
    assert "RTNETLINK answers: Network is unreachable" in detail
    # a pass shows the latency and the source IP the target saw
    assert "1.23 ms" in page and '<span class="ip">172.19.0.3</span>' in page
    # DNS answers
    assert "10.50.0.100" in page


def test_html_tooltip_has_expected_vs_observed() -> None:
    page = render_html(make_matrix())
    titles = re.findall(r'<a href="#c\d+" title="([^"]*)"', page)
    leak = next(t for t in titles if "cluster-ip:udp" in t)
    assert (
        "leak: expected unreachable; observed reached from 172.19.0.3 in 1.23 ms"
        in leak
    )


def test_html_rows_and_columns_sorted() -> None:
    page = render_html(make_matrix())
    grid = page[page.index("<h2>pod-to-pod</h2>") : page.index("<h2>service</h2>")]
    rows = re.findall(r'<th class="src">([^<]*)', grid)
    assert rows == [
        "cluster-1/worker pod",
        "cluster-1/worker host",
        "cluster-1/worker2 pod",
    ]
    protocols = re.findall(r"<th>(tcp|udp|icmp)</th>", grid)
    assert protocols == ["tcp", "udp", "icmp"]
    # suites in their known order
    assert page.index("<h2>pod-to-pod</h2>") < page.index("<h2>service</h2>")


def test_html_failure_list() -> None:
    page = render_html(make_matrix())
    failures = page[
        page.index("<h2>Failures (3)</h2>") : page.index("<h2>Flaky (1)</h2>")
    ]
    for cell_id in FAILING_IDS:
        assert html.escape(cell_id) in failures
    assert (
        "<pre>crossnet exec cluster-1/worker/pod -- probe tcp cluster-2/worker</pre>"
        in failures
    )
    assert "<pre>ip route get 10.20.2.2\n  RTNETLINK answers" in failures
    assert "flaky" not in failures
    flaky = page[page.index("<h2>Flaky (1)</h2>") :]
    assert "--strict-flakes" in flaky
    assert (
        html.escape("pod-to-pod[pod:cluster-1/worker->cluster-2/worker:pod-ip:udp]")
        in flaky
    )


def test_html_strict_flakes_counts_flaky_as_failing() -> None:
    matrix = make_matrix()
    matrix["run"]["options"]["strict_flakes"] = True
    page = render_html(matrix)
    assert "<h2>Failures (4)</h2>" in page and "<h2>Flaky" not in page


def test_html_is_deterministic_and_handles_no_cells() -> None:
    matrix = make_matrix()
    shuffled = copy.deepcopy(matrix)
    shuffled["cells"].reverse()
    assert render_html(matrix) == render_html(shuffled)
    assert "no cells" in render_html({"schema": MATRIX_SCHEMA, "run": {}, "cells": []})


# --------------------------------------------------------------------------- summary.md


def test_summary_title_tables_and_failures() -> None:
    text = render_summary(make_matrix())
    title = text.splitlines()[0]
    assert title.startswith("## \u2717 crossnet flat-routed (lab): 8 cells, 3 failing")
    for verdict in VERDICTS:
        assert f"{GLYPHS[verdict]} {verdict} {2 if verdict == 'pass' else 1}" in title
    assert "### pod-to-pod" in text and "### service" in text
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| cluster-1/worker pod |")
    ]
    # pod-to-pod: tcp udp icmp sub-columns; service: cluster-ip tcp udp, dns-name dns-udp
    assert rows[0] == "| cluster-1/worker pod | \u2717 | ~ | \u2260 |"
    assert rows[1] == "| cluster-1/worker pod | \u2298 | ! | ? |"
    assert "| source | cluster-2/worker pod-ip<br>tcp |" in text
    failures = text[text.index("### Failures (3)") : text.index("### Flaky (1)")]
    for cell_id in FAILING_IDS:
        assert f"`{cell_id}`" in failures
    assert (
        "repro: `crossnet exec cluster-1/worker/pod -- probe tcp cluster-2/worker`"
        in failures
    )
    # message text is escaped outside code spans
    assert "<script>" not in text
    assert "&lt;script&gt;" in failures


def test_summary_collapses_protocols_when_wide() -> None:
    cells = [
        _cell(
            "pod-to-pod",
            "cluster-1/worker",
            "pod",
            f"cluster-2/worker{n}",
            "pod-ip",
            proto,
            "regression" if (n, proto) == (3, "udp") else "pass",
        )
        for n in range(1, 6)
        for proto in ("tcp", "udp", "icmp")
    ]
    text = render_summary({"schema": MATRIX_SCHEMA, "run": {}, "cells": cells})
    header = next(line for line in text.splitlines() if line.startswith("| source |"))
    assert header.count("|") == 7  # source + 5 targets
    assert "<br>" not in header
    row = next(
        line for line in text.splitlines() if line.startswith("| cluster-1/worker pod")
    )
    assert (
        row == "| cluster-1/worker pod | \u2713 | \u2713 | \u2717 | \u2713 | \u2713 |"
    )
    assert "worst verdict" in text


def test_summary_caps_failures_and_stays_small() -> None:
    cells = [
        _cell(
            "pod-to-pod",
            f"cluster-1/worker{n // 50}",
            "pod",
            f"cluster-2/worker{n % 50}",
            "pod-ip",
            proto,
            "regression",
            message="expected reachable, got timeout after 2.0s " + "x" * 400,
            evidence="e" * 2000,
        )
        for n in range(1700)
        for proto in ("tcp", "udp", "icmp")
    ]
    assert len(cells) > 5000
    text = render_summary({"schema": MATRIX_SCHEMA, "run": {}, "cells": cells})
    assert len(text.encode()) < 512 * 1024
    items = [
        line for line in text.splitlines() if line.startswith("- \u2717 **regression**")
    ]
    assert len(items) == 200
    assert f"- \u2026 and {len(cells) - 200} more" in text
    # the grid is still there, protocols collapsed (50 targets x 3 protocols is too wide)
    header = next(line for line in text.splitlines() if line.startswith("| source |"))
    assert header.count("|") == 52
    assert "| cluster-1/worker0 pod | \u2717 |" in text


# --------------------------------------------------------------------------- files


def test_write_reports(tmp_path: Path) -> None:
    matrix = make_matrix()
    out = tmp_path / "deep" / "reports"
    paths = write_reports(matrix, out)
    assert [p.name for p in paths] == ["matrix.json", "matrix.html", "summary.md"]
    assert all(p.parent == out and p.is_file() for p in paths)
    raw = (out / "matrix.json").read_text(encoding="utf-8")
    assert (
        raw == json.dumps(matrix, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    )
    assert load_matrix(out / "matrix.json") == matrix
    assert (out / "matrix.html").read_text(encoding="utf-8") == render_html(matrix)
    assert (out / "summary.md").read_text(encoding="utf-8") == render_summary(matrix)


# --------------------------------------------------------------------------- load errors


def _write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "matrix.json"
    path.write_text(content, encoding="utf-8")
    return path


def test_load_matrix_not_json(tmp_path: Path) -> None:
    path = _write(tmp_path, "{not json")
    with pytest.raises(
        ReportError, match=r"matrix\.json: not JSON: .* line 1 column 2"
    ):
        load_matrix(path)


def test_load_matrix_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"nope\.json: cannot read matrix"):
        load_matrix(tmp_path / "nope.json")


def test_load_matrix_wrong_schema(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps({"schema": "crossnet.matrix/v0", "cells": []}))
    with pytest.raises(ReportError) as info:
        load_matrix(path)
    assert str(path) in str(info.value)
    assert "'crossnet.matrix/v0', expected 'crossnet.matrix/v1'" in str(info.value)


def test_load_matrix_missing_schema_and_keys(tmp_path: Path) -> None:
    bad = make_matrix()
    del bad["schema"]
    del bad["run"]["profile"]
    del bad["cells"][0]["verdict"]
    del bad["cells"][0]["dst"]
    bad["cells"][1]["verdict"] = "meh"
    path = _write(tmp_path, json.dumps(bad))
    with pytest.raises(ReportError) as info:
        load_matrix(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert 'missing key "schema"' in message
    assert "run: missing keys profile" in message
    assert (
        "cells[0] (pod-to-pod[pod:cluster-1/worker2->cluster-2/worker:pod-ip:tcp]): "
        "missing keys dst, verdict" in message
    )
    assert "cells[1]" in message and "unknown verdict 'meh'" in message


def test_load_matrix_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="expected a JSON object"):
        load_matrix(_write(tmp_path, "[]"))
    with pytest.raises(ReportError, match='missing key "cells"'):
        load_matrix(
            _write(
                tmp_path,
                json.dumps(
                    {
                        "schema": MATRIX_SCHEMA,
                        "run": {"provider": "lab", "profile": "p", "clusters": []},
                    }
                ),
            )
        )


# --------------------------------------------------------------------------- diff


def test_diff_changed_added_removed() -> None:
    old = make_matrix()
    new = copy.deepcopy(old)
    by_id = {c["id"]: c for c in new["cells"]}
    pass_id = "pod-to-pod[pod:cluster-1/worker2->cluster-2/worker:pod-ip:tcp]"
    by_id[pass_id]["verdict"] = "regression"
    removed = new["cells"].pop()  # the optional dns cell
    added = _cell(
        "dns", "cluster-1/worker", "pod", "echo.crossnet", "dns-name", "dns-tcp", "pass"
    )
    new["cells"].append(added)

    changes = diff_matrices(old, new)
    assert changes == sorted(changes, key=lambda c: c.id)
    assert changes == [
        CellChange(added["id"], "dns", None, "pass"),
        CellChange(pass_id, "pod-to-pod", "pass", "regression"),
        CellChange(removed["id"], "service", "optional", None),
    ]
    text = render_diff(changes)
    lines = text.splitlines()
    assert len(lines) == 3
    assert re.fullmatch(rf"pass +<- \(absent\) +{re.escape(added['id'])}", lines[0])
    assert re.fullmatch(rf"regression +<- pass +{re.escape(pass_id)}", lines[1])
    assert re.fullmatch(
        rf"\(absent\) +<- optional +{re.escape(removed['id'])}", lines[2]
    )


def test_diff_no_change() -> None:
    assert diff_matrices(make_matrix(), make_matrix()) == []
    assert render_diff([]) == "no verdict changed\n"


# --------------------------------------------------------------------------- hostile files


@pytest.mark.parametrize("content", ["[" * 100_000, '{"a":' * 100_000])
def test_load_matrix_deeply_nested_json(tmp_path: Path, content: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(ReportError) as info:
        load_matrix(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a crossnet matrix.json: ") and "nested too deeply" in message


def test_load_matrix_huge_integer(tmp_path: Path) -> None:
    path = _write(tmp_path, "1" * 5000)
    with pytest.raises(ReportError, match=r"matrix\.json: not a crossnet matrix\.json: .*digits"):
        load_matrix(path)


def test_load_matrix_not_utf8_directory_and_scalar(tmp_path: Path) -> None:
    path = tmp_path / "matrix.json"
    path.write_bytes(b'{"schema": "\xff\xfe"}')
    with pytest.raises(ReportError, match=r"matrix\.json: not JSON \(not UTF-8 text"):
        load_matrix(path)
    with pytest.raises(ReportError, match=re.escape(f"{tmp_path}: cannot read matrix")):
        load_matrix(tmp_path)
    with pytest.raises(ReportError, match="top level is str, expected a JSON object"):
        load_matrix(_write(tmp_path, '"just a string"'))


def test_load_matrix_quotes_long_values_cut(tmp_path: Path) -> None:
    long = "s" * 100_000
    with pytest.raises(ReportError) as info:
        load_matrix(_write(tmp_path, json.dumps({"schema": long})))
    assert "(100000 chars)" in str(info.value) and len(str(info.value)) < 500
    bad = make_matrix()
    bad["cells"][0]["verdict"] = long
    bad["cells"][0]["id"] = "i" * 100_000
    with pytest.raises(ReportError) as info:
        load_matrix(_write(tmp_path, json.dumps(bad)))
    assert "unknown verdict" in str(info.value) and len(str(info.value)) < 1000


def test_diff_of_different_topologies_is_refused() -> None:
    old = make_matrix()
    new = copy.deepcopy(old)
    new["run"]["clusters"] = ["globalnet-1", "globalnet-2", "globalnet-3"]
    for cell in new["cells"]:
        cell["id"] = cell["id"].replace("cluster-", "globalnet-")
    with pytest.raises(ReportError) as info:
        diff_matrices(old, new)
    assert str(info.value) == (
        "the matrices come from different topologies: clusters cluster-1, cluster-2 vs "
        "globalnet-1, globalnet-2, globalnet-3; diff runs of the same topology"
    )
    # The same clusters listed in another order are the same topology.
    new = copy.deepcopy(old)
    new["run"]["clusters"] = ["cluster-2", "cluster-1"]
    assert diff_matrices(old, new) == []


# --------------------------------------------------------------------------- escaping and the template

HOSTILE = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>&amp;"
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "b", "span", "table", "thead",
             "tbody", "tr", "th", "td", "a", "div", "dl", "dt", "dd", "pre", "code", "ol", "li"}
PAGE_ATTRIBUTES = {"lang", "charset", "name", "content", "class", "title", "href", "data-cell", "id", "role",
                   "rowspan", "colspan"}


class _Page(HTMLParser):
    """What a browser would build from the page: its tags, attributes and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes += attrs

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_escapes_every_field_in_text_and_attributes() -> None:
    matrix = make_matrix()
    matrix["run"].update(provider=HOSTILE, profile=HOSTILE, clusters=[HOSTILE], started=HOSTILE,
                         duration_s=HOSTILE, exit_status=HOSTILE)
    for cell in matrix["cells"]:
        for key in ("id", "suite", "src", "src_kind", "src_ip", "dst", "dst_kind", "dst_addr", "protocol", "expected",
                    "expected_source", "rule", "because", "observed", "source_ip", "message", "repro", "evidence",
                    "nodeid"):
            cell[key] = f"{cell.get(key) or ''}{HOSTILE}"
        cell.update(answers=[HOSTILE], global_ip=HOSTILE, latency_ms=HOSTILE)
    matrix["cells"][0]["verdict"] = HOSTILE  # an unknown verdict is shown (and escaped) too
    page = render_html(matrix)
    assert "<script" not in page and "<img" not in page
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    assert parsed.tags <= PAGE_TAGS, parsed.tags - PAGE_TAGS
    assert {name for name, _ in parsed.attributes} <= PAGE_ATTRIBUTES
    # every value comes out as the text it was: escaped, not dropped or mangled
    assert {value for name, value in parsed.attributes if name == "data-cell"} == {c["id"] for c in matrix["cells"]}
    shown = "".join(parsed.text)
    assert shown.count(HOSTILE) > 20 * len(matrix["cells"])
    assert f"crossnet matrix: {HOSTILE} on {HOSTILE}" in shown


def test_html_escapes_a_script_in_a_cell_message() -> None:
    matrix = make_matrix()
    matrix["cells"][0]["message"] = "<script>alert('x')</script>"
    page = render_html(matrix)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page  # tooltip, details panel


def test_html_comes_from_an_autoescaping_strict_template() -> None:
    from crossnet.report import html as report_html

    environment = report_html._environment()
    assert environment.autoescape is True and environment.undefined is jinja2.StrictUndefined
    assert (importlib.resources.files("crossnet.report") / "templates" / "matrix.html.j2").is_file()
    with pytest.raises(jinja2.UndefinedError):  # a value the template needs and was not given
        environment.get_template("matrix.html.j2").render()


# --------------------------------------------------------------------------- unchanged output

# summary.md and matrix.html of make_matrix() exactly as the single-module (f-string) report.py wrote them.
SUMMARY_OF_MAKE_MATRIX = "\n".join([
    "## ✗ crossnet flat-routed (lab): 8 cells, 3 failing — ✓ pass 2 · ⊘ isolated 1 · ✗ regression 1 "
    "· ! leak 1 · ≠ source-mismatch 1 · ~ flaky 1 · ? optional 1",
    "",
    "clusters cluster-1, cluster-2 · started 2026-11-24T21:30:00Z · duration 4.2 s · exit status 1",
    "",
    "Legend: ✓ pass · ⊘ isolated · ✗ regression · ! leak · ≠ source-mismatch · ~ flaky · ? optional "
    "(flaky fails the run only with --strict-flakes)",
    "",
    "### pod-to-pod",
    "",
    "✓ pass 2 · ✗ regression 1 · ≠ source-mismatch 1 · ~ flaky 1",
    "",
    "| source | cluster-2/worker pod-ip<br>tcp | udp | icmp |",
    "|---|:-:|:-:|:-:|",
    "| cluster-1/worker pod | ✗ | ~ | ≠ |",
    "| cluster-1/worker host | ✓ |  |  |",
    "| cluster-1/worker2 pod | ✓ |  |  |",
    "",
    "### service",
    "",
    "⊘ isolated 1 · ! leak 1 · ? optional 1",
    "",
    "| source | cluster-2/echo cluster-ip<br>tcp | udp | echo.crossnet.svc.cluster-2.com "
    "dns-name<br>dns-udp |",
    "|---|:-:|:-:|:-:|",
    "| cluster-1/worker pod | ⊘ | ! | ? |",
    "",
    "### Failures (3)",
    "",
    "- ✗ **regression** `pod-to-pod[pod:cluster-1/worker->cluster-2/worker:pod-ip:tcp]`<br>expected "
    "reachable, got timeout after 2.0s &lt;script&gt;alert('x')&lt;/script&gt;<br>repro: `crossnet "
    "exec cluster-1/worker/pod -- probe tcp cluster-2/worker`",
    "- ≠ **source-mismatch** "
    "`pod-to-pod[pod:cluster-1/worker->cluster-2/worker:pod-ip:icmp]`<br>expected source node-ip "
    "172.19.0.3, target saw 10.10.1.2<br>repro: `crossnet exec cluster-1/worker/pod -- probe icmp "
    "cluster-2/worker`",
    "- ! **leak** `service[pod:cluster-1/worker->cluster-2/echo:cluster-ip:udp]`<br>expected "
    "unreachable, got reached<br>repro: `crossnet exec cluster-1/worker/pod -- probe udp "
    "cluster-2/echo`",
    "",
    "### Flaky (1)",
    "",
    "- ~ **flaky** `pod-to-pod[pod:cluster-1/worker->cluster-2/worker:pod-ip:udp]`<br>timeout, then "
    "reached on the re-probe<br>repro: `crossnet exec cluster-1/worker/pod -- probe udp "
    "cluster-2/worker`",
    "",
])
MATRIX_HTML_SHA256 = "ff851437d0b5c26f747a543b21a4dd456805df58e018821696e8a7a54695aca2"


def test_summary_text_is_unchanged() -> None:
    assert render_summary(make_matrix()) == SUMMARY_OF_MAKE_MATRIX


def test_html_bytes_are_unchanged() -> None:
    page = render_html(make_matrix())
    assert hashlib.sha256(page.encode("utf-8")).hexdigest() == MATRIX_HTML_SHA256, (
        "matrix.html changed: if on purpose, look at the test_matrix_render screenshot, then update the hash"
    )


def test_plumbing_facts_appear_in_every_report_failing_first(tmp_path: Path) -> None:
    matrix = make_matrix()
    matrix["facts"] = [
        {"id": "cluster-1/worker:ip_forward", "ok": True, "expected": "net.ipv4.ip_forward = 1",
         "observed": "net.ipv4.ip_forward = 1"},
        {"id": "cluster-1/worker:route-to:cluster-2/worker2", "ok": False,
         "expected": "route 10.20.2.0/24 via 172.19.0.7", "observed": "no route <b>x</b>"},
    ]
    assert validate_matrix(matrix) == []
    summary = render_summary(matrix)
    assert "### Plumbing: 2 node facts, 1 failing" in summary
    assert "`cluster-1/worker:route-to:cluster-2/worker2`: expected route 10.20.2.0/24 via 172.19.0.7" in summary
    page = render_html(matrix)
    assert "plumbing: node facts (2, 1 failing)" in page and "no route &lt;b&gt;x&lt;/b&gt;" in page
    assert page.index("route-to:cluster-2/worker2") < page.index("cluster-1/worker:ip_forward")  # failing first
    del matrix["facts"]
    assert "Plumbing" not in render_summary(matrix) and "node facts" not in render_html(matrix)
