"""The existing-clusters provider (crossnet.providers.existing) against tests/fake_kube.py, an API
server that grants exactly what `crossnet rbac` prints and denies the rest: the clusters it is
pointed at, read-only discovery, plumbing none, the footprint of a run, pre-flight, least
privilege, cleanup, and errors that never show a kubeconfig's secrets. No real cluster is
reachable here: the nightly vendor job runs it for real."""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from crossnet.cells import cell_facts
from crossnet.lifecycle import Run, apply_plumbing, tear_down
from crossnet.profile import load_profile
from crossnet.providers.base import ExecTarget, InputError, ProviderError
from crossnet.providers.existing.cli import COMMANDS, add_down_arguments, cmd_down, register_cli
from crossnet.providers.existing.client import ClientKubeApi
from crossnet.providers.existing.discovery import GLOBALNET_CRDS, MCS_CRDS, corefile_domain, range_from_error
from crossnet.providers.existing.provider import EXPIRES, ExistingProvider
from crossnet.providers.existing.sample import short_names
from crossnet.providers.existing.session import Discovery, discover, discovery_record, recorded_topology
from crossnet.providers.existing.settings import ExistingSettings, settings_from_options
from crossnet.providers.select import ProviderSettings, attach_provider, make_provider
from crossnet.suites import build_cells
from tests.fake_kube import FakeCluster, HttpBridge, Rbac, kubeconfig_text

TOKEN = "s3cr3t-TOKEN-never-print-me"
KEY = "S3CR3T-KEY-MATERIAL-never-print-me"
PROFILE = load_profile("flat-routed")
CONTEXTS = ["cluster-1=ctx-1", "cluster-2=ctx-2"]


def quiet(_message: str) -> None:
    pass


def rbac_text(*flags: str) -> str:
    """What `crossnet rbac FLAGS` prints."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert COMMANDS["rbac"](parse(["rbac", *flags])) == 0
    return buffer.getvalue()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    register_cli(sub)
    down = sub.add_parser("down")
    down.add_argument("--all", action="store_true")
    add_down_arguments(down)
    return parser.parse_args(argv)


def run_cli(argv: list[str], factory: Any = None) -> int:
    args = parse(argv)
    handler: Callable[..., int] = cmd_down if args.cmd == "down" else COMMANDS[args.cmd]
    return handler(args, factory) if args.cmd in ("preflight", "discover", "down") else handler(args)


class World:
    """Two fake clusters behind contexts ctx-1 and ctx-2, with exactly `crossnet rbac`'s rights."""

    def __init__(self, *rbac_flags: str, **cluster_kw: Any) -> None:
        rbac = Rbac.from_yaml(rbac_text(*rbac_flags))
        self.clusters = {f"ctx-{i}": FakeCluster(f"ctx-{i}", i, rbac=rbac, **cluster_kw) for i in (1, 2)}

    def factory(self, kubeconfig: str, context: str) -> FakeCluster:
        if context not in self.clusters:
            raise InputError(f"context {context!r} is not in kubeconfig {kubeconfig}")
        return self.clusters[context]

    def settings(self, profile: Any = PROFILE, **values: Any) -> ExistingSettings:
        return settings_from_options({"context": CONTEXTS, "kubeconfig": "/dev/null", **values}, profile)

    def provider(self, tmp_path: Path, run_id: str = "run-1", profile: Any = PROFILE,
                 **values: Any) -> ExistingProvider:
        settings = self.settings(profile, **values)
        found = discover(settings, self.factory, quiet)
        return ExistingProvider(tmp_path / "state", run_id, settings, discovery=found, api_factory=self.factory,
                                progress=quiet, global_cidr=profile.plumbing.global_cidr)

    def writes_outside(self, namespace: str) -> list[Any]:
        return [w for c in self.clusters.values() for w in c.writes()
                if w.namespace != namespace and not (w.resource == "namespaces" and w.name == namespace)]


@pytest.fixture
def world() -> World:
    return World()


def bring_up(provider: ExistingProvider) -> Any:
    provider.up(provider._require().topology)
    return provider.deploy_agents()


# --------------------------------------------------------------------------- 1. which clusters


def test_contexts_and_cluster_set_files_name_the_clusters(tmp_path: Path) -> None:
    settings = settings_from_options({"context": ["a=ctx-a", "b=ctx-b"], "kubeconfig": "/k"})
    assert [(r.name, r.context) for r in settings.clusters] == [("a", "ctx-a"), ("b", "ctx-b")]
    path = tmp_path / "set.yaml"
    path.write_text("name: v\nclusters:\n  - name: c1\n    context: x\n    kubeconfig: c1.kubeconfig\n"
                    "    hints: {domain: c1.local, pod_cidrs: [10.1.0.0/16], service_cidr: 10.2.0.0/16}\n"
                    "  - name: c2\n    context: x\n    kubeconfig: c2.kubeconfig\n")
    refs = settings_from_options({"clusterset": str(path)}).clusters
    assert refs[0].domain == "c1.local" and refs[0].pod_cidrs == ("10.1.0.0/16",) and refs[0].service_cidr
    assert refs[0].kubeconfig == str(tmp_path / "c1.kubeconfig")  # one context name, two kubeconfig files: fine
    for given, wanted in [
        ({"context": ["a=same", "b=same"]}, "both use context 'same' (identical context names"),
        ({"context": ["a=x"]}, "1 cluster(s) given"),
        ({"context": ["a=x", "a=y"]}, "cluster name a is given twice"),
        ({"context": ["A_1=x", "b=y"]}, "is not a DNS-1123 label"),
        ({"context": ["a=x", "b=y"], "clusterset": str(path)}, "not both"),
        ({}, "needs the clusters"),
    ]:
        with pytest.raises(InputError, match=re.escape(wanted)):
            settings_from_options({"kubeconfig": "/k", **given})
    path.write_text("clusters:\n  - name: c1\n    context: x\n    hints: {pod_cidrs: [nope], colour: red}\n")
    with pytest.raises(InputError, match=r"unknown hint .colour.*nope.*not a CIDR"):
        settings_from_options({"clusterset": str(path)})


def test_kubeconfig_defaults_to_KUBECONFIG_then_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/from/env")
    assert settings_from_options({"context": CONTEXTS}).kubeconfig == "/from/env"
    monkeypatch.delenv("KUBECONFIG")
    assert settings_from_options({"context": CONTEXTS}).kubeconfig == str(Path.home() / ".kube" / "config")
    assert settings_from_options({"context": CONTEXTS, "kubeconfig": "/given"}).kubeconfig == "/given"


def test_two_contexts_on_one_cluster_are_one_clear_error() -> None:
    world = World(uid="4b1e2c3d-0000-4000-8000-000000000001")
    with pytest.raises(InputError, match=r"are the same cluster .kube-system UID 4b1e2c3d"):
        discover(world.settings(), world.factory, quiet)


# --------------------------------------------------------------------------- 2. discovery, read-only


def test_discovery_reads_everything_and_writes_nothing(world: World) -> None:
    world.clusters["ctx-1"].store["/apis/apiextensions.k8s.io/v1/customresourcedefinitions"] = {
        n: {"metadata": {"name": n}} for n in ("serviceexports.multicluster.x-k8s.io",
                                              "serviceimports.multicluster.x-k8s.io", "gateways.submariner.io")}
    found = discover(world.settings(), world.factory, quiet)
    one = found.fact("cluster-1")
    assert one.version == "v1.33.1" and one.uid == world.clusters["ctx-1"].uid
    assert [n.internal_ip for n in one.nodes][:2] == ["172.18.1.2", "172.18.1.3"]
    assert one.pod_cidrs == ("10.10.0.0/16",) and one.pod_cidrs_source == "kubeadm-config podSubnet"
    assert one.service_cidrs == ("10.101.0.0/16",) and "ServiceCIDR" in one.service_source
    assert one.domain == "cluster-1.local" and one.cni == "kindnet" and one.kube_proxy == "iptables"
    assert one.multicluster == ("submariner", "mcs") and found.fact("cluster-2").multicluster == ()
    assert one.dns_service_ip == "10.101.0.10" and one.dns_server_ips == ("10.10.0.3", "10.10.0.4")
    assert all(c.writes() == [] and c.denied() == [] for c in world.clusters.values())
    assert found.topology.cluster("cluster-1").dns_domain == "cluster-1.local"


def cidr_probes(world: World) -> list[Any]:
    """The dry-run Services discovery or a run made to learn the service CIDR."""
    return [r for c in world.clusters.values() for r in c.requests
            if r.resource == "services" and r.dry_run and r.name == "crossnet-cidr-probe"]


def hinted_settings(tmp_path: Path, service_cidr: str = "10.77.0.0/16") -> ExistingSettings:
    """A cluster set whose cluster-1 carries a service CIDR hint."""
    path = tmp_path / "hints.yaml"
    path.write_text(f"clusters:\n  - {{name: cluster-1, context: ctx-1, hints: {{service_cidr: {service_cidr}}}}}\n"
                    "  - {name: cluster-2, context: ctx-2}\n")
    return settings_from_options({"clusterset": str(path)})


def test_the_service_cidr_falls_back_kubeadm_then_dry_run_then_hint(tmp_path: Path) -> None:
    """ServiceCIDR objects -> kubeadm-config -> a dry-run Service (its error names the range) -> the
    hint: each source is tried only when the earlier ones give nothing; a hint never beats a source."""
    hinted = hinted_settings(tmp_path)  # the hint (10.77.0.0/16) differs from the cluster's 10.101.0.0/16
    # 1. ServiceCIDR objects: no dry run, the hint only noted
    world = World()
    one = discover(hinted, world.factory, quiet).fact("cluster-1")
    assert (one.service_cidrs, one.service_source) == (("10.101.0.0/16",), "ServiceCIDR objects (networking.k8s.io/v1)")
    assert cidr_probes(world) == [] and any("hint's service CIDR 10.77.0.0/16 differs" in n for n in one.notes)
    # 2. kubeadm-config: no dry run either
    world = World(service_cidr_objects=False)
    one = discover(hinted, world.factory, quiet).fact("cluster-1")
    assert (one.service_cidrs, one.service_source) == (("10.101.0.0/16",), "kubeadm-config serviceSubnet")
    assert cidr_probes(world) == []
    # 3. neither: discovery itself dry-runs a Service (in `default`; nothing stored, nothing denied)
    world = World(service_cidr_objects=False, kubeadm=False)
    found = discover(hinted, world.factory, quiet)
    one = found.fact("cluster-1")
    assert one.service_cidrs == ("10.101.0.0/16",) and one.domain == "cluster-1.local"
    assert "refusal of an out-of-range clusterIP (dry run in namespace default)" in one.service_source
    assert {(r.namespace, r.verb) for r in cidr_probes(world)} == {("default", "create")}
    assert world.writes_outside("") == [] and all(c.denied() == [] for c in world.clusters.values())
    assert found.fact("cluster-2").service_cidrs == ("10.102.0.0/16",)
    # 4. a dry run that names no range (an admission that accepts any clusterIP): the hint, last
    world = World(service_cidr_objects=False, kubeadm=False)
    for cluster in world.clusters.values():
        cluster._allocate = lambda svc, what: None  # type: ignore[method-assign]
    found = discover(hinted, world.factory, quiet)
    assert found.fact("cluster-1").service_cidrs == ("10.77.0.0/16",)
    assert found.fact("cluster-1").service_source == "the cluster set's hint" and len(cidr_probes(world)) == 2
    assert found.fact("cluster-2").service_cidrs == ()  # no hint there
    # 5. no right to create Services in `default` (a --namespace Role only): asked first (nothing
    # denied); the dry run happens in the namespace given -- in a run at the latest -- before the hint
    world = World("--namespace", "crossnet-fixed", service_cidr_objects=False, kubeadm=False)
    for cluster in world.clusters.values():
        cluster._put("/api/v1/namespaces", {"metadata": {"name": "crossnet-fixed", "uid": "u", "labels": {}}})
    settings = world.settings(namespace="crossnet-fixed")
    found = discover(settings, world.factory, quiet)
    one = found.fact("cluster-1")
    assert {r.namespace for r in cidr_probes(world)} <= {"crossnet-fixed"}
    assert all(c.denied() == [] for c in world.clusters.values())
    if not one.service_cidrs:  # discovery was not told the namespace: it says why, and the run does it
        assert any("no right to dry-run a Service in namespace default" in n for n in one.notes)
    provider = ExistingProvider(tmp_path / "s", "run-1", settings, discovery=found, api_factory=world.factory,
                                progress=quiet)
    cluster_set = bring_up(provider)  # in its own namespace: a dry-run Service with an out-of-range clusterIP
    assert cluster_set.cluster("cluster-1").service_subnet == "10.101.0.0/16"
    assert "(dry run in namespace crossnet-fixed)" in provider._require().fact("cluster-1").service_source
    provider.down()
    assert range_from_error("failed to allocate IP 1.2.3.4: ... The range of valid IPs is 10.96.0.0/12") == (
        "10.96.0.0/12",)


def test_nodes_without_pod_cidrs_take_them_from_the_agents(tmp_path: Path) -> None:
    world = World(pod_cidrs=False, cni="calico", kubeadm=False)
    provider = world.provider(tmp_path)
    fact = provider._require().fact("cluster-1")
    assert fact.cni == "calico" and fact.pod_cidrs_source == "Calico IPPools" and fact.domain_source.startswith(
        "the Corefile")
    cluster_set = bring_up(provider)
    node = cluster_set.cluster("cluster-1").nodes[0]
    agent = cluster_set.cluster("cluster-1").pod_on(node.short)
    assert node.pod_cidr == f"{agent.ip}/32"
    provider.down()


def test_the_domain_comes_from_the_corefile_or_the_hint() -> None:
    assert corefile_domain(".:53 {\n kubernetes corp.example in-addr.arpa ip6.arpa\n}\n") == "corp.example"
    world = World(kubeadm=False)
    assert discover(world.settings(), world.factory, quiet).fact("cluster-2").domain == "cluster-2.local"


def test_the_agents_resolv_conf_cross_checks_the_domain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The domain comes from kubeadm-config, else the Corefile, else the hint (the cells need it before
    any agent runs); a run then reads an agent's resolv.conf search list, and a difference is a note
    recorded with the discovery and a warning."""
    world = World()
    provider = world.provider(tmp_path)
    assert provider._require().fact("cluster-1").domain == "cluster-1.local"
    world.clusters["ctx-1"].domain = "corp.example"  # what kubelet hands the pods (the agents' log says it)
    bring_up(provider)
    try:
        notes = provider._require().fact("cluster-1").notes
        assert "the agents' resolv.conf searches corp.example, discovery said cluster-1.local (kubeadm-config " \
               "dnsDomain)" in notes
        assert not any("resolv.conf" in n for n in provider._require().fact("cluster-2").notes)
        assert "cluster-1: the agents' resolv.conf searches corp.example" in capsys.readouterr().err
        assert provider._require().fact("cluster-1").domain == "cluster-1.local"  # the cells keep theirs
    finally:
        provider.down()


def test_one_sampled_node_leaves_a_rule_unused_as_a_note_not_an_error() -> None:
    """`--nodes 1`: the default profile's same-cluster rule decides no cell; that is a note for the
    header (a rule naming a cluster that is not there stays an error)."""
    from crossnet.options import setup_from

    world = World()
    found = discover(world.settings(nodes=1), world.factory, quiet)
    assert all(len(c.nodes) == 1 for c in found.topology.clusters)
    setup = setup_from(found.topology, PROFILE)
    assert setup.cells and len(setup.notes) == 1 and ": rule 5 decides no cell here" in setup.notes[0]


def test_the_topology_is_recorded_so_workers_collect_identical_cells(world: World, tmp_path: Path) -> None:
    provider = world.provider(tmp_path, nodes=2)
    provider.up(provider._require().topology)
    recorded = recorded_topology(provider.state_dir)
    assert recorded == provider._require().topology
    ids = [c.id for c in build_cells(provider._require().topology, PROFILE)]
    assert ids == [c.id for c in build_cells(recorded, PROFILE)] and len(ids) > 100
    attached = attach_provider(provider.state_dir)  # what an xdist worker or --attach gets
    assert isinstance(attached, ExistingProvider) and attached._require().topology == recorded
    record = discovery_record(provider.state_dir)  # for matrix.json and a results bundle
    assert [c["name"] for c in record["clusters"]] == ["cluster-1", "cluster-2"] and record["preflight"]
    assert record["clusters"][0]["domain_source"] == "kubeadm-config dnsDomain"
    provider.down()


def test_nodes_sample_is_deterministic_gateway_first(tmp_path: Path) -> None:
    world = World(nodes=5, gateway="ctx-1-node-3")
    found = discover(world.settings(nodes=2), world.factory, quiet)
    assert [s.node.name for s in found.sampled["cluster-1"]] == ["ctx-1-node-3", "ctx-1-node-0"]
    assert [s.node.name for s in found.sampled["cluster-2"]] == ["ctx-2-node-0", "ctx-2-node-1"]
    assert found == discover(world.settings(nodes=2), world.factory, quiet)
    shorts = short_names(["node-2.ctx-1.example.internal", "plain"])
    assert shorts["plain"] == "plain" and shorts["node-2.ctx-1.example.internal"].startswith("node-2-")


def test_discover_writes_a_cluster_set_and_a_draft_profile(world: World, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    world.clusters["ctx-1"] = FakeCluster("ctx-1", 1, rbac=world.clusters["ctx-1"].rbac,
                                          corefile_forwards={"cluster-2.local": "10.20.0.3"})
    monkeypatch.chdir(tmp_path)
    assert run_cli(["discover", "--context", CONTEXTS[0], "--context", CONTEXTS[1], "--kubeconfig", "/k",
                    "--name", "vendor"], world.factory) == 0
    settings = settings_from_options({"clusterset": "clustersets/vendor.yaml"})
    assert [r.domain for r in settings.clusters] == ["cluster-1.local", "cluster-2.local"]
    draft = load_profile(str(tmp_path / "profiles" / "vendor-draft.yaml"))
    assert dict(draft.requires) == {"cni": ("kindnet",), "kube_proxy": ("iptables",), "multicluster": ("none",)}
    becauses = [r.because for r in draft.rules]
    assert any("cluster-1's Corefile forwards cluster-2.local to 10.20.0.3" in b for b in becauses)
    assert any("cluster-2's Corefile has no server block for cluster-1.local" in b for b in becauses)
    topology = discover(world.settings(), world.factory, quiet).topology
    cells = build_cells(topology, draft)
    assert draft.unused_rules(cell_facts(c) for c in cells) == []  # every rule decides something
    with pytest.raises(InputError, match="exists; pass --force"):
        run_cli(["discover", "--context", CONTEXTS[0], "--context", CONTEXTS[1], "--name", "vendor"], world.factory)


def test_a_profile_pinned_to_another_setup_is_one_error_before_anything(world: World, tmp_path: Path) -> None:
    path = tmp_path / "pinned.yaml"
    path.write_text((Path(PROFILE.source_file).read_text()) + "requires: {cni: calico, kube_proxy: ipvs}\n")
    pinned = load_profile(str(path))
    with pytest.raises(InputError, match=r"requires cni calico; found kindnet .DaemonSet kindnet.*ipvs"):
        discover(world.settings(pinned), world.factory, quiet)
    assert all(c.writes() == [] for c in world.clusters.values())


# --------------------------------------------------------------------------- 3. plumbing none, least privilege


def test_a_run_works_with_exactly_the_printed_rights_and_writes_only_its_namespace(world: World,
                                                                                  tmp_path: Path) -> None:
    provider = world.provider(tmp_path)
    cluster_set = bring_up(provider)
    agent = f"cluster-1/{cluster_set.cluster('cluster-1').nodes[0].short}/agent"
    assert provider.agent_client(agent).probe([{"id": "p", "protocol": "tcp"}], 2.0)[0]["reached"]  # type: ignore[typeddict-item]
    assert "apiVersion: v1" not in provider.read_corefile("cluster-1") and "kubernetes" in provider.read_corefile(
        "cluster-1")
    provider.down()
    assert all(c.denied() == [] for c in world.clusters.values()), [c.denied() for c in world.clusters.values()]
    assert world.writes_outside("crossnet-run-1") == []
    assert {w.verb for c in world.clusters.values() for w in c.writes()} == {"create", "delete"}
    for method, path in [("PUT", "/api/v1/namespaces/kube-system/configmaps/coredns"),
                         ("DELETE", "/api/v1/nodes/ctx-1-node-0"), ("GET", "/api/v1/namespaces/kube-system/secrets"),
                         ("DELETE", "/api/v1/namespaces/kube-system/pods/coredns-0")]:
        with pytest.raises(ProviderError, match="403 Forbidden"):  # the fake really denies what was not granted
            world.clusters["ctx-1"].request(method, path, body={"metadata": {"name": "x"}})


def test_plumbing_none_refuses_every_change_outside_the_namespace(world: World, tmp_path: Path) -> None:
    provider = world.provider(tmp_path)
    cluster_set = bring_up(provider)
    before = len(world.writes_outside("crossnet-run-1"))
    for call in (lambda: provider.apply_routes([]), lambda: provider.write_corefile("cluster-1", "x"),
                 lambda: provider.kube("cluster-1").write_configmap_key("kube-system", "coredns", "Corefile", "x"),
                 lambda: provider.kube("cluster-1").label_node("n", {"a": "b"}),
                 lambda: apply_plumbing(provider, cluster_set, "run-1")):
        with pytest.raises(ProviderError, match=r"never|no route|provider is not"):
            call()
    provider.apply_routes_undo([])  # teardown's call with nothing recorded is fine
    tear_down(Run(provider, cluster_set, owned=True), progress=quiet)
    assert world.writes_outside("crossnet-run-1") == [] and before == 0


def test_globalnet_exports_in_its_namespace_and_reads_the_global_ips(tmp_path: Path) -> None:
    globalnet = load_profile("globalnet")
    world = World("--profile", "globalnet", globalnet=True, crds=[*GLOBALNET_CRDS, *MCS_CRDS],
                  domain="cluster.local", pod_subnet="10.244.0.0/16", service_cidr="10.96.0.0/16")
    served = {"ctx-1": ["v1alpha1"], "ctx-2": ["v1beta1", "v1alpha1"]}  # each cluster's MCS API, by discovery
    for context, fake in world.clusters.items():
        fake.api_resources = {f"multicluster.x-k8s.io/{v}": ["serviceexports", "serviceimports"]
                              for v in served[context]}
    provider = world.provider(tmp_path, profile=globalnet)
    cluster_set = bring_up(provider)  # identical CIDRs and domains: fine under Globalnet
    two = cluster_set.cluster("cluster-2")
    assert two.global_cidr == "242.1.0.0/16" and two.global_ip("svc/echo") == "242.1.1.1"
    assert len(two.global_egress) == 8 and len([k for k, _ in two.global_ingress if k.startswith("pod/")]) == 3
    exports = world.clusters["ctx-1"].objects(
        "/apis/multicluster.x-k8s.io/v1alpha1/namespaces/crossnet-run-1/serviceexports")
    assert sorted(exports) == ["echo", "echo-headless"]
    for fake in world.clusters.values():  # Lighthouse exports ClusterIP Services only: the NodePort moves
        objects = fake.objects("/api/v1/namespaces/crossnet-run-1/services")
        services = {n: o["spec"].get("type") for n, o in objects.items()}
        assert (services["echo"], services["echo-nodeport"]) == ("ClusterIP", "NodePort")
        assert "remote-echo" not in services
    assert sorted(world.clusters["ctx-2"].objects(  # the version the cluster serves, not a hard-coded v1alpha1
        "/apis/multicluster.x-k8s.io/v1beta1/namespaces/crossnet-run-1/serviceexports")) == ["echo", "echo-headless"]
    provider.down()
    assert all(c.denied() == [] for c in world.clusters.values()) and world.writes_outside("crossnet-run-1") == []
    assert "serviceexports" not in rbac_text()  # only an MCS or Globalnet profile gets that right


def test_rbac_prints_cluster_read_and_run_rights_and_only_what_options_need(tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(rbac_text()) if d]
    kinds = [(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in docs]
    assert ("ClusterRole", "crossnet-discovery", None) in kinds
    assert ("Role", "crossnet-discovery", "kube-system") in kinds
    text = rbac_text()
    assert "pods/proxy" in text and "pods/exec" not in text and "serviceexports" not in text
    assert "pods/exec" in rbac_text("--node-evidence")
    mcs = tmp_path / "mcs.yaml"
    mcs.write_text(Path(PROFILE.source_file).read_text() + "requires: {multicluster: mcs}\n")
    assert "serviceexports" in rbac_text("--profile", str(mcs))
    fixed = [d for d in yaml.safe_load_all(rbac_text("--namespace", "team-net")) if d]
    role = next(d for d in fixed if d["kind"] == "Role" and d["metadata"].get("namespace") == "team-net")
    assert {"pods", "pods/proxy", "services", "configmaps"} <= {r for rule in role["rules"] for r in rule["resources"]}
    assert not any(d["metadata"]["name"] == "crossnet-namespaces" for d in fixed)
    cluster_rules = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("discovery"))
    assert all(set(rule["verbs"]) <= {"get", "list"} for rule in cluster_rules["rules"])  # cluster-wide: read only


def test_a_missing_right_stops_the_run_at_preflight_with_nothing_created(tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(rbac_text()) if d]
    for doc in docs:  # take pods/proxy away
        for rule in doc.get("rules") or []:
            rule["resources"] = [r for r in rule["resources"] if r != "pods/proxy"]
    world = World()
    for cluster in world.clusters.values():
        cluster.rbac = Rbac(docs)
    provider = world.provider(tmp_path)
    with pytest.raises(ProviderError, match=r"(?s)blocking.*may create pods/proxy.*denied: create"):
        provider.up(provider._require().topology)
    provider.down()
    assert all(c.writes() == [] for c in world.clusters.values())


def test_a_run_in_a_given_namespace_needs_only_a_role_there(tmp_path: Path) -> None:
    world = World("--namespace", "team-net")
    for cluster in world.clusters.values():
        cluster._put("/api/v1/namespaces", {"metadata": {"name": "team-net", "labels": {}}})
        cluster._put("/api/v1/namespaces/team-net/configmaps", {"metadata": {"name": "theirs", "labels": {}}})
    provider = world.provider(tmp_path, namespace="team-net")
    bring_up(provider)
    provider.down()
    one = world.clusters["ctx-1"]
    assert one.objects("/api/v1/namespaces").get("team-net") is not None  # not ours: kept
    assert one.namespace_objects("team-net") == ["/api/v1/namespaces/team-net/configmaps/theirs"]
    assert all(c.denied() == [] for c in world.clusters.values())
    assert world.writes_outside("team-net") == []


# --------------------------------------------------------------------------- 4. footprint


def test_one_labelled_namespace_with_a_ttl_agents_pinned_nodeport_allocated(world: World, tmp_path: Path) -> None:
    provider = world.provider(tmp_path, image_pull_secret=["mirror"], node_selector=["kubernetes.io/os=linux"],
                              agent_image="registry.local/python:3-slim", toleration=["dedicated=net:NoSchedule"])
    cluster_set = bring_up(provider)
    one = world.clusters["ctx-1"]
    namespace = one.objects("/api/v1/namespaces")["crossnet-run-1"]["metadata"]
    assert namespace["labels"] == {"app.kubernetes.io/managed-by": "crossnet", "crossnet.io/run": "run-1"}
    assert EXPIRES in namespace["annotations"]
    assert [n for n in one.store if "/namespaces/crossnet-" in n and n.split("/")[4] != "crossnet-run-1"] == []
    pods = one.objects("/api/v1/namespaces/crossnet-run-1/pods")
    assert sorted(p["spec"]["nodeName"] for p in pods.values()) == sorted(one.node_ips)
    assert not any(p["spec"].get("hostNetwork") for p in pods.values())  # host vantages are opt-in
    spec = next(iter(pods.values()))["spec"]
    assert spec["imagePullSecrets"] == [{"name": "mirror"}] and spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "net", "effect": "NoSchedule"}]
    assert spec["containers"][0]["image"] == "registry.local/python:3-slim"
    assert spec["securityContext"]["runAsNonRoot"] and spec["containers"][0]["securityContext"]["capabilities"] == {
        "drop": ["ALL"]}
    echo = one.objects("/api/v1/namespaces/crossnet-run-1/services")["echo"]
    allocated = echo["spec"]["ports"][0]["nodePort"]
    assert allocated != 30080
    assert cluster_set.cluster("cluster-1").service("echo", "crossnet-run-1").node_port == allocated
    assert provider.skip_reason("cluster-1", "host") == (
        "host vantages are opt-in on clusters crossnet did not make: pass --host-vantage")
    with pytest.raises(ProviderError, match="--host-vantage"):
        provider.agent_client(f"cluster-1/{cluster_set.cluster('cluster-1').nodes[0].short}/host")
    provider.down()


@pytest.mark.parametrize(("kw", "reason"), [
    ({}, None),
    ({"deny_privileged_namespaces": True}, "a privileged namespace is refused (403 admission webhook"),
    ({"deny_host_network": True}, "hostNetwork pods are refused here (403 admission webhook"),
])
def test_host_vantages_are_skipped_with_the_reason_where_refused(tmp_path: Path, kw: dict[str, Any],
                                                                 reason: str | None) -> None:
    world = World(psa_default="baseline", **kw)
    provider = world.provider(tmp_path, host_vantage=True)
    bring_up(provider)
    pods = world.clusters["ctx-1"].objects("/api/v1/namespaces/crossnet-run-1/pods")
    got = provider.skip_reason("cluster-1", "host")
    assert (got is None) == (reason is None) and (reason is None or got.startswith(reason)), got
    assert any(p["spec"].get("hostNetwork") for p in pods.values()) == (reason is None)
    assert attach_provider(provider.state_dir).skip_reason("cluster-1", "host") == got  # what a worker sees
    provider.down()


def test_the_agents_meet_pod_security_restricted(tmp_path: Path) -> None:
    world = World(psa_default="restricted")
    provider = world.provider(tmp_path)
    bring_up(provider)  # a restricted cluster default admits them
    provider.down()


def test_images_lists_every_image_a_run_pulls(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["images"]) == 0
    assert capsys.readouterr().out.split() == ["python:3-slim"]
    run_cli(["images", "--node-evidence", "--agent-image", "m/p:3", "--debug-image", "m/netshoot:1"])
    assert capsys.readouterr().out.split() == ["m/p:3", "m/netshoot:1"]


def test_node_evidence_runs_in_debug_pods_only_when_asked(tmp_path: Path) -> None:
    world = World("--node-evidence")
    provider = world.provider(tmp_path, node_evidence=True)
    cluster_set = bring_up(provider)
    node = cluster_set.cluster("cluster-1").nodes[1].short
    assert provider.node_host("cluster-1", node).run("ip route").rc == 0
    assert world.clusters["ctx-1"].execs[-1][1] == f"debug-{node}"
    provider.down()
    plain = World().provider(tmp_path / "p")
    bring_up(plain)
    with pytest.raises(ProviderError, match="needs --node-evidence"):
        plain.exec(ExecTarget("cluster-1", node), ["ip", "r"])
    plain.down()


# --------------------------------------------------------------------------- 5. pre-flight


def test_preflight_table_json_and_exit_code_and_nothing_written(world: World,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["preflight", "--context", CONTEXTS[0], "--context", CONTEXTS[1], "--kubeconfig", "/k"]
    assert run_cli(argv, world.factory) == 0
    table = capsys.readouterr().out
    assert "may create/get/list pods in crossnet-preflight" in table and "0 blocking" in table
    assert "dry-run namespace" in table and "CIDR overlap" in table
    assert all(c.writes() == [] for c in world.clusters.values())
    assert any(r.dry_run for r in world.clusters["ctx-1"].requests)
    world.clusters["ctx-2"]._put("/api/v1/namespaces", {"metadata": {"name": "crossnet-old", "labels": {
        "app.kubernetes.io/managed-by": "crossnet", "crossnet.io/run": "old"}}})
    overlap = World(service_cidr="10.99.0.0/16", pod_subnet="10.50.0.0/16")
    assert run_cli([*argv, "--json"], overlap.factory) == 1
    rows = json.loads(capsys.readouterr().out)["rows"]
    failing = [r for r in rows if r["status"] == "fail"]
    assert {r["check"] for r in failing} == {"cluster domains", "CIDR overlap"} or any(
        "overlaps" in r["detail"] for r in failing)
    assert all(r["fix"] for r in failing)
    assert run_cli(argv, world.factory) == 0
    assert "earlier runs' namespaces: crossnet-old" in capsys.readouterr().out


def test_preflight_reports_missing_crds_and_rights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = World()
    for cluster in world.clusters.values():
        cluster.rbac = Rbac([])
    globalnet = ["--profile", "globalnet"]
    code = run_cli(["preflight", "--context", CONTEXTS[0], "--context", CONTEXTS[1], *globalnet], world.factory)
    out = capsys.readouterr().out
    assert code == 1 and "denied" in out and "fix: grant it: `crossnet rbac" in out and "kubectl --context ctx-1" in out
    world = World()
    run_cli(["preflight", "--context", CONTEXTS[0], "--context", CONTEXTS[1], *globalnet], world.factory)
    assert "missing: clusterglobalegressips.submariner.io" in capsys.readouterr().out


# --------------------------------------------------------------------------- 6. cleanup


def test_teardown_deletes_the_namespace_on_ctrl_c_too(world: World, tmp_path: Path) -> None:
    provider = world.provider(tmp_path)
    provider.up(provider._require().topology)
    original = world.clusters["ctx-2"]._admit_pod
    calls: list[int] = []

    def interrupted(pod: dict[str, Any], namespace: str, what: str) -> None:
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        original(pod, namespace, what)

    world.clusters["ctx-2"]._admit_pod = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        provider.deploy_agents()
    provider.down()  # what tear_down and bring_up_with call
    assert all("crossnet-run-1" not in c.objects("/api/v1/namespaces") for c in world.clusters.values())
    assert not provider.state_dir.exists()


def test_keep_keeps_and_down_by_label_removes_only_crossnets(world: World, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    provider = world.provider(tmp_path, keep=True)
    bring_up(provider)
    provider.down()
    assert "--keep: left namespace crossnet-run-1" in capsys.readouterr().err
    one = world.clusters["ctx-1"]
    assert "crossnet-run-1" in one.objects("/api/v1/namespaces")
    one._put("/api/v1/namespaces", {"metadata": {"name": "crossnet-lookalike", "labels": {}}})
    half = {"name": "half", "labels": {"app.kubernetes.io/managed-by": "crossnet"}}  # no run label: not a run's
    one._put("/api/v1/namespaces", {"metadata": half})
    argv = ["down", "--context", CONTEXTS[0], "--context", CONTEXTS[1]]
    with pytest.raises(InputError, match="--run-id R, --expired or --all"):
        run_cli(argv, world.factory)
    assert run_cli([*argv, "--run-id", "other"], world.factory) == 0
    assert "crossnet-run-1" in one.objects("/api/v1/namespaces")
    assert run_cli([*argv, "--run-id", "run-1"], world.factory) == 0
    assert "crossnet-run-1" not in one.objects("/api/v1/namespaces")
    assert run_cli([*argv, "--all"], world.factory) == 0
    assert {"crossnet-lookalike", "half", "default", "kube-system"} <= set(one.objects("/api/v1/namespaces"))


def test_a_same_named_namespace_that_is_not_ours_is_never_adopted_nor_deleted(world: World, tmp_path: Path) -> None:
    for cluster in world.clusters.values():
        cluster._put("/api/v1/namespaces", {"metadata": {"name": "crossnet-run-1", "labels": {"team": "x"}}})
    provider = world.provider(tmp_path, skip_preflight=True)
    with pytest.raises(ProviderError, match="already exists and is not this run's"):
        bring_up(provider)
    provider.down()
    assert all("crossnet-run-1" in c.objects("/api/v1/namespaces") for c in world.clusters.values())


def test_provider_settings_and_state_round_trip(world: World, tmp_path: Path) -> None:
    settings = world.settings(nodes=2, toleration=["*"], node_selector=["kubernetes.io/os=linux"])
    found = discover(settings, world.factory, quiet)
    made = make_provider("existing", tmp_path / "s", "run-2", ProviderSettings(existing=found))
    assert isinstance(made, ExistingProvider) and made.settings == settings
    assert ExistingSettings.from_json(json.loads(json.dumps(settings.to_json()))) == settings
    assert Discovery.from_json(settings, json.loads(json.dumps(found.to_json()))) == found
    with pytest.raises(InputError, match="needs the clusters"):
        make_provider("existing", tmp_path / "t", "run-3", ProviderSettings())


# --------------------------------------------------------------------------- 7. errors and secrets


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[tuple[Path, World, list[HttpBridge]]]:
    world = World()
    bridges = [HttpBridge(world.clusters[c], TOKEN) for c in ("ctx-1", "ctx-2")]
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig_text({"ctx-1": (bridges[0].url, TOKEN), "ctx-2": (bridges[1].url, TOKEN),
                                     "dead": ("http://127.0.0.1:1", TOKEN)}))
    yield path, world, bridges
    for bridge in bridges:
        bridge.close()


def test_the_real_client_runs_against_the_fake_over_http(kubeconfig: tuple[Path, World, list[HttpBridge]],
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    path, world, bridges = kubeconfig
    caplog.set_level(logging.DEBUG)
    argv = ["preflight", "--context", CONTEXTS[0], "--context", CONTEXTS[1], "--kubeconfig", str(path)]
    assert run_cli(argv) == 0, capsys.readouterr().out
    settings = settings_from_options({"context": CONTEXTS, "kubeconfig": str(path)}, PROFILE)
    found = discover(settings, progress=quiet)
    provider = ExistingProvider(tmp_path / "s", "run-h", settings, discovery=found, progress=quiet)
    cluster_set = bring_up(provider)
    agent = f"cluster-2/{cluster_set.cluster('cluster-2').nodes[0].short}/agent"
    assert provider.agent_client(agent).probe([{"id": "x", "protocol": "udp"}], 2.0)[0]["reached"]  # type: ignore[typeddict-item]
    provider.down()
    assert f"Bearer {TOKEN}" in bridges[0].seen_auth  # the token was sent ...
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err + caplog.text  # ... and never shown
    assert world.writes_outside("crossnet-run-h") == [] and all(c.denied() == [] for c in world.clusters.values())


def test_errors_are_one_clear_line_without_secrets(kubeconfig: tuple[Path, World, list[HttpBridge]], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    path, _, _ = kubeconfig
    caplog.set_level(logging.DEBUG)
    messages = []
    with pytest.raises(InputError) as missing:
        ClientKubeApi(str(path), "nope")
    messages.append(str(missing.value))
    assert "context 'nope' is not in kubeconfig" in messages[-1] and "it has: ctx-1, ctx-2, dead" in messages[-1]
    with pytest.raises(InputError) as absent:
        ClientKubeApi(str(tmp_path / "absent"), "ctx-1")
    messages.append(str(absent.value))
    assert "not found; pass --kubeconfig PATH or set KUBECONFIG" in messages[-1]
    broken = tmp_path / "broken"
    broken.write_text(path.read_text().replace("contexts:", "contexts: [\n") + f"\n# {TOKEN}\n")
    with pytest.raises(InputError) as bad:
        ClientKubeApi(str(broken), "ctx-1")
    messages.append(str(bad.value))
    assert "cannot be read" in messages[-1]
    with pytest.raises(ProviderError) as dead:
        ClientKubeApi(str(path), "dead").request("GET", "/version", timeout=2)
    messages.append(str(dead.value))
    assert "dead: the API server cannot be reached" in messages[-1] and "kubectl --context dead version" in messages[-1]
    wrong = tmp_path / "wrong-token"
    wrong.write_text(path.read_text().replace(TOKEN, "expired-" + TOKEN[::-1]))
    with pytest.raises(ProviderError) as refused:
        ClientKubeApi(str(wrong), "ctx-1").request("GET", "/version")
    messages.append(str(refused.value))
    assert "401" in messages[-1] and "refresh them" in messages[-1]
    key = base64.b64encode(f"-----BEGIN PRIVATE KEY-----\n{KEY}\n-----END PRIVATE KEY-----\n".encode()).decode()
    doc = yaml.safe_load(path.read_text())
    doc["clusters"].append({"name": "certs", "cluster": {"server": "https://127.0.0.1:1"}})
    doc["users"].append({"name": "certs", "user": {"client-certificate-data": key, "client-key-data": key}})
    doc["contexts"].append({"name": "certs", "context": {"cluster": "certs", "user": "certs"}})
    certs = tmp_path / "certs"
    certs.write_text(yaml.safe_dump(doc))
    with pytest.raises(ProviderError) as bad_key:
        ClientKubeApi(str(certs), "certs").request("GET", "/version", timeout=2)
    messages.append(str(bad_key.value))
    second = tmp_path / "second"
    second.write_text(path.read_text())
    with pytest.raises(InputError) as twice:
        ClientKubeApi(f"{path}{os.pathsep}{second}", "ctx-1")
    messages.append(str(twice.value))
    assert "context 'ctx-1' is in both" in messages[-1] and "rename-context" in messages[-1]
    assert run_cli(["preflight", "--context", "d=dead", "--kubeconfig", str(path)]) == 1
    out = capsys.readouterr()
    assert "API server cannot be reached" in out.out
    assert all("\n" not in m for m in messages)  # each error is one line
    for text in [*messages, out.out, out.err, caplog.text]:
        assert TOKEN not in text and TOKEN[::-1] not in text and KEY not in text


def test_the_example_cluster_sets_load() -> None:
    from tests.conftest import ROOT

    pair = settings_from_options({"clusterset": str(ROOT / "clustersets" / "kind-pair.yaml"), "kubeconfig": "/k"})
    assert [(r.name, r.context, r.domain) for r in pair.clusters] == [
        ("cluster-1", "kind-cluster-1", "cluster-1.com"), ("cluster-2", "kind-cluster-2", "cluster-2.com")]
    example = settings_from_options({"clusterset": str(ROOT / "clustersets" / "example.yaml")})
    assert example.kubeconfig == str(Path("~/.kube/config").expanduser())
    assert example.clusters[1].kubeconfig == str(ROOT / "clustersets" / "west.kubeconfig")


def test_every_cell_of_the_matrix_resolves_on_the_cluster_set(world: World, tmp_path: Path) -> None:
    """The suites' cells (built from the discovered topology) find their agents, Services and the
    allocated NodePort in this provider's cluster set; host-vantage cells are the ones to skip."""
    from crossnet.runner import SuiteRunner

    provider = world.provider(tmp_path, nodes=2)
    cluster_set = bring_up(provider)
    cells = [c for c in build_cells(provider._require().topology, PROFILE) if c.suite in ("pod-to-pod", "service")]
    judged = SuiteRunner(cluster_set, provider.agent_client, 1.0).judge_cells(cells)
    errors = {i for i, j in judged.items() if j.observation.error == "agent-error"}
    host = {c.id for c in cells if provider.skip_reason(c.vantage.cluster, c.vantage.kind)}
    assert host and errors == host == {c.id for c in cells if c.vantage.kind == "host"}
    assert all("--host-vantage" in judged[i].observation.detail for i in host)
    provider.down()


def test_preflight_in_a_given_namespace_dry_runs_the_pods_there(capsys: pytest.CaptureFixture[str]) -> None:
    world = World("--namespace", "team-net", "--node-evidence")
    for cluster in world.clusters.values():
        cluster._put("/api/v1/namespaces", {"metadata": {"name": "team-net", "labels": {
            "pod-security.kubernetes.io/enforce": "baseline"}}})
    argv = ["preflight", "--context", CONTEXTS[0], "--context", CONTEXTS[1], "--namespace", "team-net",
            "--host-vantage", "--node-evidence"]
    assert run_cli(argv, world.factory) == 0  # warnings only: the host vantages and debug pods are refused
    table = capsys.readouterr().out
    assert "dry-run agent pod" in table and "a dry-run create is accepted" in table
    assert "enforces pod security baseline" in table and "dry-run hostNetwork pod" in table
    assert "violates PodSecurity" in table and "dry-run debug pod" in table
    assert all(c.writes() == [] and c.denied() == [] for c in world.clusters.values())


def test_the_lifecycle_with_plumbing_none_brings_up_attaches_and_tears_down(world: World, tmp_path: Path) -> None:
    from crossnet.lifecycle import attach, bring_up_with

    provider = world.provider(tmp_path)
    run = bring_up_with(provider, provider._require().topology, "run-1", PROFILE.plumbing, quiet, plumbing_mode="none")
    worker = attach(provider.state_dir)  # what an xdist worker does
    assert worker.cluster_set == run.cluster_set and worker.owned is False
    tear_down(run, progress=quiet)
    assert all("crossnet-run-1" not in c.objects("/api/v1/namespaces") for c in world.clusters.values())
    assert world.writes_outside("crossnet-run-1") == [] and all(c.denied() == [] for c in world.clusters.values())
    assert not provider.state_dir.exists()


def test_the_shared_options_parse_into_settings() -> None:
    """crossnet.options carries the flags (pytest and `crossnet up` declare them from there)."""
    from crossnet.options import OPTIONS, add_options
    from crossnet.providers.existing.flags import OPTION_SPECS
    from crossnet.providers.existing.settings import option_values

    parser = argparse.ArgumentParser()
    add_options(parser.add_argument, "--agent-image", *OPTION_SPECS)
    assert set(OPTION_SPECS) <= set(OPTIONS)
    args = parser.parse_args(["--context", "a=x", "--context", "b=y", "--nodes", "2", "--host-vantage",
                              "--toleration", "*", "--agent-image", "mirror/python:3", "--kubeconfig", "/k"])
    settings = settings_from_options(option_values(lambda dest: getattr(args, dest)))
    assert settings.nodes == 2 and settings.host_vantage and settings.tolerations == ({"operator": "Exists"},)
    assert settings.images() == ["mirror/python:3"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--nodes", "0"])


def test_pytest_suites_collects_the_discovered_clusters_without_writing(
    kubeconfig: tuple[Path, World, list[HttpBridge]], tmp_path: Path
) -> None:
    """`pytest suites/ --provider existing --context … --plumbing none`: the plugin discovers the
    clusters once (read-only) and builds the cells from them; listing them writes nothing anywhere.
    Without --plumbing (the option's default is kind's "inject") it refuses: crossnet changes nothing
    outside its namespace unless `--plumbing inject` is given explicitly (tests/test_existing_inject.py)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    path, world, _ = kubeconfig
    argv = [sys.executable, "-m", "pytest", "suites/test_pod_to_pod.py", "--collect-only", "-q", "-p",
            "no:cacheprovider", "--provider", "existing", "--kubeconfig", str(path), "--plumbing", "none",
            "--reports", str(tmp_path / "reports")]
    for context in CONTEXTS:
        argv += ["--context", context]
    listed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stdout[-3000:] + listed.stderr[-2000:]
    ids = [line for line in listed.stdout.splitlines() if "::test_pod_to_pod[" in line]
    assert ids and all("cluster-1/" in i or "cluster-2/" in i for i in ids), listed.stdout[-1500:]
    assert any("->cluster-2/" in i and "pod:cluster-1/" in i for i in ids)
    assert TOKEN not in listed.stdout + listed.stderr
    assert world.writes_outside("") == [] and all(c.denied() == [] for c in world.clusters.values())
    at = argv.index("--plumbing")
    default = subprocess.run([*argv[:at], *argv[at + 2:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert default.returncode != 0 and "--plumbing none" in default.stdout + default.stderr
    assert "--plumbing inject" in default.stdout + default.stderr
    other = subprocess.run([*argv[:at], "--plumbing", "bgp", *argv[at + 2:]], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert other.returncode != 0 and "invalid choice" in other.stderr
    inject = subprocess.run([*argv[:at], "--plumbing", "inject", *argv[at + 2:]], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert inject.returncode == 0 and "::test_pod_to_pod[" in inject.stdout, inject.stdout[-2000:] + inject.stderr
    assert world.writes_outside("") == [] and all(c.denied() == [] for c in world.clusters.values())


def test_node_facts_are_skipped_with_the_reason_without_node_evidence(world: World, tmp_path: Path) -> None:
    """Without --node-evidence crossnet runs nothing on a vendor's nodes: the plumbing suite skips
    node facts, saying why (it does not fail them); other providers are not affected."""
    from crossnet import existing_mode

    provider = world.provider(tmp_path, "run-n")
    bring_up(provider)
    try:
        why = existing_mode.node_facts_refused(provider, "cluster-1")
        assert why and "--node-evidence" in why
        assert existing_mode.node_facts_refused(object(), "cluster-1") is None
    finally:
        provider.down()


# --------------------------------------------------------------------------- Multi-Cluster Services


MCS_GROUP = "multicluster.x-k8s.io"


def mcs_world(served: dict[str, list[str]], namespace: str = "crossnet-run-1") -> tuple[World, dict[str, Any]]:
    """Two fake clusters with exactly `crossnet rbac --profile mcs-karmada`'s rights, the MCS API in the versions
    `served` (context -> versions), CoreDNS reading ServiceImports itself on ctx-2 (its multicluster plugin,
    granted by system:coredns) and Lighthouse acting on ctx-1's exports (tests/test_mcs_api.StrictLighthouse)."""
    from tests.test_mcs_api import STOCK, StrictLighthouse, rbac

    world = World("--profile", "mcs-karmada", crds=list(MCS_CRDS))
    one, two = world.clusters["ctx-1"], world.clusters["ctx-2"]
    for context, fake in world.clusters.items():
        fake.api_resources = {f"{MCS_GROUP}/{v}": ["serviceexports", "serviceimports"] for v in served[context]}
    corefile = two.objects("/api/v1/namespaces/kube-system/configmaps")["coredns"]["data"]
    corefile["Corefile"] += "clusterset.local:53 {\n    multicluster clusterset.local\n}\n"
    grant = {"apiGroups": [MCS_GROUP], "resources": ["serviceimports"], "verbs": ["list", "watch"]}
    rbac(two, [STOCK, grant])
    apis = {"ctx-1": StrictLighthouse(one, [(two, served["ctx-2"][0]), (one, served["ctx-1"][0])],
                                      lambda n: one.objects(f"/api/v1/namespaces/{namespace}/services").get(n),
                                      served["ctx-1"][0]),
            "ctx-2": two}
    return world, apis


def test_an_mcs_run_exports_discovers_the_version_and_needs_exactly_the_rights_crossnet_rbac_prints(
        tmp_path: Path) -> None:
    """Under an MCS profile on existing clusters: the first cluster's echo (ClusterIP: Lighthouse refuses a
    NodePort export; its NodePort on echo-nodeport), echo-headless and remote-echo (there only) exported in the
    version discovery finds (v1beta1 here), the ServiceImports awaited in the other cluster, CoreDNS's grant
    read there -- with exactly the rights `crossnet rbac --profile mcs-karmada` prints, nothing denied."""
    profile = load_profile("mcs-karmada")
    world, apis = mcs_world(served={"ctx-1": ["v1beta1", "v1alpha1"], "ctx-2": ["v1alpha1"]})
    settings = world.settings(profile)
    assert settings.mcs  # an MCS profile needs the MCS API (CRDs, rights), without a `requires:`
    found = discover(settings, lambda _k, c: apis[c], quiet)
    provider = ExistingProvider(tmp_path / "state", "run-1", settings, discovery=found,
                                api_factory=lambda _k, c: apis[c], progress=quiet, mcs=profile.plumbing.mcs)
    cluster_set = bring_up(provider)
    one, two = world.clusters["ctx-1"], world.clusters["ctx-2"]
    assert [r for c in world.clusters.values() for r in c.denied()] == []
    ns = "crossnet-run-1"
    assert sorted(one.objects(f"/apis/{MCS_GROUP}/v1beta1/namespaces/{ns}/serviceexports")) == [
        "echo", "echo-headless", "remote-echo"]
    assert not one.objects(f"/apis/{MCS_GROUP}/v1alpha1/namespaces/{ns}/serviceexports")
    assert not two.objects(f"/apis/{MCS_GROUP}/v1alpha1/namespaces/{ns}/serviceexports")
    services = {n: o["spec"] for n, o in one.objects(f"/api/v1/namespaces/{ns}/services").items()}
    assert services["echo"]["type"] == "ClusterIP" and services["echo-nodeport"]["type"] == "NodePort"
    assert services["remote-echo"]["type"] == "ClusterIP"
    assert "remote-echo" not in two.objects(f"/api/v1/namespaces/{ns}/services")
    node_port = {p["nodePort"] for p in services["echo-nodeport"]["ports"]}
    assert {cluster_set.cluster("cluster-1").service("echo", ns).node_port} == node_port  # the node-port cells
    recorded = provider.state.read()["existing"]["mcs"]
    assert recorded["version"] == "v1beta1" and recorded["cluster"] == "cluster-1"
    assert sorted(recorded["imported"]["cluster-2"]) == ["echo", "echo-headless", "remote-echo"]
    assert recorded["coredns"] == {"cluster-2": "granted"}  # its ClusterRole read with crossnet's rights
    exported = {s.name: s.cluster_ip for s in cluster_set.cluster("cluster-1").services}
    for cluster in ("cluster-1", "cluster-2"):  # what clusterset.local must answer: the import's IPs, else the
        expected = {  # exporter's ClusterIP (Lighthouse without a clusterset IP); the exporter sees the same
            (n, ip) for n, i in recorded["imported"]["cluster-2"].items() if i["type"] == "ClusterSetIP"
            for ip in (i["ips"] or [exported[n]])}
        assert set(cluster_set.cluster(cluster).clusterset_ips) == expected
        assert {n for n, _ in expected} == {"echo", "remote-echo"}
    provider.down()
    assert [r for c in world.clusters.values() for r in c.denied()] == []
    assert world.writes_outside(ns) == []


def test_an_mcs_profile_gets_the_mcs_rights_and_others_do_not() -> None:
    text = rbac_text("--profile", "mcs-karmada")
    for resource in ("serviceexports", "serviceimports", "clusterroles", "clusterrolebindings"):
        assert resource in text and resource not in rbac_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    rules = [r for d in docs if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]]
    exports = next(r for r in rules if r["resources"] == ["serviceexports"])
    assert set(exports["verbs"]) == {"create", "get", "delete"}
    assert next(r for r in rules if r["resources"] == ["serviceimports"])["verbs"] == ["get", "list"]
    coredns = next(r for r in rules if r["resources"] == ["deployments"])
    assert coredns["resourceNames"] == ["coredns"] and coredns["verbs"] == ["get"]
    discovery = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "crossnet-discovery")
    assert all(set(rule["verbs"]) <= {"get", "list"} for rule in discovery["rules"])  # cluster-wide: still read only
