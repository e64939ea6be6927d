"""Submariner Globalnet on kind clusters: deployed with subctl (a pinned version, installed by the
nightly workflow), gateways labelled, Services exported, and the global IPs read back from
Submariner's own objects — never assumed. Behind a seam (`SubctlRunner`) so the logic is tested
with fakes here; only the nightly run deploys real Submariner."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from crossnet.globalnet import (
    EXPORTED_SERVICES,
    GlobalAllocation,
    GlobalnetObjectsError,
    allocation_from_objects,
    gateway_node,
)
from crossnet.model import Topology
from crossnet.providers.base import ProviderError
from crossnet.providers.kind.kube import KubeCluster
from crossnet.providers.kind.nodes import kind_node_name

__all__ = [
    "GATEWAY_LABEL",
    "SUBCTL_VERSION",
    "SubctlCli",
    "SubctlRunner",
    "deploy_globalnet",
    "export_services",
    "read_allocations",
    "undo_globalnet",
]

SUBCTL_VERSION = "0.19.2"  # the nightly workflow installs exactly this one
GATEWAY_LABEL = "submariner.io/gateway"
ALLOCATION_TIMEOUT = 300.0


class SubctlRunner(Protocol):
    def deploy_broker(self, kubeconfig: Path, workdir: Path) -> Path: ...
    def join(self, kubeconfig: Path, broker_info: Path, cluster_id: str, workdir: Path) -> None: ...
    def export(self, kubeconfig: Path, namespace: str, service: str) -> None: ...
    def uninstall(self, kubeconfig: Path) -> None: ...


@dataclass
class SubctlCli:
    binary: str = "subctl"

    def __post_init__(self) -> None:
        found = shutil.which(self.binary)
        if found is None:
            raise ProviderError(
                f"subctl is not on PATH; Globalnet on kind needs it (version {SUBCTL_VERSION}: "
                "https://submariner.io/operations/deployment/subctl/), or run --topology globalnet "
                "with --provider lab, which emulates Submariner here"
            )
        self.binary = found

    def _run(self, argv: list[str], workdir: Path | None = None, timeout: float = 600.0) -> None:
        try:
            done = subprocess.run([self.binary, *argv], cwd=workdir, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProviderError(f"`subctl {argv[0]}` did not finish within {timeout:.0f}s") from None
        if done.returncode != 0:
            raise ProviderError(
                f"`subctl {' '.join(argv[:2])}` failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-800:]}"
            )

    def deploy_broker(self, kubeconfig: Path, workdir: Path) -> Path:
        self._run(["deploy-broker", "--kubeconfig", str(kubeconfig), "--globalnet"], workdir)
        return workdir / "broker-info.subm"

    def join(self, kubeconfig: Path, broker_info: Path, cluster_id: str, workdir: Path) -> None:
        # kind's nodes share one docker network: no NAT traversal between gateways.
        self._run(
            ["join", "--kubeconfig", str(kubeconfig), str(broker_info), "--clusterid", cluster_id, "--natt=false"],
            workdir,
        )

    def export(self, kubeconfig: Path, namespace: str, service: str) -> None:
        self._run(
            ["export", "service", "--kubeconfig", str(kubeconfig), "--namespace", namespace, service], timeout=120.0
        )

    def uninstall(self, kubeconfig: Path) -> None:
        """Remove Submariner from the cluster: its join, and the broker when the cluster holds it."""
        self._run(["uninstall", "--kubeconfig", str(kubeconfig), "--yes"])


Record = Callable[[dict[str, Any]], None]


def _submariner_installed(kube: KubeCluster) -> bool:
    try:
        return bool(kube.custom_objects("submariner.io", "v1alpha1", "submariners", None))
    except ProviderError:  # no Submariner CRD: the API server answers 404
        return False


def deploy_globalnet(
    subctl: SubctlRunner,
    topology: Topology,
    kubes: Mapping[str, KubeCluster],
    kubeconfigs: Mapping[str, Path],
    workdir: Path,
    progress: Callable[[str], None],
    record: Record = lambda _done: None,
) -> None:
    """Label each cluster's gateway node, deploy the broker (with Globalnet) on the first cluster
    and join every cluster in config order (so the global CIDRs are handed out in that order).
    Each change goes to `record` (the state file) before it is made, so teardown can undo exactly
    it: a gateway label that was already there is left out, and clusters that already run
    Submariner are refused (its uninstall would remove somebody else's deployment)."""
    running = [c.name for c in topology.clusters if _submariner_installed(kubes[c.name])]
    if running:
        raise ProviderError(
            f"Submariner is already installed on {', '.join(running)}; crossnet deploys its own "
            "broker and would remove Submariner again at teardown: use clusters without it, or "
            f"uninstall it first (`subctl uninstall --kubeconfig {kubeconfigs[running[0]]}`)"
        )
    done: dict[str, Any] = {"labels": [], "broker": None, "joined": []}
    for cluster in topology.clusters:
        node = kind_node_name(cluster.name, gateway_node(topology, cluster.name))
        previous = kubes[cluster.name].node_labels(node).get(GATEWAY_LABEL)
        if previous != "true":
            done["labels"].append({"cluster": cluster.name, "node": node, "label": GATEWAY_LABEL, "previous": previous})
            record(done)
            kubes[cluster.name].label_node(node, {GATEWAY_LABEL: "true"})
    first = topology.clusters[0].name
    progress(f"submariner: deploying the broker with Globalnet on {first}")
    done["broker"] = first
    record(done)
    broker = subctl.deploy_broker(kubeconfigs[first], workdir)
    for cluster in topology.clusters:
        progress(f"submariner: joining {cluster.name}")
        done["joined"].append(cluster.name)
        record(done)
        subctl.join(kubeconfigs[cluster.name], broker, cluster.name, workdir)


def undo_globalnet(
    subctl: SubctlRunner,
    done: Mapping[str, Any],
    kubes: Callable[[str], KubeCluster],
    kubeconfigs: Mapping[str, Path],
    clusters: set[str],
    progress: Callable[[str], None],
) -> list[str]:
    """Undo what `deploy_globalnet` recorded in `done`, on `clusters` only (the others are being
    deleted): `subctl uninstall` where crossnet joined or deployed the broker, then each gateway
    label put back as it was (removed when crossnet added it). Returns what could not be undone."""
    problems: list[str] = []
    installed: list[str] = list(reversed(done.get("joined") or []))
    if done.get("broker") and done["broker"] not in installed:  # the broker's cluster goes last
        installed.append(done["broker"])
    for cluster in [c for c in installed if c in clusters]:
        progress(f"submariner: uninstalling from {cluster}")
        try:
            subctl.uninstall(kubeconfigs[cluster])
        except ProviderError as exc:
            problems.append(f"{cluster}: uninstall Submariner: {exc}")
    for label in reversed(done.get("labels") or []):
        if label.get("cluster") not in clusters or label.get("label") != GATEWAY_LABEL:
            continue  # a deleted cluster, or a label crossnet never sets
        try:
            kubes(label["cluster"]).label_node(label["node"], {label["label"]: label.get("previous")})
        except ProviderError as exc:
            problems.append(f"{label['cluster']}: restore label {label['label']} of {label['node']}: {exc}")
    return problems


def export_services(subctl: SubctlRunner, topology: Topology, kubeconfigs: Mapping[str, Path], namespace: str) -> None:
    for cluster in topology.clusters:
        for service in EXPORTED_SERVICES:
            subctl.export(kubeconfigs[cluster.name], namespace, service)


def read_allocations(
    topology: Topology,
    kubes: Mapping[str, KubeCluster],
    namespace: str,
    progress: Callable[[str], None],
    timeout: float = ALLOCATION_TIMEOUT,
    pause: float = 2.0,
) -> dict[str, GlobalAllocation]:
    """Wait (bounded) until Globalnet has allocated every cluster's egress IPs and the ingress IPs
    of the exported Service and of each headless pod, then return them as read from the objects."""
    deadline = time.monotonic() + timeout
    found: dict[str, GlobalAllocation] = {}
    last: dict[str, str] = {}
    while True:
        for cluster in topology.clusters:
            if cluster.name in found:
                continue
            kube = kubes[cluster.name]
            try:
                allocation = allocation_from_objects(
                    cluster.name,
                    kube.custom_objects("submariner.io", "v1", "globalingressips", namespace),
                    kube.custom_objects("submariner.io", "v1", "clusterglobalegressips", None),
                )
            except GlobalnetObjectsError as exc:
                last[cluster.name] = str(exc)
                continue
            if set(allocation.service_ips) >= {"echo"} and len(allocation.pod_ips) >= len(cluster.nodes):
                found[cluster.name] = allocation
                progress(f"submariner: {cluster.name} has {allocation.cidr}, egress {allocation.egress_range}")
            else:
                last[cluster.name] = (
                    f"{len(allocation.service_ips)} Service and {len(allocation.pod_ips)} pod global ingress IPs so far"
                )
        if len(found) == len(topology.clusters):
            return found
        if time.monotonic() > deadline:
            raise ProviderError(
                "Globalnet did not allocate every global IP in time: "
                + "; ".join(f"{name}: {why}" for name, why in last.items() if name not in found)
            )
        time.sleep(pause)
