"""The plumbing suite on clusters somebody else joined (`--provider existing --plumbing none`,
against tests/fake_kube.py over HTTP): crossnet injected nothing, so its own Corefile forwards are
no requirement; the facts report what is there, with their values, and fail only what is broken —
a forward into the clusters' networks that is not the peer's DNS."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.fake_kube import FakeCluster, HttpBridge, kubeconfig_text
from tests.test_existing_provider import CONTEXTS, TOKEN, World

STALE = "10.20.0.99"  # in cluster-2's pod subnet, but not one of its DNS pods (10.20.0.3, 10.20.0.4)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[[World], Path]]:
    """Serves a World's clusters over HTTP; gives the kubeconfig that reaches them."""
    bridges: dict[str, HttpBridge] = {}

    def serve(world: World) -> Path:
        for context, cluster in world.clusters.items():
            bridges[context] = HttpBridge(cluster, TOKEN)
        path = tmp_path / "kubeconfig"
        path.write_text(kubeconfig_text({c: (b.url, TOKEN) for c, b in bridges.items()}))
        return path

    yield serve
    for bridge in bridges.values():
        bridge.close()


def plumbing_run(kubeconfig: Path, reports: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, Any]]]:
    argv = [sys.executable, "-m", "pytest", "suites/test_plumbing.py", "-q", "-p", "no:cacheprovider",
            "--provider", "existing", "--kubeconfig", str(kubeconfig), "--plumbing", "none",
            "--reports", str(reports)]
    for context in CONTEXTS:
        argv += ["--context", context]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    facts = json.loads((reports / "matrix.json").read_text()).get("facts") or []
    return done, {f["id"]: f for f in facts}


def test_without_forwards_the_corefile_facts_report_and_nothing_fails(
    served: Callable[[World], Path], tmp_path: Path
) -> None:
    done, facts = plumbing_run(served(World()), tmp_path / "r")
    assert done.returncode == 0 and " failed" not in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
    fact = facts["cluster-1:corefile-forward:cluster-2.local"]
    assert fact["ok"] and "no server block for cluster-2.local" in fact["observed"]
    assert "observed, not required" in fact["expected"]


def test_a_forward_to_the_peers_dns_passes_and_one_to_a_stale_pod_ip_fails_naming_it(served,
                                                                                      tmp_path: Path) -> None:
    world = World()
    forwards = {"ctx-1": {"cluster-2.local": STALE}, "ctx-2": {"cluster-1.local": "10.10.0.3 10.10.0.4 192.0.2.53"}}
    for context, cluster in world.clusters.items():  # 192.0.2.53: a resolver outside the clusters, not judged
        world.clusters[context] = FakeCluster(context, cluster.index, rbac=cluster.rbac,
                                              corefile_forwards=forwards[context])
    done, facts = plumbing_run(served(world), tmp_path / "r")
    assert done.returncode == 1 and "1 failed" in done.stdout, done.stdout[-3000:]
    bad = facts["cluster-1:corefile-forward:cluster-2.local"]
    assert not bad["ok"] and f"{STALE} is not cluster-2's DNS now" in bad["observed"]
    assert "10.20.0.3 10.20.0.4" in bad["observed"]
    good = facts["cluster-2:corefile-forward:cluster-1.local"]
    assert good["ok"] and good["observed"] == "cluster-1.local: forward . 10.10.0.3 10.10.0.4 192.0.2.53"
    assert "cluster-1:corefile-forward:cluster-2.local: expected" in done.stdout and STALE in done.stdout


def test_failing_cell_evidence_without_node_evidence_comes_from_the_agents(tmp_path: Path) -> None:
    """Without --node-evidence nothing runs on a vendor's nodes: a failing cell's evidence is what the
    agents see (node and agent addresses, the resolv.conf the agent was given, an ICMP echo from the
    sending agent now), and it says what --node-evidence would add. Nothing is exec'd or written."""
    from crossnet.evidence import collect_evidence
    from crossnet.lifecycle import Run
    from tests.test_existing_provider import bring_up

    world = World()
    provider = world.provider(tmp_path, "run-e")
    cluster_set = bring_up(provider)
    try:
        src = cluster_set.cluster("cluster-1").nodes[0]
        dst = cluster_set.cluster("cluster-2").nodes[1]
        src_ip, dst_ip = (cluster_set.cluster(c).pod_on(n.short).ip for c, n in (("cluster-1", src),
                                                                                  ("cluster-2", dst)))
        run = Run(provider, cluster_set, owned=False)
        text = collect_evidence(run, ("cluster-1", src.short, "agent"), ("cluster-2", dst.short, "agent"),
                                f"{src_ip} {dst_ip}", dns_cluster="cluster-1")
    finally:
        provider.down()
    src_part, dst_part = text.split(f"=== cluster-2/{dst.short}: what the agent sees (no node evidence) ===")
    assert src_part.startswith(f"=== cluster-1/{src.short}: what the agent sees (no node evidence) ===")
    assert "crossnet runs nothing on this node (node evidence needs --node-evidence)" in src_part
    assert f"node {src.short}: IP {src.ip}" in src_part
    assert f"its agent cluster-1/{src.short}/agent: pod IP {src_ip}" in src_part
    assert "its resolv.conf: search crossnet-run-e.svc.cluster-1.local" in src_part
    assert f"ICMP echo from cluster-1/{src.short}/agent to {dst_ip} now: answered" in src_part
    assert "ICMP echo" not in dst_part and f"its agent cluster-2/{dst.short}/agent: pod IP {dst_ip}" in dst_part
    for part in (src_part, dst_part):
        assert "--node-evidence would add" in part and "conntrack" in part
    assert "could not reach the node" not in text and "link MTUs ===" not in text
    assert "=== cluster-1: Corefile ===" in text and "kubernetes cluster-1.local" in text
    assert not [r for c in world.clusters.values() for r in c.requests if r.resource == "pods/exec"]
    assert world.writes_outside("crossnet-run-e") == [] and all(c.denied() == [] for c in world.clusters.values())
