"""Config validation: every problem at once, each naming file, field and fix."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from crossnet import yamlsafe
from crossnet.config import ConfigError, ConfigProblem, dns1123_label_problem, dns_domain_problem, load_topology
from tests.conftest import ROOT

SEEDS = [ROOT / "kind-configs" / "cluster-1.yaml", ROOT / "kind-configs" / "cluster-2.yaml"]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def kind_config(name: str, pods: str, services: str, domain: str, workers: int = 2) -> str:
    nodes = "\n".join(["  - role: control-plane"] + ["  - role: worker"] * workers)
    return (f"kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: {name}\nnetworking:\n"
            f"  podSubnet: {pods}\n  serviceSubnet: {services}\nkubeadmConfigPatches:\n  - |\n"
            f"    kind: ClusterConfiguration\n    networking:\n      dnsDomain: {domain}\nnodes:\n{nodes}\n")


def test_seed_configs_give_the_field_guide_topology() -> None:
    topology = load_topology(SEEDS)
    one, two = topology.clusters
    assert (one.name, one.pod_subnet, one.service_subnet, one.dns_domain) == (
        "cluster-1", "10.10.0.0/16", "10.40.0.0/16", "cluster-1.com")
    assert (two.name, two.pod_subnet, two.service_subnet, two.dns_domain) == (
        "cluster-2", "10.20.0.0/16", "10.50.0.0/16", "cluster-2.com")
    assert [n.short for n in one.nodes] == ["control-plane", "worker", "worker2"]
    assert [(n.cluster, n.role) for n in two.nodes] == [("cluster-2", "control-plane"), ("cluster-2", "worker"),
                                                       ("cluster-2", "worker")]


def test_every_problem_is_reported_together(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", kind_config("same", "10.10.0.0/16", "10.10.128.0/17", "dup.com"))
    b = write(tmp_path, "b.yaml", kind_config("same", "10.10.0.0/16", "10.50.0.0/16", "dup.com"))
    with pytest.raises(ConfigError) as caught:
        load_topology([a, b])
    text = str(caught.value)
    problems = caught.value.problems
    assert any(p.field == "networking.serviceSubnet" and "own podSubnet" in p.problem for p in problems), text
    # b's subnets are checked against a's even though a itself is invalid? a is dropped, so no
    # cross checks against it; the self-overlap is still named with its file.
    assert str(a) in text and "fix:" in text


def test_cross_cluster_overlap_duplicate_name_and_domain(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", kind_config("one", "10.10.0.0/16", "10.40.0.0/16", "dup.com"))
    b = write(tmp_path, "b.yaml", kind_config("one", "10.10.0.0/16", "10.40.0.0/16", "dup.com"))
    with pytest.raises(ConfigError) as caught:
        load_topology([a, b])
    fields = [(p.file, p.field) for p in caught.value.problems]
    assert (str(b), "name") in fields
    assert (str(b), "kubeadmConfigPatches[].networking.dnsDomain") in fields
    assert (str(b), "networking.podSubnet") in fields and (str(b), "networking.serviceSubnet") in fields
    assert "--profile globalnet" in str(caught.value)
    # Globalnet accepts identical CIDRs (and the shared cluster.local-style domain).
    b2 = write(tmp_path, "b2.yaml", kind_config("two", "10.10.0.0/16", "10.40.0.0/16", "dup.com"))
    assert len(load_topology([a, b2], allow_overlap=True).clusters) == 2


def test_malformed_yaml_unknown_kind_and_small_subnet(tmp_path: Path) -> None:
    bad_yaml = write(tmp_path, "bad.yaml", "kind: Cluster\n  name: [broken\n")
    wrong = write(tmp_path, "wrong.yaml", kind_config("w", "10.30.0.0/16", "10.60.0.0/16", "w.com").replace(
        "kind: Cluster", "kind: Pod").replace("v1alpha4", "v1alpha3"))
    tiny = write(tmp_path, "tiny.yaml", kind_config("t", "10.70.0.0/23", "10.80.0.0/16", "t.com"))
    with pytest.raises(ConfigError) as caught:
        load_topology([bad_yaml, wrong, tiny])
    by_file = {(p.file, p.field): p for p in caught.value.problems}
    assert "malformed YAML" in by_file[(str(bad_yaml), "line 2")].problem
    assert (str(wrong), "kind") in by_file and (str(wrong), "apiVersion") in by_file
    small = by_file[(str(tiny), "networking.podSubnet")]
    assert "3 nodes" in small.problem and "larger podSubnet" in small.fix
    assert len(caught.value.problems) == 4


def test_patch_with_api_version_is_flagged(tmp_path: Path) -> None:
    text = kind_config("x", "10.30.0.0/16", "10.60.0.0/16", "x.com").replace(
        "    kind: ClusterConfiguration\n", "    kind: ClusterConfiguration\n    apiVersion: kubeadm.k8s.io/v1beta3\n")
    with pytest.raises(ConfigError) as caught:
        load_topology([write(tmp_path, "x.yaml", text), SEEDS[1]])
    assert caught.value.problems[0].field == "kubeadmConfigPatches[0].apiVersion"
    assert "remove apiVersion" in caught.value.problems[0].fix


# --------------------------------------------------------------------------- hostile input
# crossnet runs as root; a kind config reaches `ip -batch` and shell scripts, so a value must be
# what kind itself accepts, and no file may make crossnet use gigabytes or print megabytes.


def problems_of(*paths: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_topology(list(paths))
    return list(caught.value.problems)


@pytest.mark.parametrize("name", ["UPPER_case", "a\nb", "x;reboot", "$(id)", "has space", "-lead", "trail-",
                                  "dot.ted", "é", "a" * 51])
def test_cluster_name_must_be_a_dns1123_label(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "n.yaml", kind_config(json.dumps(name), "10.30.0.0/16", "10.60.0.0/16", "n.com"))
    [problem] = [p for p in problems_of(path, SEEDS[1]) if p.field == "name"]
    assert problem.file == str(path)
    assert repr(name)[:40] in problem.problem
    assert "lowercase letters, digits and '-'" in problem.fix and "50" in problem.fix


def test_cluster_name_limits_and_valid_names(tmp_path: Path) -> None:
    longest = "c" + "1" * 49  # kind's own limit is 50 characters
    a = write(tmp_path, "a.yaml", kind_config(longest, "10.30.0.0/16", "10.60.0.0/16", "a.com"))
    b = write(tmp_path, "b.yaml", kind_config("0-b", "10.31.0.0/16", "10.61.0.0/16", "b.com"))
    assert [c.name for c in load_topology([a, b]).clusters] == [longest, "0-b"]
    assert dns1123_label_problem("cluster-1") is None
    assert dns1123_label_problem("a" * 63) is None
    assert "64 characters" in (dns1123_label_problem("a" * 64) or "")
    assert "not a DNS-1123 label" in (dns1123_label_problem("Cluster") or "")
    assert dns1123_label_problem("") == "is empty"
    assert "int" in (dns1123_label_problem(7) or "")
    # A huge name is quoted cut, not whole.
    problem = dns1123_label_problem("x" * 100_000, 50) or ""
    assert len(problem) < 200 and "100000" in problem


@pytest.mark.parametrize("domain", ["has space.com", "x" * 300, "a..b", "-a.com", "a-.com", f"{'a' * 64}.com",
                                    "Cluster.Local", "cluster.local.", "semi;colon", "a_b.com"])
def test_dns_domain_must_be_a_dns_name(tmp_path: Path, domain: str) -> None:
    path = write(tmp_path, "d.yaml", kind_config("d", "10.30.0.0/16", "10.60.0.0/16", json.dumps(domain)))
    [problem] = problems_of(path, SEEDS[1])
    assert (problem.file, problem.field) == (str(path), "kubeadmConfigPatches[0].networking.dnsDomain")
    assert repr(domain)[:40] in problem.problem and len(problem.problem) < 200
    assert "DNS name" in problem.fix


def test_valid_dns_domains(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", kind_config("a", "10.30.0.0/16", "10.60.0.0/16", "local"))
    b = write(tmp_path, "b.yaml", kind_config("b", "10.31.0.0/16", "10.61.0.0/16", f"{'b' * 63}.x-1.example"))
    assert [c.dns_domain for c in load_topology([a, b]).clusters] == ["local", f"{'b' * 63}.x-1.example"]
    assert dns_domain_problem("cluster.local") is None
    assert "253" in (dns_domain_problem(".".join(["a" * 63] * 4)) or "")


def billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_fast_and_briefly(tmp_path: Path) -> None:
    path = write(tmp_path, "bomb.yaml", "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n"
                 + billion_laughs() + "name: *a8\nnodes: *a8\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load_topology([path, SEEDS[1]])
    assert time.perf_counter() - started < 1.0
    message = str(caught.value)
    assert len(message) < 2000
    [problem] = caught.value.problems
    assert problem.file == str(path) and "billion laughs" in problem.problem
    assert "remove the YAML aliases (&/*)" in problem.fix


def test_alias_bomb_in_a_kubeadm_patch_and_self_alias(tmp_path: Path) -> None:
    patch = "kind: ClusterConfiguration\n" + billion_laughs()
    text = kind_config("p", "10.30.0.0/16", "10.60.0.0/16", "p.com").replace(
        "kubeadmConfigPatches:\n", f"kubeadmConfigPatches:\n  - {json.dumps(patch)}\n")
    patched = write(tmp_path, "patched.yaml", text)
    looped = write(tmp_path, "looped.yaml", "kind: Cluster\nloop: &l [*l]\n")
    started = time.perf_counter()
    problems = problems_of(patched, looped)
    assert time.perf_counter() - started < 1.0
    fields = {(p.file, p.field): p for p in problems}
    assert "billion laughs" in fields[(str(patched), "kubeadmConfigPatches[0]")].problem
    assert "refer to themselves" in fields[(str(looped), "(document)")].problem


def test_harmless_aliases_still_load(tmp_path: Path) -> None:
    text = kind_config("h", "10.30.0.0/16", "10.60.0.0/16", "h.com").replace(
        "nodes:\n  - role: control-plane\n  - role: worker\n  - role: worker\n",
        "nodes:\n  - &cp {role: control-plane}\n  - &w {role: worker}\n  - *w\n")
    cluster = load_topology([write(tmp_path, "h.yaml", text), SEEDS[1]]).clusters[0]
    assert [n.short for n in cluster.nodes] == ["control-plane", "worker", "worker2"]


def test_huge_deep_and_odd_documents_are_problems_not_tracebacks(tmp_path: Path) -> None:
    huge = write(tmp_path, "huge.yaml", "kind: Cluster\n" + "#" * (2 * 1024 * 1024) + "\n")
    deep = write(tmp_path, "deep.yaml", "[" * 10_000)
    digits = write(tmp_path, "digits.yaml", "kind: Cluster\nname: " + "1" * 5000 + "\n")
    date = write(tmp_path, "date.yaml", "kind: Cluster\nname: 2024-13-45\n")
    problems = {p.file: p for p in problems_of(huge, deep, digits, date)}
    assert "larger than 1024 KiB" in problems[str(huge)].problem
    assert "nested more than 100 levels" in problems[str(deep)].problem
    assert "cannot build" in problems[str(digits)].problem and "quote the value" in problems[str(digits)].fix
    assert "cannot build" in problems[str(date)].problem


def test_long_values_are_cut_in_problems(tmp_path: Path) -> None:
    long = "v" * 100_000
    text = kind_config("c", long, long, "c.com").replace("kind: Cluster", f"kind: {long}").replace(
        "  - role: worker\n", f"  - role: {long}\n", 1)
    problems = problems_of(write(tmp_path, "c.yaml", text), SEEDS[1])
    assert {p.field for p in problems} >= {"kind", "networking.podSubnet", "networking.serviceSubnet",
                                           "nodes[1].role"}
    assert all(len(str(p)) < 400 for p in problems), [len(str(p)) for p in problems]
    assert all("(100000 chars)" in p.problem for p in problems)


def test_binary_config_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"kind: Cluster\nname: \xff\xfe\x00\x81\n")
    [problem] = problems_of(path, SEEDS[1])
    assert problem.file == str(path) and "is not UTF-8 text" in problem.problem
    assert "UTF-8" in problem.fix


def test_empty_nodes_is_refused_and_missing_nodes_is_one_control_plane(tmp_path: Path) -> None:
    base = kind_config("e", "10.30.0.0/16", "10.60.0.0/16", "e.com")
    nodes_block = base[base.index("nodes:"):]
    empty = write(tmp_path, "empty.yaml", base.replace(nodes_block, "nodes: []\n"))
    null = write(tmp_path, "null.yaml", base.replace(nodes_block, "nodes:\n"))
    problems = problems_of(empty, null)
    for path in (empty, null):
        [problem] = [p for p in problems if p.file == str(path)]
        assert (problem.field, problem.problem) == ("nodes", "is empty")
        assert "remove the key for kind's default single control-plane node" in problem.fix
    missing = write(tmp_path, "missing.yaml", base.replace(nodes_block, ""))
    cluster = load_topology([missing, SEEDS[1]]).clusters[0]
    assert [(n.short, n.role) for n in cluster.nodes] == [("control-plane", "control-plane")]


def test_yamlsafe_load_and_cut() -> None:
    assert yamlsafe.load("a: [1, 2]\nb: &x {c: d}\ne: *x\n", "t") == {"a": [1, 2], "b": {"c": "d"}, "e": {"c": "d"}}
    assert yamlsafe.load("", "t") is None
    with pytest.raises(yaml.YAMLError):
        yamlsafe.load("a: [", "t")
    with pytest.raises(yamlsafe.UnsafeYAMLError, match="more than 10000 YAML nodes"):
        yamlsafe.load("[" + "1, " * 10_001 + "]", "t")
    # Many aliases of one large string: few nodes, but megabytes once expanded.
    with pytest.raises(yamlsafe.UnsafeYAMLError, match="billion laughs"):
        yamlsafe.load("a: &s " + "x" * 200_000 + "\nb: [" + "*s, " * 10 + "]\n", "t")
    assert yamlsafe.cut("short") == "'short'"
    assert yamlsafe.cut("x" * 1000).endswith("' (1000 chars)") and len(yamlsafe.cut("x" * 1000)) < 100
    assert len(yamlsafe.cut([["y" * 1000] * 1000] * 1000)) <= 80
