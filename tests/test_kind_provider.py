"""The kind provider against fakes of the kind CLI, the kubernetes API and the docker layer:
parallel creation (and the cleanup when one cluster fails), --reuse, node routes from node
objects, the CoreDNS ConfigMap patched and restored byte for byte, agents pinned to every node,
and teardown after errors. Real clusters are the nightly run's job."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from crossnet.config import load_topology
from crossnet.globalnet import NOT_EXPORTED_SERVICE
from crossnet.lifecycle import bring_up_with, tear_down
from crossnet.plumbing.routes import RouteChange
from crossnet.providers.base import ProviderError
from crossnet.providers.kind.kube import KubeNode, KubePod, KubeService, conflict_error
from crossnet.providers.kind.nodes import kind_node_name
from crossnet.providers.kind.provider import KindProvider
from crossnet.providers.kube_agents import (
    AgentNode,
    agent_client,
    agent_manifests,
    apply_agents,
    live_agents,
    wait_agents,
)
from crossnet.providers.lab.topology import stock_corefile
from tests.conftest import ROOT

TOPOLOGY = load_topology([ROOT / "kind-configs" / "cluster-1.yaml", ROOT / "kind-configs" / "cluster-2.yaml"])
VENDOR = ".:53 {\n    errors\n    kubernetes cluster-2.com {\n      pods verified\n    }\n    forward . 192.0.2.1\n}"


class FakeKind:
    """kind's CLI. With `parallel=n`, every create waits on a Barrier of n parties: bring-up only
    gets past it (within 5 s, else BrokenBarrierError) when n creations really run at once."""

    def __init__(self, existing: tuple[str, ...] = (), fail: str | None = None, parallel: int = 0) -> None:
        self.existing = set(existing)
        self.fail = fail
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.exported: list[str] = []
        self.barrier = threading.Barrier(parties=parallel, timeout=5) if parallel else None

    def clusters(self) -> list[str]:
        return sorted(self.existing)

    def create(self, name: str, config: Path, kubeconfig: Path, log: Path) -> None:
        if self.barrier is not None:
            self.barrier.wait()
        log.write_text(f"creating {name} from {config}\n")
        self.existing.add(name)  # a failed create may leave a half-made cluster behind
        if name == self.fail:
            raise ProviderError(f"kind could not create {name}: boom")
        kubeconfig.write_text(f"kubeconfig of {name}, with a secret token\n")
        self.created.append(name)

    def delete(self, name: str) -> None:
        self.deleted.append(name)
        self.existing.discard(name)

    def export_logs(self, name: str, directory: Path) -> None:
        self.exported.append(name)

    def kubeconfig(self, name: str) -> str:
        return f"kubeconfig of {name}"


class FakeKube:
    """One cluster's API: nodes as kind names them, CoreDNS, namespaces with their labels, and
    what crossnet applies (a same-named object answers 409 as the real adapter does); agents
    answer only requests that carry the token of the Secret crossnet applied."""

    def __init__(self, name: str, index: int, corefile: str, image_pull_fails: bool = False) -> None:
        self.name, self.index = name, index
        self.configmaps = {("kube-system", "coredns"): {"Corefile": corefile}}
        self.applied: list[dict[str, Any]] = []
        self.deleted_namespaces: list[str] = []
        self.image_pull_fails = image_pull_fails
        self.labels: dict[str, dict[str, str]] = {}
        self.exported: set[str] = set()
        self.namespaces: dict[str, dict[str, str]] = {"kube-system": {"kubernetes.io/metadata.name": "kube-system"}}
        self.objects: dict[tuple[str, str, str], dict[str, str]] = {}  # (kind, namespace, name): labels
        self.proxied: list[dict[str, str]] = []  # the headers of each pod-proxy request
        self.submariner_installed = False
        base = 2 + index * 3
        self._nodes = [KubeNode(kind_node_name(name, short), f"172.18.0.{base + i}", f"10.{index + 1}0.{i}.0/24", True,
                                short == "control-plane")
                       for i, short in enumerate(("control-plane", "worker", "worker2"))]

    def nodes(self) -> list[KubeNode]:
        return list(self._nodes)

    def pods(self, namespace: str, selector: str) -> list[KubePod]:
        if namespace == "kube-system":
            control_plane = kind_node_name(self.name, "control-plane")
            return [KubePod(f"coredns-{i}", control_plane, f"10.{self.index + 1}0.0.{3 + i}", True, "Running")
                    for i in range(2)]
        pods = [m for m in self.applied if m["kind"] == "Pod"]
        wanted = selector.split("=")
        matching = [m for m in pods if m["metadata"]["labels"].get(wanted[0]) == wanted[1]]
        reason = "ErrImagePull" if self.image_pull_fails else ""
        return [KubePod(m["metadata"]["name"], m["spec"]["nodeName"], f"10.{self.index + 1}0.{n}.9",
                        not self.image_pull_fails, "Pending" if reason else "Running", reason)
                for n, m in enumerate(matching)]

    def services(self, namespace: str) -> list[KubeService]:
        if namespace == "kube-system":
            return [KubeService("kube-dns", "ClusterIP", f"10.{self.index + 4}0.0.10", None, None)]
        result = []
        for m in self.applied:
            if m["kind"] == "Service":
                spec = m["spec"]
                kind = "Headless" if spec.get("clusterIP") == "None" else spec.get("type", "ClusterIP")
                ip = None if kind in ("Headless", "ExternalName") else f"10.{self.index + 4}0.7.7"
                result.append(KubeService(m["metadata"]["name"], kind, ip,
                                          30080 if kind == "NodePort" else None, spec.get("externalName")))
        return result

    def read_configmap(self, namespace: str, name: str) -> dict[str, str]:
        return dict(self.configmaps[(namespace, name)])

    def write_configmap_key(self, namespace: str, name: str, key: str, value: str) -> None:
        self.configmaps[(namespace, name)][key] = value

    def apply(self, manifests: list[dict[str, Any]]) -> None:
        for manifest in manifests:
            meta = manifest["metadata"]
            labels = dict(meta.get("labels") or {})
            if manifest["kind"] == "Namespace":
                existing = self.namespaces.get(meta["name"])
            else:
                existing = self.objects.get((manifest["kind"], meta.get("namespace", ""), meta["name"]))
            if existing is not None:  # the API server's 409, judged as ApiKubeCluster.apply judges it
                conflict = conflict_error(self.name, manifest, existing)
                if conflict is not None:
                    raise conflict
                continue
            if manifest["kind"] == "Namespace":
                self.namespaces[meta["name"]] = labels
            else:
                self.objects[(manifest["kind"], meta.get("namespace", ""), meta["name"])] = labels
            self.applied.append(manifest)

    def delete_namespace(self, name: str) -> None:
        self.deleted_namespaces.append(name)
        self.namespaces.pop(name, None)

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        labels = self.namespaces.get(name)
        return None if labels is None else dict(labels)

    def token(self, namespace: str) -> str | None:
        return next((m["stringData"]["token"] for m in self.applied if m["kind"] == "Secret"
                     and m["metadata"]["namespace"] == namespace), None)

    def proxy_post(self, namespace: str, pod: str, port: int, path: str, body: dict[str, Any],
                   timeout: float, headers: dict[str, str] | None = None) -> dict[str, Any]:
        self.proxied.append(dict(headers or {}))
        if (headers or {}).get("X-Crossnet-Token") != self.token(namespace):
            return {"error": "403: no or wrong X-Crossnet-Token"}
        # Every DNS probe resolves: enough for the convergence wait.
        return {"results": [{"id": p["id"], "reached": True, "answers": ["10.0.0.1"]} for p in body["probes"]]}

    def exec_in_pod(self, namespace: str, pod: str, argv: list[str], timeout: float) -> tuple[int, str, str]:
        return 0, f"{pod}: {' '.join(argv)}", ""

    # Submariner's objects, as Globalnet writes them once Services are exported (submariner.io/v1).
    def label_node(self, name: str, labels: dict[str, str | None]) -> None:
        for key, value in labels.items():
            if value is None:
                self.labels.get(name, {}).pop(key, None)
            else:
                self.labels.setdefault(name, {})[key] = value

    def node_labels(self, name: str) -> dict[str, str]:
        return dict(self.labels.get(name, {}))

    def custom_objects(self, group: str, version: str, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        base = f"242.{self.index}.0"
        if plural == "submariners":
            if not self.submariner_installed:
                raise ProviderError(f"{self.name}: list submariners: API server said 404 Not Found")
            return [{"metadata": {"name": "submariner", "namespace": "submariner-operator"}}]
        if plural == "clusterglobalegressips":
            return [{"metadata": {"name": "cluster-egress.submariner.io"}, "spec": {"numGlobalIPs": 8},
                     "status": {"allocatedIPs": [f"{base}.{i}" for i in range(1, 9)]}}]
        objects: list[dict[str, Any]] = []
        if "echo" in self.exported:
            objects.append({"metadata": {"name": "echo"}, "spec": {"target": "ClusterIPService",
                            "serviceRef": {"name": "echo"}}, "status": {"allocatedIP": f"{base}.9"}})
        if "echo-headless" in self.exported:
            objects += [{"metadata": {"name": f"pod-{pod}"}, "spec": {"target": "HeadlessServicePod",
                         "serviceRef": {"name": "echo-headless"}, "podRef": {"name": pod}},
                         "status": {"allocatedIP": f"{base}.{10 + i}"}}
                        for i, pod in enumerate(("agent-control-plane", "agent-worker", "agent-worker2"))]
        return objects


class FakeNodes:
    def __init__(self) -> None:
        self.routes: dict[str, set[str]] = {}
        self.execs: list[tuple[str, list[str]]] = []

    def apply_routes(self, changes: list[RouteChange]) -> None:
        for c in changes:
            self.routes.setdefault(kind_node_name(c.cluster, c.node), set()).add(f"{c.destination} via {c.via}")

    def undo_routes(self, changes: list[RouteChange]) -> None:
        for c in changes:
            self.routes.get(kind_node_name(c.cluster, c.node), set()).discard(f"{c.destination} via {c.via}")

    def exec(self, container: str, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]:
        self.execs.append((container, argv))
        return 0, "", ""


def provider(tmp_path: Path, kind: FakeKind, corefiles: dict[str, str] | None = None,
             pull_fails: bool = False, **options: Any) -> tuple[KindProvider, dict[str, FakeKube], FakeNodes]:
    kubes: dict[str, FakeKube] = {}
    nodes = FakeNodes()

    def factory(name: str, path: Path) -> FakeKube:
        index = int(name.split("-")[1]) - 1
        corefile = (corefiles or {}).get(name, stock_corefile(f"{name}.com"))
        kubes[name] = FakeKube(name, index, corefile, pull_fails)
        return kubes[name]

    made = KindProvider(tmp_path / "state", "run-1", kind=kind, nodes=nodes, kube_factory=factory,
                        progress=lambda _m: None, logs_dir=tmp_path / "logs", **options)
    made.converge_timeout = 2.0
    return made, kubes, nodes


def quiet(_message: str) -> None:
    pass


def test_bring_up_creates_in_parallel_routes_from_node_objects_and_tears_down(tmp_path: Path) -> None:
    kind = FakeKind(parallel=2)  # both creations must wait on the barrier at once
    made, kubes, nodes = provider(tmp_path, kind, corefiles={"cluster-2": VENDOR})
    run = bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    assert sorted(kind.created) == ["cluster-1", "cluster-2"]
    # Routes come from the API's InternalIP and spec.podCIDR: every node, every peer node.
    assert nodes.routes["cluster-1-worker"] == {"10.20.0.0/24 via 172.18.0.5", "10.20.1.0/24 via 172.18.0.6",
                                                "10.20.2.0/24 via 172.18.0.7"}
    patched = kubes["cluster-2"].configmaps[("kube-system", "coredns")]["Corefile"]
    assert patched.startswith(VENDOR) and "forward . 10.10.0.3 10.10.0.4" in patched  # the peer's CoreDNS pods
    pods = [m for m in kubes["cluster-1"].applied if m["kind"] == "Pod"]
    assert sorted(m["spec"]["nodeName"] for m in pods if not m["spec"].get("hostNetwork")) == [
        "cluster-1-control-plane", "cluster-1-worker", "cluster-1-worker2"]
    assert sum(1 for m in pods if m["spec"].get("hostNetwork")) == 3
    assert all(m["metadata"]["namespace"] == "crossnet-run-1" for m in pods)
    ext = [m for m in kubes["cluster-2"].applied if m.get("spec", {}).get("type") == "ExternalName"]
    assert ext[0]["spec"]["externalName"] == "echo.crossnet-run-1.svc.cluster-1.com"
    live = run.cluster_set.cluster("cluster-1")
    assert live.dns_server_ips == ("10.10.0.3", "10.10.0.4") and live.node("worker2").pod_cidr == "10.10.2.0/24"
    assert run.cluster_set.namespace == "crossnet-run-1"

    tear_down(run, progress=quiet)
    assert kubes["cluster-2"].configmaps[("kube-system", "coredns")]["Corefile"] == VENDOR  # byte for byte
    assert kubes["cluster-1"].configmaps[("kube-system", "coredns")]["Corefile"] == stock_corefile("cluster-1.com")
    assert all(not routes for routes in nodes.routes.values())
    assert kubes["cluster-1"].deleted_namespaces == ["crossnet-run-1"]
    assert sorted(kind.deleted) == ["cluster-1", "cluster-2"] and not (tmp_path / "state").exists()


def test_one_cluster_failing_deletes_the_other(tmp_path: Path) -> None:
    kind = FakeKind(fail="cluster-2", parallel=2)
    made, _, _ = provider(tmp_path, kind)
    with pytest.raises(ProviderError, match="cluster-2: kind could not create cluster-2: boom") as caught:
        bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    assert "the others were deleted again" in str(caught.value)
    assert sorted(kind.deleted) == ["cluster-1", "cluster-2"] and kind.exported == ["cluster-2"]
    assert (tmp_path / "logs" / "kind-create-cluster-2.log").read_text().startswith("creating cluster-2")
    assert kind.existing == set() and not (tmp_path / "state").exists()


def test_existing_clusters_need_reuse_and_are_never_deleted(tmp_path: Path) -> None:
    kind = FakeKind(existing=("cluster-1", "cluster-2"))
    made, _, _ = provider(tmp_path / "a", kind)
    with pytest.raises(ProviderError, match="already exist; pass --reuse"):
        bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    assert kind.deleted == [] and kind.created == []
    made, kubes, _ = provider(tmp_path / "b", kind, reuse=True)
    run = bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    assert kind.created == [] and (tmp_path / "b" / "state" / "kubeconfig-cluster-1").read_text() == (
        "kubeconfig of cluster-1")
    tear_down(run, progress=quiet)
    assert kind.deleted == [] and kubes["cluster-1"].deleted_namespaces == ["crossnet-run-1"]


def test_an_agent_image_that_cannot_be_pulled_is_named_and_everything_is_undone(tmp_path: Path) -> None:
    kind = FakeKind()
    made, kubes, nodes = provider(tmp_path, kind, pull_fails=True, agent_image="registry.example/python:3-slim")
    with pytest.raises(ProviderError, match=r"registry.example/python:3-slim cannot be pulled.*--agent-image"):
        bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    assert sorted(kind.deleted) == ["cluster-1", "cluster-2"]
    assert kubes["cluster-1"].deleted_namespaces == ["crossnet-run-1"] and nodes.routes == {}


def test_without_the_kind_binary_the_error_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    made = KindProvider(tmp_path / "state", "run-1", nodes=FakeNodes(), progress=quiet)
    with pytest.raises(ProviderError) as caught:
        made.up(TOPOLOGY)
    assert "kind binary" in str(caught.value) and "--provider lab" in str(caught.value)
    assert not (tmp_path / "state").exists()


def test_repro_commands_run_the_agent_in_its_pod(tmp_path: Path) -> None:
    from crossnet.providers.base import ExecTarget

    made, _, nodes = provider(tmp_path, FakeKind())
    bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    rc, out, _ = made.exec(ExecTarget("cluster-1", "worker", "agent"), ["crossnet-agent", "probe", "tcp", "1.2.3.4"])
    assert rc == 0 and out.startswith("agent-worker: python3 /crossnet/crossnet-agent.pyz probe tcp")
    rc, out, _ = made.exec(ExecTarget("cluster-1", "worker"), ["crossnet-agent", "probe", "icmp", "1.2.3.4"])
    assert out.startswith("host-worker: python3")  # the host vantage is the node's hostNetwork pod
    made.exec(ExecTarget("cluster-1", "worker"), ["ip", "route"])
    assert nodes.execs[-1] == ("cluster-1-worker", ["ip", "route"])


def test_kind_nodes_are_testinfra_docker_hosts(tmp_path: Path) -> None:
    from crossnet.facts import node_host

    made, _, _ = provider(tmp_path, FakeKind())
    run = bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    host = node_host(run, "cluster-2", "worker2")
    assert host.backend.get_connection_type() == "docker" and host.backend.name == "cluster-2-worker2"
    own = made.node_host("cluster-2", "worker2")  # what node_host gets from the provider itself
    assert (own.backend.get_connection_type(), own.backend.name) == ("docker", "cluster-2-worker2")
    assert run.provider is made and node_host(run, "cluster-1", "control-plane").backend.name == (
        "cluster-1-control-plane")


def test_node_host_is_testinfras_docker_backend_on_the_kind_container(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import testinfra

    asked: list[str] = []
    sentinel = object()

    def get_host(url: str) -> object:
        asked.append(url)
        return sentinel

    monkeypatch.setattr(testinfra, "get_host", get_host)
    made, _, nodes = provider(tmp_path, FakeKind())  # nothing brought up: a host is only a name
    assert made.node_host("cluster-2", "worker2") is sentinel
    assert made.node_host("globalnet-1", "control-plane") is sentinel
    assert asked == ["docker://cluster-2-worker2", "docker://globalnet-1-control-plane"] and not nodes.execs


def test_ctrl_c_during_creation_still_deletes_what_kind_made(tmp_path: Path) -> None:
    class Interrupted(FakeKind):
        def create(self, name: str, config: Path, kubeconfig: Path, log: Path) -> None:
            self.existing.add(name)  # kind had started making it
            if name == "cluster-2":
                raise KeyboardInterrupt

    kind = Interrupted()
    made, _, _ = provider(tmp_path, kind)
    with pytest.raises(KeyboardInterrupt):
        bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    assert sorted(kind.deleted) == ["cluster-1", "cluster-2"] and kind.existing == set()
    assert not (tmp_path / "state").exists()


class FakeSubctl:
    def __init__(self, kubes: dict[str, FakeKube]) -> None:
        self.kubes = kubes
        self.calls: list[str] = []

    def deploy_broker(self, kubeconfig: Path, workdir: Path) -> Path:
        self.calls.append(f"deploy-broker {kubeconfig.name}")
        return workdir / "broker-info.subm"

    def join(self, kubeconfig: Path, broker_info: Path, cluster_id: str, workdir: Path) -> None:
        self.calls.append(f"join {cluster_id}")

    def export(self, kubeconfig: Path, namespace: str, service: str) -> None:
        self.calls.append(f"export {kubeconfig.name.removeprefix('kubeconfig-')} {namespace}/{service}")
        cluster = kubeconfig.name.removeprefix("kubeconfig-")
        self.kubes[cluster].exported.add(service)

    def uninstall(self, kubeconfig: Path) -> None:
        self.calls.append(f"uninstall {kubeconfig.name.removeprefix('kubeconfig-')}")


def test_globalnet_on_kind_deploys_submariner_and_reads_its_allocation(tmp_path: Path) -> None:
    configs = [ROOT / "kind-configs" / f"globalnet-{i}.yaml" for i in (1, 2, 3)]
    topology = load_topology(configs, global_cidr="242.0.0.0/8")
    kubes: dict[str, FakeKube] = {}

    def factory(name: str, path: Path) -> FakeKube:
        kubes[name] = FakeKube(name, int(name.split("-")[1]) - 1, stock_corefile("cluster.local"))
        return kubes[name]

    subctl = FakeSubctl(kubes)
    made = KindProvider(tmp_path / "state", "run-1", kind=FakeKind(), nodes=FakeNodes(), kube_factory=factory,
                        progress=quiet, logs_dir=tmp_path / "logs", global_cidr="242.0.0.0/8", subctl=subctl)
    made.converge_timeout = 2.0
    from crossnet.profile import load_profile

    run = bring_up_with(made, topology, "run-1", load_profile("globalnet").plumbing, progress=quiet)
    assert subctl.calls[:4] == ["deploy-broker kubeconfig-globalnet-1", "join globalnet-1", "join globalnet-2",
                                "join globalnet-3"]
    assert "export globalnet-2 crossnet-run-1/echo-headless" in subctl.calls
    for kube in kubes.values():  # Lighthouse exports ClusterIP Services only: the NodePort is echo-nodeport's
        types = {m["metadata"]["name"]: m["spec"].get("type") for m in kube.applied if m.get("kind") == "Service"}
        assert (types["echo"], types["echo-nodeport"]) == ("ClusterIP", "NodePort") and "remote-echo" not in types
    assert kubes["globalnet-2"].labels == {"globalnet-2-worker": {"submariner.io/gateway": "true"}}
    live = run.cluster_set.cluster("globalnet-2")
    assert (live.global_cidr, live.global_egress[0], live.global_ip("svc/echo")) == ("242.1.0.0/16", "242.1.0.1",
                                                                                    "242.1.0.9")
    assert live.global_ip("pod/agent-worker") == "242.1.0.11"
    # Lighthouse wires clusterset.local into CoreDNS on a real cluster: crossnet leaves the Corefile alone.
    assert kubes["globalnet-1"].configmaps[("kube-system", "coredns")]["Corefile"] == stock_corefile("cluster.local")
    assert not [m for m in kubes["globalnet-1"].applied if m.get("spec", {}).get("type") == "ExternalName"]
    tear_down(run, progress=quiet)


def test_globalnet_on_kind_without_subctl_stops_before_creating_anything(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    kind = FakeKind()
    made = KindProvider(tmp_path / "state", "run-1", kind=kind, nodes=FakeNodes(), progress=quiet,
                        global_cidr="242.0.0.0/8")
    configs = [ROOT / "kind-configs" / f"globalnet-{i}.yaml" for i in (1, 2, 3)]
    with pytest.raises(ProviderError, match=r"subctl is not on PATH.*--provider lab"):
        made.up(load_topology(configs, global_cidr="242.0.0.0/8"))
    assert kind.created == []


def test_kube_agents_take_every_name_from_the_caller_and_assume_no_kind() -> None:
    """What a provider for existing clusters gets: node names, namespace, labels, image and token
    are the caller's; nothing is derived from kind's `<cluster>-<node>`."""
    kube = FakeKube("prod-eu", 0, stock_corefile("cluster.local"))
    nodes = [AgentNode("cp", "ip-10-0-0-1.eu-west-1.compute.internal"),
             AgentNode("w1", "ip-10-0-0-2.eu-west-1.compute.internal")]
    labels = {"app.kubernetes.io/managed-by": "crossnet", "crossnet.io/run": "r9", "team": "net"}
    manifests = agent_manifests("prod-eu", nodes, namespace="netcheck", labels=labels, image="mirror.example/py:3",
                                token="t0ken", archive=b"zipapp", external=[("proxy-to-us", "echo.netcheck.svc.us")])
    apply_agents({"prod-eu": kube}, {"prod-eu": manifests})
    pods = [m for m in kube.applied if m["kind"] == "Pod"]
    assert [(m["metadata"]["name"], m["spec"]["nodeName"]) for m in pods] == [
        ("agent-cp", "ip-10-0-0-1.eu-west-1.compute.internal"), ("host-cp", "ip-10-0-0-1.eu-west-1.compute.internal"),
        ("agent-w1", "ip-10-0-0-2.eu-west-1.compute.internal"), ("host-w1", "ip-10-0-0-2.eu-west-1.compute.internal")]
    assert {c["image"] for m in pods for c in m["spec"]["containers"]} == {"mirror.example/py:3"}
    assert pods[0]["spec"]["containers"][0]["command"][3:5] == ["--id", "prod-eu/cp/agent"]
    assert all(labels.items() <= m["metadata"]["labels"].items() for m in kube.applied)
    assert kube.namespaces["netcheck"] == labels and kube.token("netcheck") == "t0ken"
    assert {m["metadata"].get("namespace") for m in kube.applied if m["kind"] != "Namespace"} == {"netcheck"}
    wait_agents({"prod-eu": kube}, "netcheck", "mirror.example/py:3", timeout=1.0)  # the fake's pods are ready

    live_pods, services = live_agents(kube, "prod-eu", "netcheck", ["cp", "w1"])
    assert [(p.node, p.agent) for p in live_pods] == [("cp", "prod-eu/cp/agent"), ("w1", "prod-eu/w1/agent")]
    assert {s.name: s.type for s in services} == {"echo": "NodePort", NOT_EXPORTED_SERVICE: "ClusterIP",
                                                  "echo-headless": "Headless", "proxy-to-us": "ExternalName"}
    assert next(s for s in services if s.type == "Headless").hostnames == ("agent-cp", "agent-w1")

    client = agent_client({"prod-eu": kube}.__getitem__, "netcheck", "prod-eu/w1/host", "t0ken")
    assert client.pod == "host-w1" and client.probe([{"id": "p"}], 1.0)[0]["id"] == "p"
    assert kube.proxied[-1] == {"X-Crossnet-Token": "t0ken"}
    with pytest.raises(ProviderError, match="agent netcheck/agent-cp: 403"):
        agent_client({"prod-eu": kube}.__getitem__, "netcheck", "prod-eu/cp/agent", "wrong").probe([], 1.0)
