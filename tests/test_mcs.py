"""Multi-Cluster Services (the mcs topology): the cells as data, then the lab -- both profiles hold,
and each fault of the field gives exactly its cells: the ServiceImport's IPs wrong, the
`multicluster` line removed from the Corefile, the derived Service's endpoints emptied, the export
withdrawn."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from crossnet.options import load_setup
from crossnet.plumbing.corefile import plan_forward_patch
from crossnet.plumbing.mcs import clusterset_block
from crossnet.profile import McsPlumbing, ProfileError, load_profile
from crossnet.providers.lab.stock import stock_corefile
from tests.lab_helpers import (
    assert_nothing_left,
    crossnet,
    down,
    host_snapshot,
    load_matrix,
    needs_lab,
    run_suites,
    verdicts,
)

MCS = load_setup("mcs", None, None)
IMPORTER = "mcs-2"


def test_the_mcs_cells_ask_what_the_mcs_api_promises() -> None:
    cells = [c for c in MCS.cells if c.suite == "mcs"]
    forms = Counter(c.target.form for c in cells)
    assert set(forms) == {"clusterset", "clusterset-search", "clusterset-nosearch", "nxdomain", "derived", "srv",
                          "pod.cluster.clusterset", ""}
    ids = {c.id for c in cells}
    assert "pod:mcs-2/worker->mcs-1:clusterset:echo:dns-name:dns-udp" in ids
    assert "pod:mcs-2/worker->mcs-1/worker2:pod.cluster.clusterset:echo-headless:headless:tcp" in ids
    assert "pod:mcs-1/worker->mcs-1:clusterset:echo:dns-name:dns-udp" in ids  # the exporter's own view
    assert len(ids) == len(cells)
    decided = {c.id: c.expectation.reachable for c in cells}
    assert decided["pod:mcs-2/worker->mcs-1:clusterset-nosearch:remote-echo:dns-name:dns-udp"] == "no"
    assert decided["pod:mcs-2/worker->mcs-1:derived:derived-echo:dns-name:tcp"] == "yes"
    assert decided["pod:mcs-2/worker->mcs-1/private:cluster-ip:tcp"] == "no"
    only = load_setup("mcs", None, "mcs-clusterset-only")
    assert {c.id: c.expectation.reachable for c in only.cells}[
        "pod:mcs-2/worker->mcs-1:derived:derived-echo:dns-name:tcp"] == "no"
    ra = {c.target.expect_ra for c in cells if c.target.form == "srv"}
    assert ra == {True} and not any(c.target.expect_ra for c in only.cells)


def test_the_clusterset_block_goes_inside_the_fence_and_the_original_comes_back(tmp_path: Path) -> None:
    original = stock_corefile("mcs-2.com")
    patch = plan_forward_patch(original, "run-1", {"mcs-1.com": ["10.50.0.3"]},
                               extra_blocks=[clusterset_block(McsPlumbing())])
    added = patch.patched[len(original):]
    assert "multicluster clusterset.local" in added and "response set ra" in added
    assert "response set ra" not in "\n".join(clusterset_block(McsPlumbing(header_ra=False)))
    assert patch.restore() == original
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nglobalnet: true\nplumbing:\n  mcs: {derived_services: maybe, zone: x}\n"
                    "defaults: {reachable: yes}\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    for fragment in ("derived_services is 'maybe'", "unknown key 'zone'", "drop globalnet"):
        assert fragment in str(caught.value)


# ------------------------------------------------------------------------------ the lab


def _up(tmp_path: Path, profile: str) -> Path:
    state = tmp_path / "s"
    crossnet("up", "--topology", "mcs", "--profile", profile, "--state-dir", str(state))
    return state


def _attached(state: Path, tmp_path: Path, profile: str) -> dict[str, str]:
    reports = tmp_path / f"r{time.monotonic_ns()}"
    run_suites("suites/test_mcs.py", "--topology", "mcs", "--profile", profile, "--attach", str(state),
               "--reports", str(reports))
    return verdicts(load_matrix(reports))


def _rewrite(path: Path, change: object) -> None:
    """Replace a lab file atomically (the lab DNS reloads it within 0.1 s), then give it the time."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(change if isinstance(change, str) else json.dumps(change))
    os.replace(temporary, path)
    time.sleep(0.5)


def _records(state: Path) -> Path:
    return state / "clusters" / IMPORTER / "records.json"


def _failing(cells: dict[str, str]) -> set[str]:
    return {i for i, v in cells.items() if v not in ("pass", "isolated")}


def _importer_cells(cells: dict[str, str], *fragments: str) -> set[str]:
    return {i for i in cells if i.startswith(("pod:mcs-2/", "host:mcs-2/")) and any(f in i for f in fragments)}


@needs_lab
@pytest.mark.parametrize("profile", ["mcs-karmada", "mcs-clusterset-only"])
def test_each_profile_holds_on_the_lab_and_leaves_nothing(tmp_path: Path, profile: str) -> None:
    before = host_snapshot()
    done = run_suites("suites/", "--topology", "mcs", "--profile", profile, "--state-dir", str(tmp_path / "s"),
                      "--reports", str(tmp_path / "r"))
    assert done.returncode == 0, done.stdout[-3000:]
    cells = verdicts(load_matrix(tmp_path / "r"))
    assert cells["pod:mcs-2/worker->mcs-1:srv:echo:tcp:dns-name:dns-udp"] == "pass"
    assert cells["pod:mcs-2/worker->mcs-1:derived:derived-echo:dns-name:tcp"] == (
        "pass" if profile == "mcs-karmada" else "isolated")
    assert_nothing_left(tmp_path / "s", before)


@needs_lab
def test_wrong_serviceimport_ips_fail_the_clusterset_cells_and_not_the_derived_ones(tmp_path: Path) -> None:
    state = _up(tmp_path, "mcs-karmada")
    try:
        recorded = json.loads((state / "state.json").read_text())["mcs"]  # the emulated objects, in the state file
        assert [(e["name"], e["cluster"]) for e in recorded["serviceexports"]] == [
            ("echo", "mcs-1"), ("echo-headless", "mcs-1"), ("remote-echo", "mcs-1")]
        assert {i["name"] for i in recorded["serviceimports"]} == {"echo", "echo-headless", "remote-echo"}
        records = json.loads(_records(state).read_text())
        for entry in records["serviceimports"]:
            entry["ips"] = ["10.151.0.250"] if entry["ips"] else []
        _rewrite(_records(state), records)
        cells = _attached(state, tmp_path, "mcs-karmada")
        assert _failing(cells) == _importer_cells(cells, ":clusterset:echo:", ":clusterset-search:")
        assert {cells[i] for i in _failing(cells)} == {"regression"}
        assert {cells[i] for i in _importer_cells(cells, ":derived:")} == {"pass"}
    finally:
        down(state)


@needs_lab
def test_the_multicluster_line_removed_fails_exactly_the_clusterset_cells(tmp_path: Path) -> None:
    state = _up(tmp_path, "mcs-karmada")
    try:
        corefile = state / "clusters" / IMPORTER / "Corefile"
        text = corefile.read_text()
        assert "    multicluster clusterset.local\n" in text
        _rewrite(corefile, text.replace("    multicluster clusterset.local\n", ""))
        cells = _attached(state, tmp_path, "mcs-karmada")
        clusterset = _importer_cells(cells, ":clusterset:", ":clusterset-search:", ":srv:", ":pod.cluster.clusterset:",
                                     ":nxdomain:private:")
        assert _failing(cells) == clusterset, _failing(cells) ^ clusterset
        assert {cells[i] for i in _importer_cells(cells, ":derived:")} == {"pass"}
    finally:
        down(state)


@needs_lab
def test_emptied_derived_endpoints_fail_the_derived_connections(tmp_path: Path) -> None:
    state = _up(tmp_path, "mcs-karmada")
    try:
        empty = ("for c in $(iptables -t nat -S KUBE-SERVICES | grep 'crossnet/derived-echo:' | "
                 "sed 's/.* -j //'); do iptables -t nat -F $c; done; conntrack -F 2>/dev/null; true")
        for node in ("control-plane", "worker", "worker2"):
            crossnet("exec", "--state-dir", str(state), f"{IMPORTER}/{node}", "--", "sh", "-c", empty)
        cells = _attached(state, tmp_path, "mcs-karmada")
        derived_connections = {i for i in _importer_cells(cells, ":derived:") if i.endswith((":tcp", ":udp"))}
        assert _failing(cells) == derived_connections
        assert {cells[i] for i in derived_connections} == {"regression"}
    finally:
        down(state)


@needs_lab
def test_a_withdrawn_export_makes_the_name_nxdomain(tmp_path: Path) -> None:
    state = _up(tmp_path, "mcs-clusterset-only")
    try:
        records = json.loads(_records(state).read_text())
        records["serviceimports"] = [e for e in records["serviceimports"] if e["name"] != "echo"]
        _rewrite(_records(state), records)
        cells = _attached(state, tmp_path, "mcs-clusterset-only")
        withdrawn = _importer_cells(cells, ":clusterset:echo:", ":srv:echo:")
        assert _failing(cells) == withdrawn
        assert {cells[i] for i in withdrawn} == {"regression"}
        private = _importer_cells(cells, ":nxdomain:private:")
        assert private and {cells[i] for i in private} == {"pass"}  # still NXDOMAIN, as it should be
        messages = {c["id"]: c.get("message", "") for c in load_matrix(max(tmp_path.glob("r*")))["cells"]}
        assert any("nxdomain" in messages[i] for i in withdrawn if i.endswith("dns-udp"))
    finally:
        down(state)


def test_an_answer_without_the_ra_bit_is_a_regression_where_the_profile_configures_header() -> None:
    from crossnet.judge import judge
    from crossnet.live import live_cell
    from crossnet.model import Observation
    from crossnet.profile import load_profile as profile_named
    from crossnet.providers.lab.clusterset import live_cluster_set
    from crossnet.providers.lab.mcs import with_mcs
    from crossnet.providers.lab.topology import plan_lab

    plan = with_mcs(plan_lab(MCS.topology), MCS.topology, profile_named("mcs-karmada").plumbing.mcs or McsPlumbing())
    cluster_set = live_cluster_set(plan)
    cell = next(c for c in MCS.cells if c.id == "pod:mcs-2/worker->mcs-1:clusterset:echo:dns-name:dns-udp")
    live = live_cell(cell, cluster_set, 2.0)
    assert live.expected_answers == (str(plan.cluster("mcs-2").spec.service_network[200]),)
    answered = Observation(reached=True, answers=live.expected_answers, rcode="NOERROR", ra=True)
    assert judge(live, answered).verdict == "pass"
    without_ra = judge(live, Observation(reached=True, answers=live.expected_answers, rcode="NOERROR", ra=False))
    assert without_ra.verdict == "regression" and "header { response set ra }" in without_ra.message
    only = load_setup("mcs", None, "mcs-clusterset-only")
    relaxed = next(c for c in only.cells if c.id == cell.id)
    assert judge(live_cell(relaxed, cluster_set, 2.0), Observation(
        reached=True, answers=live.expected_answers, rcode="NOERROR", ra=False)).verdict == "pass"


def test_the_clusterset_block_is_added_only_where_no_multicluster_layer_owns_the_corefile(tmp_path: Path) -> None:
    from crossnet.lifecycle import apply_plumbing
    from crossnet.providers.fake import FakeProvider

    plumbing = load_profile("mcs-karmada").plumbing
    for owned in (False, True):
        provider = FakeProvider(tmp_path / f"s{owned}")
        provider.multicluster_owns_corefile = owned  # type: ignore[misc]  # kind with Lighthouse: True
        cluster_set = provider.up(MCS.topology)
        apply_plumbing(provider, cluster_set, "run-1", plumbing)  # type: ignore[arg-type]
        patched = provider.corefiles["mcs-2"]
        assert ("multicluster clusterset.local" in patched) is not owned
        assert "forward . " in patched.split("# crossnet begin")[1]  # the peer forward either way


def test_the_lab_records_its_serviceexports_valid_and_ready_beside_its_serviceimports_in_a_valid_state() -> None:
    from crossnet.providers.base import STATE_SCHEMA, state_problems
    from crossnet.providers.lab.mcs import serviceimports, state_record, with_mcs
    from crossnet.providers.lab.topology import plan_lab

    plan = with_mcs(plan_lab(MCS.topology), MCS.topology, McsPlumbing())
    record = state_record(MCS.topology, serviceimports(plan, MCS.topology))
    assert record["cluster"] == "mcs-1" and record["namespace"] == "crossnet"
    assert record["serviceexports"] == [
        {"name": name, "namespace": "crossnet", "cluster": "mcs-1",
         "conditions": [{"type": "Valid", "status": "True"}, {"type": "Ready", "status": "True"}]}
        for name in ("echo", "echo-headless", "remote-echo")]
    assert {i["name"] for i in record["serviceimports"]} == {"echo", "echo-headless", "remote-echo"}
    state = {"schema": STATE_SCHEMA, "provider": "lab", "run_id": "run-1", "mcs": json.loads(json.dumps(record))}
    assert state_problems(state) == []
    kind = {"cluster": "mcs-1", "namespace": "crossnet-run-1", "version": "v1beta1", "run_id": "run-1",
            "exports": ["echo", "echo-headless", "remote-echo"], "imported": {}, "coredns": {}}
    assert state_problems({**state, "provider": "kind", "mcs": kind}) == []  # what kind/mcs.py records
    for broken, problem in (
        ({"serviceexports": [{**record["serviceexports"][0], "name": "Echo;rm"}]}, "mcs.serviceexports"),
        ({"serviceexports": [{**record["serviceexports"][0], "conditions": [{"type": "Valid", "status": "yes"}]}]},
         "mcs.serviceexports"),
        ({"serviceimports": [{**record["serviceimports"][0], "ips": ["not-an-ip"]}]}, "mcs.serviceimports"),
        ({"cluster": "../etc"}, "mcs.cluster"),
        ({"exports": ["echo", 7]}, "mcs.exports"),
    ):
        found = state_problems({**state, "mcs": {**record, **broken}})
        assert len(found) == 1 and found[0].startswith(problem), found
    assert state_problems({**state, "mcs": ["echo"]}) == ["mcs is not an object"]
