"""The lab stands in for a vendor's clusters: `crossnet up --plumbing none` brings up clusters
nobody joined, examples/join-lab.sh joins them through `crossnet exec` as a vendor's product would,
and `pytest suites/ --attach … --plumbing none` judges what the vendor built. Without the script
the cross-cluster cells are regressions; with it the matrix is green; and in both cases crossnet
itself changed nothing: every node's routes and iptables rules and each Corefile are the same
before and after the run."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from crossnet.providers.lab.sandbox import SandboxClient
from tests.conftest import ROOT
from tests.lab_helpers import crossnet, load_matrix, needs_lab, run_suites

pytestmark = needs_lab
NONE = [["--plumbing", "none"]]
COUNTERS = re.compile(r"\[\d+:\d+\]")


def snapshot(state_dir: Path) -> dict[str, str]:
    """Every node's IPv4 routes (all tables; IPv6 link-local routes appear by themselves as the
    kernel's duplicate address detection ends) and iptables rules (all tables; counters and dates
    left out) and each cluster's Corefile, byte for byte."""
    client = SandboxClient(state_dir)
    seen: dict[str, str] = {}
    state = json.loads(crossnet("status", "--state-dir", str(state_dir), "--json").stdout)
    for cluster in state["cluster_set"]["clusters"]:
        corefile = state_dir / "clusters" / cluster["name"] / "Corefile"
        seen[f"{cluster['name']}:Corefile"] = corefile.read_text()
        for node in cluster["nodes"]:
            netns = node["handle"] or f"{cluster['name']}.{node['short']}"
            route = client.exec(netns, ["ip", "-4", "route", "show", "table", "all"])
            rules = client.exec(netns, ["iptables-save"])
            assert route.rc == 0 and rules.rc == 0, (route.stderr, rules.stderr)
            kept = [COUNTERS.sub("", line) for line in rules.stdout.splitlines() if not line.startswith("#")]
            seen[f"{netns}:route"] = route.stdout
            seen[f"{netns}:iptables"] = "\n".join(kept)
    return seen


@pytest.mark.parametrize("lab", NONE, indirect=True)
def test_a_vendor_joined_lab_passes_and_crossnet_changes_nothing(lab: Path, tmp_path: Path) -> None:
    state = (lab / "state.json").read_text()
    assert '"plumbing_mode": "none"' in state
    before = snapshot(lab)
    # Nobody joined the clusters: every cross-cluster pod-to-pod cell expected reachable is a
    # regression, every same-cluster one passes, and the run leaves all as it was.
    unjoined = run_suites("suites/test_pod_to_pod.py", "--attach", str(lab), "--plumbing", "none",
                          "--probe-timeout", "1", "--reports", str(tmp_path / "unjoined"), timeout=600)
    cells = load_matrix(tmp_path / "unjoined")["cells"]
    cross = [c for c in cells if c["src"].split("/")[0] != c["dst"].split("/")[0]]
    same = [c for c in cells if c not in cross]
    assert unjoined.returncode == 1 and cross and same, unjoined.stdout[-2000:]
    assert {c["expected"] for c in cross} == {"yes"}  # flat-routed: every pod reaches every pod
    assert {c["verdict"] for c in cross} == {"regression"}, sorted(
        (c["id"], c["verdict"]) for c in cross if c["verdict"] != "regression")[:10]
    assert {c["verdict"] for c in same} == {"pass"}, sorted((c["id"], c["verdict"]) for c in same
                                                            if c["verdict"] != "pass")[:10]
    assert snapshot(lab) == before
    # The vendor's script joins them (through crossnet exec); crossnet's run changes nothing more.
    joined = subprocess.run(["bash", str(ROOT / "examples" / "join-lab.sh"), str(lab)], capture_output=True,
                            text=True, timeout=120, env={"CROSSNET": str(Path(ROOT / ".venv/bin/crossnet")),
                                                         "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert joined.returncode == 0, joined.stderr
    after_join = snapshot(lab)
    assert after_join != before
    green = run_suites("suites/", "--attach", str(lab), "--plumbing", "none", "--reports", str(tmp_path / "joined"))
    matrix = load_matrix(tmp_path / "joined")
    bad = [(c["id"], c["verdict"]) for c in matrix["cells"] if c["verdict"] not in ("pass", "isolated")]
    assert green.returncode == 0 and not bad, (green.stdout[-2000:], bad[:10])
    assert snapshot(lab) == after_join


@pytest.mark.parametrize("lab", NONE, indirect=True)
def test_attach_to_an_unplumbed_run_needs_plumbing_none(lab: Path, tmp_path: Path) -> None:
    done = run_suites("suites/test_pod_to_pod.py", "--attach", str(lab), "--reports", str(tmp_path))
    assert done.returncode != 0
    assert "--plumbing none" in done.stdout + done.stderr
