"""The results bundle of a vendor-mode run (`pytest suites/ --provider existing`, issue 13 item 8):
real runs against two fake API servers over HTTP (tests/fake_kube.py, granting exactly what
`crossnet rbac` prints) write a bundle with the discovered topology, the discovery facts, the
pre-flight rows and the cluster-set file (once, when one was used) instead of kind configs, and
`crossnet bundle verify` re-judges every cell from the bundled topology with the bundled profile:
it accepts the bundle as written, with `--context` and with `--clusterset`, and rejects one with a
verdict edited, a file changed, or a forged topology."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crossnet import cli
from tests.conftest import ROOT
from tests.fake_kube import FakeCluster, HttpBridge, Rbac, kubeconfig_text
from tests.test_bundle import edit_json, pack, unpack, verify
from tests.test_existing_provider import rbac_text

TOKEN = "existing-bundle-TOKEN-never-print-me"
CONTEXTS = ("cluster-1=ctx-1", "cluster-2=ctx-2")
LISTED = {
    "bundle.json",
    "cluster-set.json",
    "discovered.json",
    "discovery.json",
    "junit.xml",
    "manifest.sha256",
    "matrix.html",
    "matrix.json",
    "observations.json",
    "preflight.json",
    "profile/flat-routed.yaml",
    "summary.md",
    "topology.json",
}
CLUSTER_SET = """name: pair
clusters:
  - {name: cluster-1, context: ctx-1}
  - {name: cluster-2, context: ctx-2}
"""


@dataclass
class ExistingRun:
    """One `pytest suites/ --provider existing` run against two fake clusters, and what it left."""

    done: subprocess.CompletedProcess[str]
    reports: Path
    clusters: dict[str, FakeCluster]

    @property
    def output(self) -> str:
        return self.done.stdout + self.done.stderr

    def bundle(self) -> Path:
        found = sorted(self.reports.glob("crossnet-results-*.tar.gz"))
        assert len(found) == 1, f"one bundle in {self.reports}: {found}\n{self.output[-3000:]}"
        return found[0]

    def matrix(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.reports / "matrix.json").read_text())
        return data


def run_existing(
    tmp: Path,
    *args: str,
    suites: Sequence[str] = ("suites/",),
    rbac: Any = None,
    clusters: dict[str, FakeCluster] | None = None,
    **cluster_kw: Any,
) -> ExistingRun:
    """`pytest SUITES --provider existing --plumbing none ARGS` in a subprocess, against fake API
    servers behind contexts ctx-1 and ctx-2 (with the rights `crossnet rbac` prints unless `rbac`)."""
    rbac = rbac if rbac is not None else Rbac.from_yaml(rbac_text())
    clusters = clusters or {f"ctx-{i}": FakeCluster(f"ctx-{i}", i, rbac=rbac, **cluster_kw) for i in (1, 2)}
    bridges = {context: HttpBridge(cluster, TOKEN) for context, cluster in clusters.items()}
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        kubeconfig = tmp / "kubeconfig"
        kubeconfig.write_text(kubeconfig_text({c: (b.url, TOKEN) for c, b in bridges.items()}))
        argv = [sys.executable, "-m", "pytest", *suites, "-p", "no:cacheprovider", "--provider", "existing"]
        argv += ["--kubeconfig", str(kubeconfig), "--plumbing", "none", "--reports", str(tmp / "reports")]
        argv += ["--state-dir", str(tmp / "state"), "--probe-timeout", "1"]
        argv += [*([] if "-n" in args else ["-n", "0"]), *args]
        done = subprocess.run(
            argv,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
    finally:
        for bridge in bridges.values():
            bridge.close()
    return ExistingRun(done, tmp / "reports", clusters)


def with_contexts(*more: str) -> list[str]:
    return [word for context in CONTEXTS for word in ("--context", context)] + list(more)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def context_run(tmp_path_factory: pytest.TempPathFactory) -> ExistingRun:
    tmp = tmp_path_factory.mktemp("contexts")
    run = run_existing(tmp, *with_contexts("--organization", "ACME Networks", "--product", "MeshNet"))
    assert run.done.returncode == 1, run.output[-3000:]  # the fake's agents reach everything: cells fail
    return run


@pytest.fixture(scope="module")
def clusterset_run(tmp_path_factory: pytest.TempPathFactory) -> ExistingRun:
    """On two xdist workers: they read the recorded topology and send their observations back."""
    tmp = tmp_path_factory.mktemp("clusterset")
    (tmp / "pair.yaml").write_text(CLUSTER_SET)
    run = run_existing(tmp, "--clusterset", str(tmp / "pair.yaml"), "-n", "2")
    assert run.done.returncode == 1, run.output[-3000:]
    return run


def check_common(run: ExistingRun, files: dict[str, bytes]) -> dict[str, Any]:
    """What every existing-clusters bundle holds; bundle.json."""
    assert "crossnet bundle: not written" not in run.output
    assert not [n for n in files if n.startswith("kind-configs/")]
    meta: dict[str, Any] = json.loads(files["bundle.json"])
    assert meta["provider"] == "existing" and meta["kind_configs"] == []
    assert meta["topology"] == {"file": "topology.json", "sha256": sha(files["topology.json"])}
    matrix = json.loads(files["matrix.json"])
    topology = json.loads(files["topology.json"])
    assert [c["name"] for c in topology["clusters"]] == matrix["run"]["clusters"] == ["cluster-1", "cluster-2"]
    assert [c["dns_domain"] for c in topology["clusters"]] == ["cluster-1.local", "cluster-2.local"]
    assert [c["pod_subnet"] for c in topology["clusters"]] == ["10.10.0.0/16", "10.20.0.0/16"]
    assert [n["short"] for n in topology["clusters"][0]["nodes"]][:2] == ["ctx-1-node-0", "ctx-1-node-1"]
    discovered = json.loads(files["discovered.json"])
    assert [(c["name"], c["context"], c["cni"]) for c in discovered["clusters"]] == [
        ("cluster-1", "ctx-1", "kindnet"),
        ("cluster-2", "ctx-2", "kindnet"),
    ]
    assert "preflight" not in discovered and len(discovered["sampled"]["cluster-2"]) == 3
    preflight = json.loads(files["preflight.json"])
    assert preflight["ran"] is True and preflight["blocking"] == 0
    assert preflight["rows"] == matrix["run"]["discovery"]["preflight"]
    assert {(r["cluster"], r["check"], r["status"]) for r in preflight["rows"]} >= {
        ("cluster-1", "API server", "ok"),
        ("cluster-2", "API server", "ok"),
        ("cluster-2", "dry-run namespace", "ok"),
        ("cluster-1,cluster-2", "CIDR overlap", "ok"),
    }
    assert [r["status"] for r in preflight["rows"] if r["check"].startswith("may create pods/proxy in crossnet-")] == [
        "ok",
        "ok",
    ]
    for name, data in files.items():
        assert TOKEN.encode() not in data, name
    return meta


def test_a_run_with_contexts_bundles_the_discovered_topology_facts_and_preflight_and_verifies(
    context_run: ExistingRun, capsys: pytest.CaptureFixture[str]
) -> None:
    files = unpack(context_run.bundle())
    assert set(files) == LISTED
    meta = check_common(context_run, files)
    assert meta["vendor"]["organization"] == "ACME Networks" and meta["vendor"]["product"] == "MeshNet"
    topology = json.loads(files["topology.json"])
    assert [c["source_file"] for c in topology["clusters"]] == ["context:ctx-1", "context:ctx-2"]
    cells = len(json.loads(files["matrix.json"])["cells"])
    assert cells > 100
    status, out, _ = verify(context_run.bundle(), capsys)
    assert status == 0, out
    assert ": verified" in out and f"{cells} cells re-judged from their raw observations" in out
    assert "junit.xml holds the same verdicts" in out
    assert "discovered topology cluster-1 (3 nodes), cluster-2 (3 nodes)" in out


def test_a_run_with_a_cluster_set_file_bundles_it_once_and_verifies(
    clusterset_run: ExistingRun, capsys: pytest.CaptureFixture[str]
) -> None:
    files = unpack(clusterset_run.bundle())
    assert set(files) == LISTED | {"clusterset.yaml"}
    assert files["clusterset.yaml"] == CLUSTER_SET.encode()
    assert sum(data == CLUSTER_SET.encode() for data in files.values()) == 1  # once, not per cluster
    check_common(clusterset_run, files)
    topology = json.loads(files["topology.json"])
    assert [c["source_file"] for c in topology["clusters"]] == ["clusterset.yaml", "clusterset.yaml"]
    observed = json.loads(files["observations.json"])["cells"]
    assert set(observed) == {c["id"] for c in json.loads(files["matrix.json"])["cells"]}  # from both workers
    status, out, _ = verify(clusterset_run.bundle(), capsys)
    assert status == 0 and ": verified" in out, out


@pytest.mark.skipif("bundle" not in cli.COMMANDS, reason="crossnet/cli.py does not wire `crossnet bundle`")
def test_the_crossnet_command_verifies_an_existing_bundle(context_run: ExistingRun) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "crossnet.cli", "bundle", "verify", str(context_run.bundle())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and ": verified" in done.stdout, done.stdout + done.stderr


def test_a_hand_edited_verdict_is_caught_even_with_a_regenerated_manifest(
    context_run: ExistingRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = unpack(context_run.bundle())
    status, out, _ = verify(pack(tmp_path / "repacked.tar.gz", files), capsys)
    assert status == 0, out  # repacking alone changes nothing
    victim = next(c for c in json.loads(files["matrix.json"])["cells"] if c["verdict"] == "leak")

    def to_pass(doc: Any) -> None:
        for cell in doc["cells"]:
            if cell["id"] == victim["id"]:
                cell["verdict"] = "pass"

    status, out, _ = verify(pack(tmp_path / "forged.tar.gz", edit_json(files, "matrix.json", to_pass)), capsys)
    assert status == 1 and "NOT verified" in out
    assert f"{victim['id']}: verdict pass recorded, but its observations make it leak" in out
    assert "manifest.sha256" not in out


def test_a_file_changed_or_a_forged_topology_is_caught(
    context_run: ExistingRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = unpack(context_run.bundle())
    changed = {**files, "preflight.json": files["preflight.json"].replace(b'"ok"', b'"fail"', 1)}
    status, out, _ = verify(pack(tmp_path / "changed.tar.gz", changed, manifest=False), capsys)
    assert status == 1 and "preflight.json: changed (its SHA-256 is not the one in manifest.sha256)" in out

    def drop_a_node(doc: Any) -> None:
        doc["clusters"][1]["nodes"].pop()

    forged = edit_json(files, "topology.json", drop_a_node)
    status, out, _ = verify(pack(tmp_path / "topology.tar.gz", forged), capsys)
    assert status == 1 and "topology.json: not the SHA-256 bundle.json says" in out
    dropped = json.loads(files["topology.json"])["clusters"][1]["nodes"][-1]["short"]

    def rehash(doc: Any) -> None:
        doc["topology"]["sha256"] = sha(forged["topology.json"])

    status, out, _ = verify(pack(tmp_path / "rehashed.tar.gz", edit_json(forged, "bundle.json", rehash)), capsys)
    assert status == 1 and "recorded, but the bundled topology and profile build no such cell" in out
    assert f"cluster-2/{dropped}" in out

    def as_kind(doc: Any) -> None:
        doc["provider"] = "kind"

    status, out, _ = verify(pack(tmp_path / "kind.tar.gz", edit_json(files, "bundle.json", as_kind)), capsys)
    assert status == 1 and "matrix.json: provider existing is not bundle.json's kind" in out


def test_discovery_preflight_and_cluster_lists_that_disagree_with_the_matrix_are_caught(
    context_run: ExistingRun, clusterset_run: ExistingRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each of these files is written from matrix.json's run: edited alone (manifest regenerated), it
    is a named failure."""
    files = unpack(context_run.bundle())

    def drop_rows(doc: Any) -> None:  # e.g. blocking rows removed, counts made to agree
        doc["rows"] = doc["rows"][1:]

    def other_cni(doc: Any) -> None:
        doc["clusters"][0]["cni"] = "calico"

    for name, change in (("preflight.json", drop_rows), ("discovered.json", other_cni)):
        status, out, _ = verify(pack(tmp_path / f"{name}.tar.gz", edit_json(files, name, change)), capsys)
        assert status == 1 and f"{name}: not what matrix.json's run.discovery says" in out, out

    def rename(doc: Any) -> None:
        doc["clusters"][1]["name"] = "cluster-9"

    forged = edit_json(files, "topology.json", rename)
    rehashed = edit_json(forged, "bundle.json", lambda doc: doc["topology"].update(sha256=sha(forged["topology.json"])))
    status, out, _ = verify(pack(tmp_path / "renamed.tar.gz", rehashed), capsys)
    assert status == 1 and "topology.json: clusters ['cluster-1', 'cluster-9'] are not matrix.json's run" in out

    paired = unpack(clusterset_run.bundle())
    other = {**paired, "clusterset.yaml": paired["clusterset.yaml"].replace(b"cluster-2,", b"cluster-3,")}
    status, out, _ = verify(pack(tmp_path / "clusterset.tar.gz", other), capsys)
    assert status == 1 and "clusterset.yaml: clusters ['cluster-1', 'cluster-3'] are not" in out, out


@pytest.mark.parametrize("raised", [KeyError("x"), RecursionError("deep\nnested"), TypeError("bad\ntype")])
def test_a_profile_that_fails_to_load_any_way_is_one_line_not_a_traceback(
    context_run: ExistingRun, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], raised: Exception
) -> None:
    from crossnet.bundle import verify as verifier

    def hostile(_path: str) -> Any:
        raise raised

    monkeypatch.setattr(verifier, "load_profile", hostile)
    status, out, err = verify(context_run.bundle(), capsys)
    assert status == 1 and "Traceback" not in out + err
    said = [line for line in out.splitlines() if "do not load" in line]
    assert len(said) == 1 and type(raised).__name__ in said[0]
    assert out.splitlines()[out.splitlines().index(said[0]) + 1].startswith("  run ")  # the message is one line
