"""The bgp topology on the kind provider (crossnet.providers.kind.calico) against fakes of kubectl,
docker and the kubernetes API: the Calico objects of each profile, the switch's bird.conf, the
enterprise DNS's forward zones, the run's containers and routes, every change recorded before it is
made, teardown, and the errors. Only the nightly run (`kind-calico-bgp`) runs Calico, BIRD and unbound."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from crossnet.config import load_topology
from crossnet.lifecycle import bring_up_with
from crossnet.plumbing.bgp import BgpSpeaker, bird_conf
from crossnet.plumbing.routes import RouteChange
from crossnet.profile import BgpPlumbing
from crossnet.providers.base import ProviderError
from crossnet.providers.kind.calico import (
    CALICO_MANIFEST_URL,
    CALICO_VERSION,
    CalicoBgp,
    KubectlCli,
    calico_manifest,
    calico_objects,
)
from crossnet.providers.kind.kube import RUN_LABEL, KubePod
from crossnet.providers.kind.nodes import kind_node_name
from crossnet.providers.kind.provider import KindProvider, create
from crossnet.providers.lab.topology import stock_corefile
from crossnet.providers.select import ProviderSettings
from tests.test_kind_provider import ROOT, FakeKind, FakeKube, FakeNodes, quiet

TOPOLOGY = load_topology([ROOT / "kind-configs" / "bgp-1.yaml", ROOT / "kind-configs" / "bgp-2.yaml"])
FLAT, SVC, KEEP = BgpPlumbing(), BgpPlumbing(advertise_service_ips=True), BgpPlumbing(keep_source=True)
SELECTOR = "crossnet.io/bgp-ingress == 'true'"
CONTAINERS = ["crossnet-run-1-tor", "crossnet-run-1-host", "crossnet-run-1-dns"]
MANIFEST = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: ippools.crd.projectcalico.org}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: calico-config, namespace: kube-system}
data: {calico_backend: bird}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: calico-node, namespace: kube-system, labels: {k8s-app: calico-node}}
spec:
  template:
    spec:
      initContainers: [{name: install-cni, image: calico/cni}]
      containers:
        - name: calico-node
          image: docker.io/calico/node:v3.28.2
          env: [{name: CALICO_NETWORKING_BACKEND, value: bird}, {name: NO_DEFAULT_POOLS, value: "false"}]
---
"""


class StateCheck:
    """Reads the provider's state file: each fake asserts its change is recorded there before it is made."""

    def __init__(self, state_dir: Path) -> None:
        self.path, self.checked = state_dir / "state.json", 0

    def calico(self) -> dict[str, Any]:
        self.checked += 1
        data: dict[str, Any] = json.loads(self.path.read_text()).get("calico") or {}
        return data


class CalicoKube(FakeKube):
    """A kind cluster without a CNI: calico-node pods appear once kubectl created the manifest; the
    nodes carry the kind config's labels; Calico's block affinities are not kind's podCIDRs."""

    def __init__(self, name: str, index: int, check: StateCheck, options: dict[str, Any]) -> None:
        super().__init__(name, index, stock_corefile(f"{name}.com"))
        self.check, self.calico_ready = check, options.get("calico_ready", True)
        self.calico_installed = options.get("preinstalled", False)
        for node in TOPOLOGY.cluster(name).nodes:
            self.labels[kind_node_name(name, node.short)] = dict(node.labels)
        for node in options.get("unlabelled", ()):  # a config without the label: crossnet labels it
            self.labels.pop(node, None)

    def pods(self, namespace: str, selector: str) -> list[KubePod]:
        if selector == "k8s-app=calico-node":
            reason = "" if self.calico_ready else "CrashLoopBackOff"
            return [KubePod(f"calico-node-{i}", n.name, n.internal_ip, self.calico_ready, "Running", reason)
                    for i, n in enumerate(self._nodes)] if self.calico_installed else []
        return super().pods(namespace, selector)

    def label_node(self, name: str, labels: dict[str, str | None]) -> None:
        if self.check.path.exists():
            assert name in [x["node"] for x in self.check.calico().get("labels", [])], f"label of {name} unrecorded"
        super().label_node(name, labels)

    def custom_objects(self, group: str, version: str, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        if plural == "blockaffinities":
            return [{"spec": {"node": n.name, "cidr": f"10.3{self.index}.{7 + i}.0/24", "state": "confirmed"}}
                    for i, n in enumerate(self._nodes)]
        return super().custom_objects(group, version, plural, namespace)


class FakeKubectl:
    def __init__(self, kubes: dict[str, CalicoKube], check: StateCheck) -> None:
        self.kubes, self.check = kubes, check
        self.calls: list[tuple[str, str, list[str]]] = []

    def _recorded(self, kubeconfig: Path, manifests: list[dict[str, Any]]) -> str:
        cluster = kubeconfig.name.removeprefix("kubeconfig-")
        recorded = self.check.calico()["objects"][cluster]
        for m in manifests:
            where = {k: v for k, v in m["metadata"].items() if k in ("name", "namespace")}
            ref = {"apiVersion": m["apiVersion"], "kind": m["kind"], "metadata": where}
            assert ref in recorded, f"{m['kind']} {m['metadata']['name']} unrecorded"
        return cluster

    def create(self, kubeconfig: Path, manifests: list[dict[str, Any]]) -> None:
        cluster = self._recorded(kubeconfig, manifests)
        self.calls.append(("create", cluster, [m["kind"] for m in manifests]))
        self.kubes[cluster].calico_installed = True

    def apply(self, kubeconfig: Path, manifests: list[dict[str, Any]]) -> None:
        cluster = self._recorded(kubeconfig, manifests)
        self.calls.append(("apply", cluster, [m["kind"] for m in manifests]))
        self.kubes[cluster].applied += manifests

    def wait_established(self, kubeconfig: Path, crds: list[str], timeout: float) -> None:
        self.calls.append(("wait", kubeconfig.name.removeprefix("kubeconfig-"), crds))

    def delete(self, kubeconfig: Path, refs: list[dict[str, Any]]) -> None:
        self.calls.append(("delete", kubeconfig.name.removeprefix("kubeconfig-"), [r["kind"] for r in refs]))


class FakeDocker:
    """The run's containers (and anybody else's) on kind's network; files written and scripts run."""

    def __init__(self, check: StateCheck, never_ready: str = "") -> None:
        self.check, self.never_ready = check, never_ready
        self.containers: dict[str, dict[str, Any]] = {}
        self.removed: list[str] = []

    def add(self, name: str, labels: dict[str, str]) -> None:
        self.containers[name] = {"labels": labels, "ip": "172.18.0.99", "files": {}, "scripts": []}

    def run(self, name: str, command: list[str], labels: dict[str, str], sysctls: dict[str, str]) -> str:
        assert name in [c["name"] for c in self.check.calico()["containers"]], f"container {name} unrecorded"
        ip = f"172.18.0.{100 + len(self.containers)}"
        self.containers[name] = {"labels": labels, "ip": ip, "files": {}, "scripts": [], "command": command,
                                 "sysctls": sysctls}
        return ip

    def exec(self, name: str, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]:
        if name not in self.containers:
            raise ProviderError(f"docker exec in {name} failed: NotFound")
        box = self.containers[name]
        if argv[:2] == ["test", "-f"]:
            return (1 if name == self.never_ready else 0), "", ""
        if len(argv) == 6 and "base64 -d" in argv[2]:
            box["files"][argv[5]] = base64.b64decode(argv[4]).decode()
        else:
            box["scripts"].append(argv[2])
        return 0, "", ""

    def labels(self, name: str) -> dict[str, str] | None:
        return dict(self.containers[name]["labels"]) if name in self.containers else None

    def remove(self, name: str) -> None:
        self.removed.append(name)
        del self.containers[name]


class RecordedNodes(FakeNodes):
    def __init__(self, check: StateCheck) -> None:
        super().__init__()
        self.check = check

    def apply_routes(self, changes: list[RouteChange]) -> None:
        recorded = [RouteChange(**r) for r in self.check.calico()["node_routes"]]
        assert all(c in recorded for c in changes), "node routes unrecorded"
        super().apply_routes(changes)


def bgp_provider(tmp_path: Path, bgp: BgpPlumbing = FLAT, kind: FakeKind | None = None, never_ready: str = "",
                 **options: Any) -> tuple[KindProvider, dict[str, Any]]:
    check = StateCheck(tmp_path / "state")
    kubes: dict[str, CalicoKube] = {}

    def factory(name: str, path: Path) -> CalicoKube:
        kubes.setdefault(name, CalicoKube(name, int(name.split("-")[1]) - 1, check, options))
        return kubes[name]

    kubectl, docker, nodes = FakeKubectl(kubes, check), FakeDocker(check, never_ready), RecordedNodes(check)
    calico = CalicoBgp(kubectl, docker)
    calico.fetch, calico.timeout, calico.pause = lambda: MANIFEST, 0.3, 0.01
    made = KindProvider(tmp_path / "state", "run-1", kind=kind or FakeKind(), nodes=nodes, kube_factory=factory,
                        progress=quiet, logs_dir=tmp_path / "logs", bgp=bgp, calico=calico,
                        reuse=bool(kind and kind.existing))
    made.converge_timeout = 2.0
    return made, {"kubes": kubes, "kubectl": kubectl, "docker": docker, "nodes": nodes, "check": check}


def objects_by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


# ------------------------------------------------------------------------------------ the objects, as data


@pytest.mark.parametrize(("bgp", "service_ips", "disabled"), [
    (FLAT, None, []), (SVC, [{"cidr": "10.130.0.0/16"}], []), (KEEP, None, ["10.31.0.0/16"])])
def test_the_calico_objects_of_each_profile(bgp: BgpPlumbing, service_ips: Any, disabled: list[str]) -> None:
    objects = calico_objects(TOPOLOGY, "bgp-1", bgp, "172.18.0.100", "run-1")
    pools = objects_by_kind(objects, "IPPool")
    assert pools[0]["spec"] == {"cidr": "10.30.0.0/16", "blockSize": 24, "ipipMode": "Never", "vxlanMode": "Never",
                                "natOutgoing": True}
    assert [p["spec"]["cidr"] for p in pools[1:]] == disabled
    assert all(p["spec"]["disabled"] is True and p["spec"]["natOutgoing"] is False for p in pools[1:])
    [config] = objects_by_kind(objects, "BGPConfiguration")
    assert config["metadata"]["name"] == "default" and config["spec"]["asNumber"] == 64513
    assert config["spec"]["nodeToNodeMeshEnabled"] is True and config["spec"].get("serviceClusterIPs") == service_ips
    [peer] = objects_by_kind(objects, "BGPPeer")
    assert peer["spec"] == {"peerIP": "172.18.0.100", "asNumber": 65200, "nodeSelector": SELECTOR}
    assert all(o["apiVersion"] == "crd.projectcalico.org/v1" and o["metadata"]["labels"][RUN_LABEL] == "run-1"
               for o in objects)
    # the second cluster: its own AS, its own pools, the first cluster's podSubnet as the peer pool
    second = calico_objects(TOPOLOGY, "bgp-2", BgpPlumbing(switch_as=65001, keep_source=True), "172.18.0.9", "r")
    assert objects_by_kind(second, "BGPConfiguration")[0]["spec"]["asNumber"] == 64514
    assert [p["spec"]["cidr"] for p in objects_by_kind(second, "IPPool")] == ["10.31.0.0/16", "10.30.0.0/16"]
    assert objects_by_kind(second, "BGPPeer")[0]["spec"]["asNumber"] == 65001


def test_the_manifest_is_pinned_and_calico_node_makes_no_default_pool() -> None:
    url = f"https://raw.githubusercontent.com/projectcalico/calico/{CALICO_VERSION}/manifests/calico.yaml"
    assert url == CALICO_MANIFEST_URL
    assert CALICO_VERSION.startswith("v3.28.")
    objects = calico_manifest(MANIFEST, "run-1")
    assert [o["kind"] for o in objects] == ["CustomResourceDefinition", "ConfigMap", "DaemonSet"]
    env = objects[2]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == "NO_DEFAULT_POOLS"] == [{"name": "NO_DEFAULT_POOLS", "value": "true"}]
    assert objects[2]["metadata"]["labels"] == {"k8s-app": "calico-node", "app.kubernetes.io/managed-by": "crossnet",
                                                RUN_LABEL: "run-1"}
    with pytest.raises(ProviderError, match="no calico-node container"):
        calico_manifest(MANIFEST.replace("name: calico-node\n", "name: other\n"), "run-1")


# ------------------------------------------------------------------------------------ bring-up and teardown


@pytest.mark.parametrize("bgp", [FLAT, SVC, KEEP])
def test_bring_up_installs_calico_runs_the_switch_and_the_office_and_tears_down(tmp_path: Path,
                                                                                bgp: BgpPlumbing) -> None:
    made, fakes = bgp_provider(tmp_path, bgp)
    docker, kubectl, nodes, kubes = fakes["docker"], fakes["kubectl"], fakes["nodes"], fakes["kubes"]
    docker.add("somebody-elses-bird", {"team": "net"})
    cluster_set = made.up(TOPOLOGY)
    tor, host, dns = (docker.containers[n] for n in CONTAINERS)
    assert {n: c["labels"][RUN_LABEL] for n, c in docker.containers.items() if n in CONTAINERS} == dict.fromkeys(
        CONTAINERS, "run-1")
    assert "bird2" in tor["command"][2] and "unbound" in dns["command"][2]
    assert tor["sysctls"]["net.ipv4.ip_forward"] == "1" and host["sysctls"] == {}
    # the switch peers with exactly the ingress nodes (the workers labelled in the configs), AS of each cluster
    conf = tor["files"]["/crossnet/bird.conf"]
    assert conf == bird_conf(BgpSpeaker("tor", tor["ip"], 65200, peers=(("172.18.0.3", 64513), ("172.18.0.6", 64514))))
    assert "neighbor 172.18.0.3 as 64513" in conf and "neighbor 172.18.0.4 " not in conf
    assert tor["scripts"] == ["bird -c /crossnet/bird.conf -s /run/crossnet-bird.ctl"]
    # the enterprise DNS forwards each cluster domain to that cluster's CoreDNS pods
    unbound = dns["files"]["/crossnet/unbound.conf"]
    assert f"interface: {dns['ip']}" in unbound
    assert 'name: "bgp-1.com"\n  forward-addr: 10.10.0.3\n  forward-addr: 10.10.0.4' in unbound
    assert 'name: "bgp-2.com"\n  forward-addr: 10.20.0.3\n  forward-addr: 10.20.0.4' in unbound
    # the office reaches the pod CIDRs (and the service CIDRs under -svc) through the switch
    services = ["10.130.0.0/16", "10.131.0.0/16"] if bgp.advertise_service_ips else []
    wanted = ["10.30.0.0/16", "10.31.0.0/16", *services]
    assert host["scripts"][0] == " && ".join(f"ip route replace {d} via {tor['ip']}" for d in wanted)
    assert dns["scripts"][0] == host["scripts"][0]
    # every node reaches the office through the switch, and the kind provider adds no route of its own
    expected = {f"{host['ip']}/32 via {tor['ip']}", f"{dns['ip']}/32 via {tor['ip']}"}
    assert len(nodes.routes) == 6 and all(routes == expected for routes in nodes.routes.values())
    # Calico: the manifest created, its CRDs awaited, then crossnet's objects, on each cluster
    assert [(op, cluster) for op, cluster, _ in kubectl.calls] == [
        ("create", "bgp-1"), ("wait", "bgp-1"), ("apply", "bgp-1"), ("create", "bgp-2"), ("wait", "bgp-2"),
        ("apply", "bgp-2")]
    applied = [m for m in kubes["bgp-2"].applied if m["kind"] == "BGPPeer"]
    assert applied[0]["spec"] == {"peerIP": tor["ip"], "asNumber": 65200, "nodeSelector": SELECTOR}
    assert kubes["bgp-1"].configmaps[("kube-system", "coredns")]["Corefile"] == stock_corefile("bgp-1.com")
    assert fakes["check"].checked == 8  # 3 containers, 2 creates, 2 applies, the node routes: each checked first

    made.down()
    assert sorted(docker.removed) == sorted(CONTAINERS) and list(docker.containers) == ["somebody-elses-bird"]
    assert [op for op, _, _ in kubectl.calls].count("delete") == 0  # created clusters are deleted whole
    assert cluster_set.cluster("bgp-1").node("worker").ip == "172.18.0.3"


def test_pod_cidrs_are_calicos_blocks_not_kinds_pod_cidr(tmp_path: Path) -> None:
    made, _ = bgp_provider(tmp_path)
    made.up(TOPOLOGY)
    live = made.deploy_agents().cluster("bgp-2")
    assert [n.pod_cidr for n in live.nodes] == ["10.31.7.0/24", "10.31.8.0/24", "10.31.9.0/24"]
    made.down()


def test_calico_not_ready_is_a_clear_error_and_everything_is_undone(tmp_path: Path) -> None:
    kind = FakeKind()
    made, fakes = bgp_provider(tmp_path, kind=kind, calico_ready=False)
    with pytest.raises(ProviderError) as caught:
        bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    message = str(caught.value)
    assert "Calico did not become ready within 0s" in message
    assert "bgp-1: 0/3 calico-node pods ready (CrashLoopBackOff)" in message and "bgp-2: 0/3" in message
    assert "-n kube-system get pods -l k8s-app=calico-node" in message
    assert "docker exec crossnet-run-1-tor birdc -s /run/crossnet-bird.ctl show protocols" in message
    assert sorted(fakes["docker"].removed) == sorted(CONTAINERS) and sorted(kind.deleted) == ["bgp-1", "bgp-2"]


def test_an_office_container_that_never_gets_its_packages_is_named(tmp_path: Path) -> None:
    made, fakes = bgp_provider(tmp_path, never_ready="crossnet-run-1-tor")
    with pytest.raises(ProviderError, match=r"crossnet-run-1-tor did not install its packages.*docker logs"):
        bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    assert fakes["docker"].containers == {} and fakes["kubectl"].calls == []  # stopped before Calico


def test_clusters_already_running_calico_are_refused_before_anything_is_made(tmp_path: Path) -> None:
    made, fakes = bgp_provider(tmp_path, preinstalled=True)
    with pytest.raises(ProviderError, match="Calico is already installed on bgp-1, bgp-2"):
        bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    assert fakes["docker"].containers == {} and fakes["kubectl"].calls == []


def test_reused_clusters_get_calico_routes_and_labels_undone(tmp_path: Path) -> None:
    kind = FakeKind(existing=("bgp-1", "bgp-2"))
    made, fakes = bgp_provider(tmp_path, kind=kind, unlabelled=["bgp-2-worker"])
    made.up(TOPOLOGY)
    assert fakes["kubes"]["bgp-2"].labels["bgp-2-worker"] == {"crossnet.io/bgp-ingress": "true"}
    assert fakes["check"].calico()["labels"] == [{"cluster": "bgp-2", "node": "bgp-2-worker", "previous": None}]
    made.down()
    deletes = [(cluster, kinds) for op, cluster, kinds in fakes["kubectl"].calls if op == "delete"]
    assert [c for c, _ in deletes] == ["bgp-1", "bgp-2"]
    assert deletes[0][1][:4] == ["IPPool", "BGPConfiguration", "BGPPeer", "CustomResourceDefinition"]
    assert "crossnet.io/bgp-ingress" not in fakes["kubes"]["bgp-2"].labels.get("bgp-2-worker", {})
    assert all(not routes for routes in fakes["nodes"].routes.values()) and kind.deleted == []
    assert sorted(fakes["docker"].removed) == sorted(CONTAINERS)


def test_teardown_removes_only_the_runs_own_containers(tmp_path: Path) -> None:
    made, fakes = bgp_provider(tmp_path)
    made.up(TOPOLOGY)
    docker = fakes["docker"]
    docker.containers["crossnet-run-1-dns"]["labels"][RUN_LABEL] = "run-2"  # somebody else's, by its label
    docker.add("postgres", {})
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    state["calico"]["containers"].append({"role": "tor", "name": "postgres"})  # a tampered state file
    (tmp_path / "state" / "state.json").write_text(json.dumps(state))
    with pytest.raises(ProviderError) as caught:
        made.down()
    assert "left container 'postgres'" in str(caught.value) and "its label crossnet.io/run is 'run-2'" in str(
        caught.value)
    assert sorted(docker.removed) == ["crossnet-run-1-host", "crossnet-run-1-tor"]
    assert sorted(docker.containers) == ["crossnet-run-1-dns", "postgres"]


def test_create_passes_the_profiles_bgp_to_the_provider(tmp_path: Path) -> None:
    made = create(tmp_path / "state", "run-1", ProviderSettings(bgp=KEEP))
    assert made.bgp == KEEP and create(tmp_path / "s2", "run-1", ProviderSettings()).bgp is None


def test_without_kubectl_the_bgp_topology_stops_before_creating_anything(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ProviderError, match="kubectl is not on PATH"):
        KubectlCli()
    kind = FakeKind()
    made = KindProvider(tmp_path / "state", "run-1", kind=kind, nodes=FakeNodes(), progress=quiet, bgp=FLAT,
                        calico=CalicoBgp(docker=FakeDocker(StateCheck(tmp_path))))
    with pytest.raises(ProviderError, match=r"kubectl is not on PATH.*--provider lab"):
        made.up(TOPOLOGY)
    assert kind.created == [] and not (tmp_path / "state").exists()


def test_the_bgp_configs_label_one_ingress_worker_per_cluster() -> None:
    """What the switch peers with and the BGPPeer selects comes from the configs' node labels."""
    for n in (1, 2):
        config = yaml.safe_load((ROOT / "kind-configs" / f"bgp-{n}.yaml").read_text())
        labelled = [node for node in config["nodes"] if (node.get("labels") or {}).get("crossnet.io/bgp-ingress")]
        assert [node["role"] for node in labelled] == ["worker"] and config["networking"]["disableDefaultCNI"]
