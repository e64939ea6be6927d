"""Three or more routed clusters: every cell id is unique and every ExternalName cell aims at the
cluster its own ExternalName points to (the id names whose ExternalName it is)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from crossnet.config import load_topology
from crossnet.live import live_cell
from crossnet.profile import load_profile
from crossnet.providers.lab.clusterset import live_cluster_set
from crossnet.providers.lab.topology import plan_lab
from crossnet.suites import build_cells
from tests.conftest import KIND_CONFIGS


def four_clusters(tmp_path: Path) -> list[Path]:
    base = (KIND_CONFIGS / "cluster-2.yaml").read_text()
    paths = []
    for i in range(1, 5):
        text = base.replace("cluster-2", f"cluster-{i}").replace("10.20.0.0/16", f"10.{10 * i}.0.0/16")
        path = tmp_path / f"cluster-{i}.yaml"
        path.write_text(text.replace("10.50.0.0/16", f"10.{100 + i}.0.0/16"))
        paths.append(path)
    return paths


def test_four_routed_clusters_have_unique_ids_and_right_targets(tmp_path: Path) -> None:
    topology = load_topology(four_clusters(tmp_path))
    cells = build_cells(topology, load_profile("flat-routed"))
    repeated = [i for i, n in Counter(c.id for c in cells).items() if n > 1]
    assert repeated == [] and len(cells) > 3000
    cluster_set = live_cluster_set(plan_lab(topology))
    externals = [c for c in cells if c.target.form == "external-name" and c.suite == "service"]
    assert {c.target.service for c in externals} == {f"proxy-to-cluster-1@cluster-{i}" for i in (2, 3, 4)}
    for cell in externals:
        owner = cell.target.service.split("@")[1]
        live = live_cell(cell, cluster_set, 2.0)
        assert live.probe["qname"] == f"proxy-to-cluster-1.crossnet.svc.{owner}.com"  # the owner's ExternalName
        assert set(live.probe["expect_agents"]) == {p.agent for p in cluster_set.cluster("cluster-1").pods}


def test_scale_configs_writes_valid_distinct_kind_configs(tmp_path: Path) -> None:
    from tests.lab_helpers import crossnet

    done = crossnet("scale-configs", "--clusters", "4", "--nodes", "8", "--out", str(tmp_path / "scale"))
    paths = sorted((tmp_path / "scale").glob("*.yaml"))
    topology = load_topology(paths)  # valid: distinct subnets and domains, DNS-1123 names
    assert [len(c.nodes) for c in topology.clusters] == [8, 8, 8, 8]
    assert "--kind-config" in done.stdout
    again = crossnet("scale-configs", "--out", str(tmp_path / "scale"), check=False)
    assert again.returncode == 2 and "not empty" in again.stderr  # never overwrites
