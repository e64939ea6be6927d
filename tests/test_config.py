"""Config validation: every problem at once, each naming file, field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossnet.config import ConfigError, load_topology

ROOT = Path(__file__).resolve().parent.parent
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
    assert [n.name for n in two.nodes] == ["cluster-2-control-plane", "cluster-2-worker", "cluster-2-worker2"]


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
