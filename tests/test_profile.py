"""Profiles are data: rules decide cells, and every mistake is named with its rule number."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from crossnet.cells import cell_facts
from crossnet.config import load_topology
from crossnet.model import Topology
from crossnet.options import setup_from
from crossnet.profile import ProfileError, load_profile
from crossnet.suites import build_cells
from tests.conftest import ROOT

TOPOLOGY = load_topology([ROOT / "kind-configs" / "cluster-1.yaml", ROOT / "kind-configs" / "cluster-2.yaml"])


def test_flat_routed_decides_by_rule_with_because() -> None:
    profile = load_profile("flat-routed")
    cells = {c.id: c for c in build_cells(TOPOLOGY, profile)}
    peer = cells["pod:cluster-1/worker->cluster-2/worker2:pod-ip:tcp:source"].expectation
    assert (peer.reachable, peer.source, peer.rule) == ("yes", "node-ip", "flat-routed#4")
    assert "masquerade" in peer.because
    same = cells["pod:cluster-1/worker->cluster-1/worker2:pod-ip:udp:source"].expectation
    assert (same.source, same.rule) == ("preserved", "flat-routed#3")
    assert cells["host:cluster-1/worker->cluster-1/worker2:pod-ip:tcp"].expectation.rule == "flat-routed#defaults"
    isolated = cells["pod:cluster-1/worker->cluster-2/echo:cluster-ip:udp"].expectation
    assert (isolated.reachable, isolated.rule) == ("no", "flat-routed#1")
    # Only questions worth asking become SNAT cells: no `source: any` cell, no unreachable path.
    assert all(c.expectation.source != "any" for c in cells.values() if c.suite == "snat")
    assert not any(c.suite == "snat" and c.target.kind == "cluster-ip" for c in cells.values())
    assert profile.unused_rules(cell_facts(c) for c in cells.values()) == []


def test_profile_errors_name_file_rule_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nsurprise: 1\nrules:\n"
        "  - match: {suite: pod-to-pod, colour: red}\n    expect: {reachable: yes}\n    because: x\n"
        "  - match: {protocol: sctp}\n    expect: {reachable: maybe, source: pod-ip}\n"
    )
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    text = str(caught.value)
    assert str(path) in text
    assert "unknown key 'surprise'" in text
    assert "rule 1: unknown match key 'colour'" in text
    assert "rule 2: match protocol: sctp can never match" in text
    assert "rule 2: reachable is 'maybe'" in text and "rule 2: source is 'pod-ip'" in text
    assert "rule 2: says no 'because:'" in text


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ProfileError, match=r"known profiles: .*flat-routed"):
        load_profile("no-such-profile")


def test_rule_that_matches_nothing_is_found(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nrules:\n  - match: {src_cluster: cluster-9}\n    expect: {reachable: no}\n"
                    "    because: there is no cluster-9\n")
    profile = load_profile(str(path))
    unused = profile.unused_rules(cell_facts(c) for c in build_cells(TOPOLOGY, profile))
    assert [r.ident for r in unused] == ["p#1"]


# --------------------------------------------------------------------------- hostile input


def test_billion_laughs_profile_is_refused_fast_and_briefly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]" for n in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\n" + "\n".join(lines) + "\nrules: *a8\n")
    started = time.perf_counter()
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    assert time.perf_counter() - started < 1.0
    message = str(caught.value)
    assert len(message) < 2000
    assert str(path) in message and "billion laughs" in message and "remove the YAML aliases (&/*)" in message


def test_binary_and_oversized_profiles_are_profile_errors(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: \xff\xfe\x81\n")
    with pytest.raises(ProfileError, match=r"bin\.yaml: is not UTF-8 text"):
        load_profile(str(binary))
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: huge\n" + "#" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ProfileError, match=r"huge\.yaml: is larger than 1024 KiB"):
        load_profile(str(huge))


def test_odd_values_are_named_not_tracebacks(tmp_path: Path) -> None:
    long = "z" * 100_000
    path = tmp_path / "odd.yaml"
    path.write_text(
        f"name: odd\n1: one\n? surprise{long}\n: 1\nplumbing: {{rp_filter: true, global_cidr: {long}}}\n"
        "rules:\n"
        f"  - match: {{suite: [{long}]}}\n    expect: {{reachable: [yes], source: {{a: b}}}}\n    because: x\n"
        f"  - match: {{protocol: tcp}}\n    expect: {{reachable: {long}}}\n    because: x\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    text = str(caught.value)
    assert "unknown key 1;" in text and "unknown key 'surprisezzz" in text
    assert "rp_filter is True" in text and "global_cidr is 'zzz" in text
    assert "rule 1: reachable is [True]" in text and "rule 1: source is {'a': 'b'}" in text
    assert "rule 2: reachable is 'zzz" in text and "(100000 chars)" in text
    assert len(text) < 3000


def test_deep_profile_is_a_profile_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("rules: " + "[" * 10_000)
    with pytest.raises(ProfileError, match=r"deep\.yaml: is nested more than 100 levels deep"):
        load_profile(str(path))


def test_shipped_profiles_still_load() -> None:
    for path in sorted((ROOT / "profiles").glob("*.yaml")):
        assert load_profile(str(path)).rules, path


def one_node_each(topology: Topology) -> Topology:
    """What `--nodes 1` leaves of a topology: one node per cluster."""
    return Topology(tuple(dataclasses.replace(c, nodes=c.nodes[-1:]) for c in topology.clusters))


def test_a_rule_the_topologys_shape_leaves_unused_is_a_note_not_an_error() -> None:
    profile = load_profile("flat-routed")
    small = setup_from(one_node_each(TOPOLOGY), profile)  # no same-cluster other-node cell at all
    assert small.cells and len(small.notes) == 1, small.notes
    note = small.notes[0]
    assert note.startswith(f"note: {profile.source_file}: rule 5 decides no cell here") and "--nodes" in note
    assert "cluster-1 1" in note and "cluster-2 1" in note
    assert setup_from(TOPOLOGY, profile).notes == ()


def test_a_rule_with_an_unknown_value_or_an_impossible_combination_stays_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\nrules:\n"
        "  - match: {src_cluster: cluster-9}\n    expect: {reachable: no}\n    because: a typo of cluster-2\n"
        "  - match: {suite: snat, target: cluster-ip}\n    expect: {reachable: no}\n    because: never built\n"
        "  - match: {suite: snat, vantage: host, scope: same-cluster}\n    expect: {reachable: yes, source: node-ip}\n"
        "    because: x\n"
    )
    profile = load_profile(str(path))
    for topology in (TOPOLOGY, one_node_each(TOPOLOGY)):
        with pytest.raises(ProfileError) as caught:
            setup_from(topology, profile)
        text = str(caught.value)
        assert "rule 1 matches no cell of this topology" in text and "clusters here are cluster-1, cluster-2" in text
        assert "rule 2 matches no cell" in text and "rule 3" not in text  # 3 only needs two nodes
    path.write_text("name: p\nrules:\n  - match: {src_cluster: cluster-1, colour: red}\n    expect: {reachable: no}\n"
                    "    because: a typo'd key\n")
    with pytest.raises(ProfileError, match="unknown match key 'colour'"):
        load_profile(str(path))
