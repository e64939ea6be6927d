"""Vendor mode (`--provider existing`) behaviour that worked but had no test, each checked against
concrete values: `--skip-preflight` really skips pre-flight, the pytest header's "crossnet
discovered:" lines, matrix.json's `run.discovery` as a real run writes it, `crossnet down
--expired`, and Cilium ClusterMesh in discovery. Against tests/fake_kube.py's API servers (over
HTTP for the runs and `crossnet down`), granting exactly what `crossnet rbac` prints."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from crossnet import cli
from crossnet.profile import load_profile
from crossnet.providers.existing.provider import EXPIRES
from crossnet.providers.existing.session import discover
from crossnet.providers.existing.settings import settings_from_options
from crossnet.providers.kind.kube import MANAGED_BY, RUN_LABEL
from tests.fake_kube import FakeCluster, HttpBridge, Rbac, kubeconfig_text
from tests.test_bundle import unpack
from tests.test_existing_bundle import CONTEXTS, TOKEN, ExistingRun, run_existing, with_contexts
from tests.test_existing_provider import rbac_text

POD_TO_POD = ("suites/test_pod_to_pod.py",)
KUBE_SYSTEM = "/api/v1/namespaces/kube-system"


def rights_without(resource: str) -> Rbac:
    """What `crossnet rbac` prints, but `resource`."""
    docs = [d for d in yaml.safe_load_all(rbac_text()) if d]
    for doc in docs:
        for rule in doc.get("rules") or []:
            rule["resources"] = [r for r in rule["resources"] if r != resource]
    return Rbac(docs)


def mesh_clusters(rbac: Any = None) -> dict[str, FakeCluster]:
    """Two Cilium clusters in a ClusterMesh: the first shows it by its clustermesh-apiserver
    Service, the second (kube-proxy replaced by Cilium) by cilium-config's cluster-id."""
    rbac = rbac if rbac is not None else Rbac.from_yaml(rbac_text())
    one = FakeCluster("ctx-1", 1, rbac=rbac, cni="cilium")
    mesh = {"metadata": {"name": "clustermesh-apiserver", "labels": {"k8s-app": "clustermesh-apiserver"}}}
    one._put(f"{KUBE_SYSTEM}/services", {**mesh, "spec": {"type": "NodePort", "clusterIP": "10.101.0.20"}})
    two = FakeCluster("ctx-2", 2, rbac=rbac, cni="cilium", kube_proxy=None)
    config = {"cluster-name": "mesh-2", "cluster-id": "2", "kube-proxy-replacement": "true"}
    two._put(f"{KUBE_SYSTEM}/configmaps", {"metadata": {"name": "cilium-config"}, "data": config})
    return {"ctx-1": one, "ctx-2": two}


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory: pytest.TempPathFactory) -> ExistingRun:
    """`pytest suites/test_pod_to_pod.py --provider existing --context … --nodes 2` on a ClusterMesh."""
    tmp = tmp_path_factory.mktemp("mesh")
    run = run_existing(tmp, *with_contexts("--nodes", "2"), suites=POD_TO_POD, clusters=mesh_clusters())
    assert run.done.returncode == 0, run.output[-3000:]
    return run


# --------------------------------------------------------------------------- --skip-preflight


def test_skip_preflight_runs_past_what_preflight_would_stop(tmp_path: Path) -> None:
    """Without Calico's IPPools readable, pre-flight blocks the run before anything is created;
    with --skip-preflight neither pre-flight's access reviews nor its dry-run namespace are asked
    for, and the matrix runs."""
    stopped = run_existing(tmp_path / "a", *with_contexts(), suites=POD_TO_POD, rbac=rights_without("ippools"))
    assert stopped.done.returncode not in (0, 1), stopped.output[-2000:]
    assert "pre-flight found 2 blocking problem(s); nothing was created" in stopped.output
    assert "cluster-1  may list ippools  FAIL    denied: list" in stopped.output
    assert all(c.writes() == [] for c in stopped.clusters.values())
    ran = run_existing(
        tmp_path / "b", *with_contexts("--skip-preflight"), suites=POD_TO_POD, rbac=rights_without("ippools")
    )
    assert ran.done.returncode == 0, ran.output[-3000:]
    assert "crossnet matrix: 180 cells: 180 pass" in ran.output
    assert "pre-flight" not in ran.output
    for cluster in ran.clusters.values():
        asked = {r.resource for r in cluster.requests}
        assert "selfsubjectaccessreviews" not in asked  # pre-flight asks one per right; the run itself none
        assert not [r for r in cluster.requests if r.dry_run and r.resource == "namespaces"]
        preflighted = stopped.clusters[cluster.context].requests
        assert "selfsubjectaccessreviews" in {r.resource for r in preflighted}
        assert "namespaces" in {r.resource for r in preflighted if r.dry_run}
    assert ran.matrix()["run"]["discovery"]["preflight"] == []
    preflight = json.loads(unpack(ran.bundle())["preflight.json"])
    assert preflight == {"ran": False, "blocking": 0, "warnings": 0, "rows": []}


# --------------------------------------------------------------------------- the header and matrix.json


def test_the_pytest_header_prints_what_was_discovered(mesh_run: ExistingRun) -> None:
    lines = mesh_run.done.stdout.splitlines()
    found = [line for line in lines if line.startswith("crossnet discovered:")]
    assert found == [
        "crossnet discovered: cluster-1 (ctx-1, v1.33.1): 3 nodes, pods 10.10.0.0/16 [kubeadm-config podSubnet], "
        "services 10.101.0.0/16 [ServiceCIDR objects (networking.k8s.io/v1)], domain cluster-1.local "
        "[kubeadm-config dnsDomain], CNI cilium, kube-proxy iptables, multi-cluster cilium-clustermesh",
        "crossnet discovered: cluster-2 (ctx-2, v1.33.1): 3 nodes, pods 10.20.0.0/16 [kubeadm-config podSubnet], "
        "services 10.102.0.0/16 [ServiceCIDR objects (networking.k8s.io/v1)], domain cluster-2.local "
        "[kubeadm-config dnsDomain], CNI cilium, kube-proxy none, multi-cluster cilium-clustermesh",
        "crossnet discovered: cluster-1: --nodes 2: 2 of 3 usable nodes (gateway first, then by name)",
        "crossnet discovered: cluster-2: --nodes 2: 2 of 3 usable nodes (gateway first, then by name)",
    ]
    collected = next(i for i, line in enumerate(lines) if line.startswith("collected "))
    assert lines.index(found[-1]) < collected  # in the header, before any test runs
    assert TOKEN not in mesh_run.output


def test_matrix_json_records_the_discovery_of_a_real_run(mesh_run: ExistingRun) -> None:
    recorded = mesh_run.matrix()["run"]["discovery"]
    assert set(recorded) == {"clusters", "sampled", "notes", "host_vantages_off", "node_evidence_off", "preflight"}
    assert recorded["sampled"] == {"cluster-1": ["ctx-1-node-0", "ctx-1-node-1"],
                                   "cluster-2": ["ctx-2-node-0", "ctx-2-node-1"]}  # fmt: skip
    note = "--nodes 2: 2 of 3 usable nodes (gateway first, then by name)"
    assert recorded["notes"] == {"cluster-1": [note], "cluster-2": [note]}
    opt_in = "host vantages are opt-in on clusters crossnet did not make: pass --host-vantage"
    assert recorded["host_vantages_off"] == {"cluster-1": opt_in, "cluster-2": opt_in}
    assert recorded["node_evidence_off"] == {
        c: "node evidence needs --node-evidence" for c in ("cluster-1", "cluster-2")
    }
    facts = {c["name"]: c for c in recorded["clusters"]}
    assert [(f["context"], f["domain"], f["pod_cidrs"], f["service_cidrs"], f["dns_service_ip"])
            for f in facts.values()] == [
        ("ctx-1", "cluster-1.local", ["10.10.0.0/16"], ["10.101.0.0/16"], "10.101.0.10"),
        ("ctx-2", "cluster-2.local", ["10.20.0.0/16"], ["10.102.0.0/16"], "10.102.0.10"),
    ]  # fmt: skip
    assert facts["cluster-2"]["kube_proxy_source"] == "no kube-proxy DaemonSet; cilium-config kube-proxy-replacement"
    assert facts["cluster-1"]["uid"] == mesh_run.clusters["ctx-1"].uid
    rows = recorded["preflight"]
    assert rows and {r["status"] for r in rows} <= {"ok", "skip"}
    assert {r["cluster"] for r in rows} == {"cluster-1", "cluster-2", "cluster-1,cluster-2"}
    assert mesh_run.matrix()["run"]["provider"] == "existing"


# --------------------------------------------------------------------------- Cilium ClusterMesh


def test_cilium_clustermesh_is_discovered_by_its_service_or_its_cluster_id() -> None:
    def facts(clusters: dict[str, FakeCluster]) -> dict[str, Any]:
        settings = settings_from_options({"context": list(CONTEXTS), "kubeconfig": "/dev/null"},
                                         load_profile("flat-routed"))  # fmt: skip
        found = discover(settings, lambda _kubeconfig, context: clusters[context], lambda _line: None)
        return {f.name: f for f in found.facts}

    mesh = facts(mesh_clusters())
    assert [(f.cni, f.multicluster, f.multicluster_source) for f in mesh.values()] == [
        ("cilium", ("cilium-clustermesh",), "Service kube-system/clustermesh-apiserver"),
        ("cilium", ("cilium-clustermesh",), "cilium-config cluster-id 2"),
    ]
    assert mesh["cluster-2"].kube_proxy == "none"
    # Cilium alone (cluster-id 0, no clustermesh-apiserver) is no mesh; nor is kindnet
    alone = {f"ctx-{i}": FakeCluster(f"ctx-{i}", i, cni="cilium" if i == 1 else "kindnet") for i in (1, 2)}
    alone["ctx-1"]._put(
        f"{KUBE_SYSTEM}/configmaps", {"metadata": {"name": "cilium-config"}, "data": {"cluster-id": "0"}}
    )
    plain = facts(alone)
    assert [(f.cni, f.multicluster, f.multicluster_source) for f in plain.values()] == [
        ("cilium", (), "no Submariner, MCS or ClusterMesh objects"),
        ("kindnet", (), "no Submariner, MCS or ClusterMesh objects"),
    ]


def test_the_clustermesh_run_is_judged_and_bundled(mesh_run: ExistingRun) -> None:
    discovered = json.loads(unpack(mesh_run.bundle())["discovered.json"])
    assert [c["multicluster"] for c in discovered["clusters"]] == [["cilium-clustermesh"], ["cilium-clustermesh"]]
    assert "crossnet matrix: 80 cells: 80 pass" in mesh_run.output


# --------------------------------------------------------------------------- crossnet down --expired


def namespace(cluster: FakeCluster, name: str, labels: dict[str, str], expires: str | None) -> None:
    annotations = {EXPIRES: expires} if expires else {}
    cluster._put("/api/v1/namespaces", {"metadata": {"name": name, "labels": labels, "annotations": annotations}})


def test_down_expired_removes_only_crossnets_leftovers_past_their_expiry(tmp_path: Path) -> None:
    rbac = Rbac.from_yaml(rbac_text())
    clusters = {f"ctx-{i}": FakeCluster(f"ctx-{i}", i, rbac=rbac) for i in (1, 2)}
    one = clusters["ctx-1"]
    ours = {**MANAGED_BY, RUN_LABEL: "old"}
    namespace(one, "crossnet-old", ours, "2020-01-01T00:00:00Z")
    namespace(one, "crossnet-fresh", {**MANAGED_BY, RUN_LABEL: "fresh"}, "2999-01-01T00:00:00Z")
    namespace(one, "crossnet-no-expiry", {**MANAGED_BY, RUN_LABEL: "kept"}, None)
    namespace(one, "half", dict(MANAGED_BY), "2020-01-01T00:00:00Z")  # no run label: not a run's
    namespace(one, "team-net", {"team": "net"}, "2020-01-01T00:00:00Z")  # not crossnet's at all
    bridges = {c: HttpBridge(cluster, TOKEN) for c, cluster in clusters.items()}
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text({c: (b.url, TOKEN) for c, b in bridges.items()}))
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(["down", *with_contexts("--kubeconfig", str(kubeconfig), "--expired")])
    finally:
        for bridge in bridges.values():
            bridge.close()
    assert status == 0, out.getvalue() + err.getvalue()
    assert out.getvalue().splitlines() == [
        "crossnet: cluster-1: deleted crossnet-old",
        "crossnet: cluster-2: deleted nothing (no leftover)",
    ]
    assert set(one.objects("/api/v1/namespaces")) == {
        "default", "kube-system", "crossnet-fresh", "crossnet-no-expiry", "half", "team-net"}  # fmt: skip
    assert [(w.method, w.resource, w.name) for w in one.writes()] == [("DELETE", "namespaces", "crossnet-old")]
    assert clusters["ctx-2"].writes() == []
    assert TOKEN not in out.getvalue() + err.getvalue()


def test_one_sampled_node_prints_the_unused_rule_as_a_note_and_runs(tmp_path: Path) -> None:
    """`--nodes 1` leaves the default profile's same-cluster rule without a cell: the header says
    so (a note), and the run goes on instead of stopping at a usage error."""
    run = run_existing(tmp_path, *with_contexts("--nodes", "1"), suites=POD_TO_POD, clusters=mesh_clusters())
    assert run.done.returncode == 0, run.output[-3000:]
    notes = [line for line in run.output.splitlines() if line.startswith("crossnet note:")]
    assert notes and all("--nodes" in line for line in notes), run.output[:3000]
