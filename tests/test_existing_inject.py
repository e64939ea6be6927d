"""`--provider existing --plumbing inject`: clusters the user owns, joined the kind way through the
run's debug pods and the coredns ConfigMap, and undone exactly (crossnet/providers/existing/inject.py),
against the fake API server, which grants only what `crossnet rbac --plumbing inject` prints and
keeps each node's routing table (tests/fake_kube.py NodeNet)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from crossnet.lifecycle import Run, bring_up_with, tear_down
from crossnet.model import ClusterSet
from crossnet.plumbing.nodes import plan_masquerade_exceptions
from crossnet.plumbing.routes import plan_peer_routes, plan_service_routes
from crossnet.profile import load_profile
from crossnet.providers.base import ExecTarget, InputError, ProviderError
from crossnet.providers.existing.provider import ExistingProvider
from crossnet.providers.existing.rbac import rbac_yaml, rights
from crossnet.providers.existing.session import discover
from crossnet.providers.existing.settings import ExistingSettings, settings_from_options
from tests.fake_kube import FakeCluster, NodeNet, Rbac

PROFILE = load_profile("flat-routed")
KEEP_POD_IPS = replace(PROFILE.plumbing, masquerade_to_peer_pods=False)  # kindnet's exceptions go in
CONTEXTS = ["cluster-1=ctx-1", "cluster-2=ctx-2"]
COREDNS = "/api/v1/namespaces/kube-system/configmaps"


def quiet(_message: str) -> None:
    pass


class World:
    """Two fake clusters with exactly the rights `crossnet rbac` prints (with or without inject)."""

    def __init__(self, inject_rights: bool = True) -> None:
        rbac = Rbac.from_yaml(rbac_yaml(rights(inject=inject_rights), "User:crossnet"))
        self.clusters = {f"ctx-{i}": FakeCluster(f"ctx-{i}", i, rbac=rbac) for i in (1, 2)}
        for cluster in self.clusters.values():
            cluster.node_net = NodeNet()
        self.originals = {c: self.corefile(c) for c in self.clusters}

    def factory(self, _kubeconfig: str, context: str) -> FakeCluster:
        return self.clusters[context]

    def corefile(self, context: str) -> str:
        return str(self.clusters[context].objects(COREDNS)["coredns"]["data"]["Corefile"])

    def net(self, context: str) -> NodeNet:
        found = self.clusters[context].node_net
        assert found is not None
        return found

    def settings(self, **values: Any) -> ExistingSettings:
        return settings_from_options(
            {"context": CONTEXTS, "kubeconfig": "/dev/null", "plumbing": "inject", **values}, PROFILE
        )

    def provider(self, tmp_path: Path, **values: Any) -> ExistingProvider:
        settings = self.settings(**values)
        found = discover(settings, self.factory, quiet)
        return ExistingProvider(
            tmp_path / "state", "run-1", settings, discovery=found, api_factory=self.factory, progress=quiet
        )

    def bring_up(self, provider: ExistingProvider, plumbing: Any = PROFILE.plumbing) -> Run:
        return bring_up_with(provider, provider._require().topology, "run-1", plumbing, quiet, plumbing_mode="inject")

    def route_commands(self, verb: str) -> list[tuple[str, list[str]]]:
        return [(n, a) for c in self.clusters for n, a in self.net(c).commands if a[:3] == ["ip", "route", verb]]

    def denied(self) -> list[Any]:
        return [d for c in self.clusters.values() for d in c.denied()]

    def writes_outside(self) -> list[Any]:
        return [
            (w.method, w.path)
            for c in self.clusters.values()
            for w in c.writes()
            if w.namespace != "crossnet-run-1" and w.name != "crossnet-run-1"
        ]


def expected_tables(cluster_set: ClusterSet, service_routes: bool = False) -> dict[str, set[str]]:
    """Node name -> the routes the kind way puts there (what kind's lifecycle plans)."""
    handles = {(c.name, n.short): n.handle for c in cluster_set.clusters for n in c.nodes}
    tables: dict[str, set[str]] = {handle: set() for handle in handles.values()}
    routes = plan_peer_routes(cluster_set) + (plan_service_routes(cluster_set) if service_routes else [])
    for route in routes:
        tables[handles[(route.cluster, route.node)]].add(f"{route.destination} via {route.via} dev eth0 proto 77")
    return tables


def tables(world: World) -> dict[str, set[str]]:
    return {node: set(lines) for c in world.clusters for node, lines in world.net(c).routes.items()}


def test_inject_adds_exactly_the_kind_routes_and_forwards_and_undo_restores_everything(tmp_path: Path) -> None:
    world = World()
    provider = world.provider(tmp_path)
    run = world.bring_up(provider)
    cluster_set = run.cluster_set
    wanted = expected_tables(cluster_set)
    assert wanted and all(wanted.values())
    assert tables(world) == wanted  # every sampled node: a route to every peer node's pod CIDR via its InternalIP
    assert all(pod.startswith("debug-") for c in world.clusters.values() for _, pod, _ in c.execs)
    for context, peer in (("ctx-1", cluster_set.cluster("cluster-2")), ("ctx-2", cluster_set.cluster("cluster-1"))):
        patched = world.corefile(context)
        assert patched.startswith(world.originals[context]) and "# crossnet begin run-1" in patched
        assert f"{peer.domain}:53 {{" in patched and f"forward . {' '.join(peer.dns_server_ips)}" in patched
    assert world.denied() == []  # exactly the rights `crossnet rbac --plumbing inject` prints
    assert sorted(set(world.writes_outside())) == [("PUT", f"{COREDNS}/coredns")]
    assert provider.converge_timeout > 0  # a Corefile change is awaited, as on kind

    tear_down(run, progress=quiet)
    assert all(world.corefile(c) == world.originals[c] for c in world.clusters)  # byte for byte
    assert tables(world) == {node: set() for node in wanted}
    added = {(n, tuple(a[3:])) for n, a in world.route_commands("add")}
    removed = {(n, tuple(a[3:])) for n, a in world.route_commands("del")}
    assert added == removed and len(world.route_commands("del")) == len(added)  # exactly the added ones
    assert world.denied() == [] and not provider.state_dir.exists()
    assert all("crossnet-run-1" not in c.objects("/api/v1/namespaces") for c in world.clusters.values())


def test_service_routes_go_in_when_the_profile_asks_as_on_kind(tmp_path: Path) -> None:
    world = World()
    run = world.bring_up(world.provider(tmp_path), replace(PROFILE.plumbing, service_routes=True))
    assert tables(world) == expected_tables(run.cluster_set, service_routes=True)
    tear_down(run, progress=quiet)
    assert not any(tables(world).values())


def test_a_route_already_on_a_node_is_left_as_it_is_and_not_removed(tmp_path: Path) -> None:
    world = World()
    provider = world.provider(tmp_path)
    cluster_set = provider._cluster_set(with_agents=False)
    node = cluster_set.cluster("cluster-1").nodes[0]
    peer = cluster_set.cluster("cluster-2").nodes[0]
    theirs = f"{peer.pod_cidr} via 172.18.9.9 dev eth0 proto static"  # the owner's own route, via another gateway
    world.net("ctx-1").routes[node.handle] = [theirs]
    run = world.bring_up(provider)
    assert theirs in world.net("ctx-1").routes[node.handle]
    assert not [a for n, a in world.route_commands("add") if n == node.handle and a[3] == peer.pod_cidr]
    tear_down(run, progress=quiet)
    assert world.net("ctx-1").routes[node.handle] == [theirs]
    assert not [a for n, a in world.route_commands("del") if n == node.handle and a[3] == peer.pod_cidr]
    assert not any(lines for n, lines in tables(world).items() if n != node.handle)


def test_ctrl_c_while_injecting_undoes_what_was_made(tmp_path: Path) -> None:
    world = World()
    provider = world.provider(tmp_path)
    net = world.net("ctx-2")
    real = net.run
    adds: list[int] = []

    def interrupted(node: str, argv: list[str]) -> tuple[int, str, str]:
        if argv[:3] == ["ip", "route", "add"]:
            adds.append(1)
            if len(adds) == 3:
                raise KeyboardInterrupt  # what SIGTERM becomes too (lifecycle.sigterm_as_interrupt)
        return real(node, argv)

    net.run = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        world.bring_up(provider)
    assert len(adds) >= 3 and world.route_commands("add")  # routes were in (other nodes' threads finish theirs)
    assert not any(tables(world).values())
    assert all(world.corefile(c) == world.originals[c] for c in world.clusters)
    assert not provider.state_dir.exists()


def test_crossnet_down_after_a_kill_undoes_from_the_state_file(tmp_path: Path) -> None:
    """A kill -9 after injecting: `crossnet down` attaches from the state file; the provider's own
    record (written before each change) is enough to undo routes and Corefiles."""
    world = World()
    provider = world.provider(tmp_path)
    world.bring_up(provider)  # ... and the process dies here
    assert any(tables(world).values()) and world.corefile("ctx-1") != world.originals["ctx-1"]
    later = ExistingProvider.attach(provider.state_dir, api_factory=world.factory)
    later.down()
    assert not any(tables(world).values())
    assert all(world.corefile(c) == world.originals[c] for c in world.clusters)
    assert world.denied() == [] and not provider.state_dir.exists()


def test_a_corefile_edited_after_crossnet_is_left_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    world = World()
    run = world.bring_up(world.provider(tmp_path))
    configmap = world.clusters["ctx-1"].objects(COREDNS)["coredns"]
    configmap["data"]["Corefile"] += "# the owner's edit\n"
    edited = world.corefile("ctx-1")
    tear_down(run, progress=quiet)
    assert world.corefile("ctx-1") == edited and world.corefile("ctx-2") == world.originals["ctx-2"]
    kept = tmp_path / "reports" / "existing-run-1" / "corefile-cluster-1-before-crossnet"
    assert kept.read_text() == world.originals["ctx-1"]
    assert "left the Corefile of cluster-1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("where", "value", "said"),
    [
        ("address", "172.18.2.3\nip route flush all", "InternalIP"),
        ("cidr", "10.20.1.5/24", "podCIDR"),
        ("dns", "10.20.0.3 ", "CoreDNS pod"),
    ],
)
def test_an_invalid_api_value_is_one_clear_error_before_any_change(
    tmp_path: Path, where: str, value: str, said: str
) -> None:
    world = World()
    provider = world.provider(tmp_path)
    cluster = world.clusters["ctx-2"]
    deploy = provider.deploy_agents

    def then_corrupt() -> ClusterSet:  # the API says it once the agents run, right before the plumbing
        made = deploy()
        if where == "dns":
            cluster.objects("/api/v1/namespaces/kube-system/pods")["coredns-1"]["status"]["podIP"] = value
        else:
            node = cluster.objects("/api/v1/nodes")["ctx-2-node-1"]
            if where == "address":
                node["status"]["addresses"][0]["address"] = value
            else:
                node["spec"]["podCIDRs"] = [value]
        return made

    provider.deploy_agents = then_corrupt  # type: ignore[method-assign]
    with pytest.raises(ProviderError) as caught:
        world.bring_up(provider)
    message = str(caught.value)
    assert said in message and "nothing was changed" in message and "\n" not in message
    assert world.route_commands("add") == [] and world.route_commands("del") == []
    assert [w for w in world.writes_outside() if w[0] == "PUT"] == []
    assert all(world.corefile(c) == world.originals[c] for c in world.clusters)


def test_missing_exec_rights_are_one_clear_preflight_error(tmp_path: Path) -> None:
    world = World(inject_rights=False)  # what `crossnet rbac` prints without --plumbing inject
    provider = world.provider(tmp_path)
    with pytest.raises(ProviderError, match="pre-flight found") as caught:
        provider.up(provider._require().topology)
    assert "pods/exec" in str(caught.value) and "update configmaps" in str(caught.value)
    assert "--plumbing inject" in str(caught.value)
    assert [w for c in world.clusters.values() for w in c.writes()] == []
    provider.down()


def test_rbac_prints_the_extra_rights_of_inject_only_when_asked() -> None:
    plain = {(r.scope, r.resource, r.verbs, r.names) for r in rights()}
    inject = {(r.scope, r.resource, r.verbs, r.names) for r in rights(inject=True)}
    assert inject - plain == {
        ("run", "pods/exec", ("create", "get"), ()),
        ("kube-system", "configmaps", ("update",), ("coredns",)),
    }
    text = rbac_yaml(rights(inject=True), "User:crossnet")
    assert "--plumbing inject" in text and "pods/exec" in text and "- update" in text
    both = [r for r in rights(inject=True, node_evidence=True) if r.resource == "pods/exec"]
    assert len(both) == 1


def test_plumbing_values_other_than_none_and_inject_are_refused() -> None:
    world = World()
    with pytest.raises(InputError, match="--plumbing 'bgp'"):
        world.settings(plumbing="bgp")
    assert world.settings(plumbing=None).plumbing == "none" and not world.settings(plumbing="none").inject
    settings = world.settings()
    assert settings.inject and ExistingSettings.from_json(settings.to_json()) == settings
    with pytest.raises(InputError, match="malformed"):
        ExistingSettings.from_json({**settings.to_json(), "plumbing": "all"})
    assert settings.images()[-1] == settings.debug_image  # the debug pods run the routes


def test_the_rbac_and_preflight_commands_take_plumbing_inject(capsys: pytest.CaptureFixture[str]) -> None:
    """`crossnet rbac --plumbing inject` prints exec and the Corefile update; without it, neither;
    `crossnet preflight` parses the flag (and refuses an unknown mode)."""
    from crossnet import cli

    assert cli.main(["rbac", "--plumbing", "inject"]) == 0
    injecting = capsys.readouterr().out
    assert cli.main(["rbac"]) == 0
    plain = capsys.readouterr().out
    assert "pods/exec" in injecting and "--plumbing inject" in injecting
    assert "pods/exec" not in plain and "update" not in plain
    with pytest.raises(SystemExit) as refused:
        cli.main(["preflight", "--plumbing", "bgp", "--context", "a=x", "--context", "b=y"])
    assert refused.value.code == 2


# ---------------------------------------------------------- masquerade, conntrack, Corefile race, proto


def masq_rules(world: World, context: str, node: str) -> list[list[str]]:
    return world.net(context).masq.get(node, [])


def test_a_masquerade_rule_crossnet_never_added_is_never_deleted(tmp_path: Path) -> None:
    """Bring-up fails in apply_routes (before any -I): lifecycle still runs every planned undo; an
    identical rule that was there before crossnet stays."""
    world = World()
    provider = world.provider(tmp_path)
    cluster_set = provider._cluster_set(with_agents=False)
    command = plan_masquerade_exceptions(cluster_set)[0]
    handle = cluster_set.cluster(command.cluster).node(command.node).handle
    at = command.apply_argv.index("-I")
    theirs = list(command.apply_argv[at + 3 :])
    world.net("ctx-1").masq[handle] = [theirs]  # e.g. left by an earlier run, or the owner's own
    real = world.net("ctx-2").run

    def refused(node: str, argv: list[str]) -> tuple[int, str, str]:
        if argv[:3] == ["ip", "route", "add"]:
            return 2, "", "RTNETLINK answers: Network is unreachable\n"
        return real(node, argv)

    world.net("ctx-2").run = refused  # type: ignore[method-assign]
    with pytest.raises(ProviderError, match="Network is unreachable"):
        world.bring_up(provider, KEEP_POD_IPS)
    assert world.net("ctx-1").masq[handle] == [theirs]
    deletes = [a for c in world.clusters for _, a in world.net(c).commands if "-D" in a and "KIND-MASQ-AGENT" in a]
    assert deletes == []  # nothing of crossnet's to delete: no -D ran at all


def test_a_masquerade_undo_drops_only_its_own_nodes_entry_and_only_once_the_rule_is_gone(tmp_path: Path) -> None:
    world = World()
    provider = world.provider(tmp_path)
    run = world.bring_up(provider, KEEP_POD_IPS)
    inject = provider._inject
    assert inject is not None
    commands = [c for c in plan_masquerade_exceptions(run.cluster_set) if c.cluster == "cluster-1"]
    first, second = commands[0], next(c for c in commands if c.node != commands[0].node)
    assert first.undo_argv == second.undo_argv  # the same rule on two nodes
    recorded = len(inject.record()["masquerade"])
    assert recorded == len(plan_masquerade_exceptions(run.cluster_set))
    net, real = world.net("ctx-1"), world.net("ctx-1").run
    handle = run.cluster_set.cluster("cluster-1").node(first.node).handle

    def busy(node: str, argv: list[str]) -> tuple[int, str, str]:
        if node == handle and "-D" in argv:
            return 4, "", "iptables: Resource temporarily unavailable.\n"
        return real(node, argv)

    net.run = busy  # type: ignore[method-assign]
    provider.exec(ExecTarget("cluster-1", first.node), list(first.undo_argv))
    assert len(inject.record()["masquerade"]) == recorded  # not gone: still recorded
    net.run = real  # type: ignore[method-assign]
    provider.exec(ExecTarget("cluster-1", second.node), list(second.undo_argv))
    left = [(e["cluster"], e["node"]) for e in inject.record()["masquerade"]]
    assert len(left) == recorded - 1 and ("cluster-1", first.node) in left and ("cluster-1", second.node) not in left
    tear_down(run, progress=quiet)
    assert not any(rules for c in world.clusters for rules in world.net(c).masq.values())


def test_conntrack_is_never_flushed_on_a_users_node_only_flows_to_peer_pods_go(tmp_path: Path) -> None:
    world = World()
    provider = world.provider(tmp_path)
    cluster_set = provider._cluster_set(with_agents=False)
    one, other = cluster_set.cluster("cluster-1").nodes[:2]
    flows = ["10.20.0.5", "10.101.0.10", "10.20.1.7", "8.8.8.8"]  # to cluster-2's pods, a Service, elsewhere
    world.net("ctx-1").flows = {one.handle: list(flows), other.handle: list(flows)}
    world.net("ctx-1").no_masq_chain.add(other.handle)  # not kindnet there: crossnet changes nothing
    run = world.bring_up(provider, KEEP_POD_IPS)
    assert world.net("ctx-1").flows[one.handle] == ["10.101.0.10", "8.8.8.8"]
    assert world.net("ctx-1").flows[other.handle] == flows
    ran = [(n, " ".join(a)) for c in world.clusters for n, a in world.net(c).commands if "conntrack" in " ".join(a)]
    assert ran and not [r for r in ran if "conntrack -F" in r[1]] and other.handle not in {n for n, _ in ran}
    tear_down(run, progress=quiet)
    assert not any(rules for c in world.clusters for rules in world.net(c).masq.values())


def test_a_corefile_edited_after_crossnet_read_it_is_not_overwritten(tmp_path: Path) -> None:
    world = World()
    provider = world.provider(tmp_path)
    read = provider.read_corefile

    def then_edited(cluster: str) -> str:
        text = read(cluster)
        if cluster == "cluster-1":  # the owner's edit lands between crossnet's read and its write
            world.clusters["ctx-1"].objects(COREDNS)["coredns"]["data"]["Corefile"] += "# the owner's edit\n"
        return text

    provider.read_corefile = then_edited  # type: ignore[method-assign]
    with pytest.raises(ProviderError, match="changed after crossnet read its Corefile") as caught:
        world.bring_up(provider)
    assert "\n" not in str(caught.value)
    assert world.corefile("ctx-1") == world.originals["ctx-1"] + "# the owner's edit\n"
    assert [w for w in world.writes_outside() if w[0] == "PUT"] == []  # nothing written, nothing "restored"


def test_a_look_alike_route_added_after_crossnet_is_not_removed(tmp_path: Path) -> None:
    world = World()
    run = world.bring_up(world.provider(tmp_path))
    node, table = next((n, t) for n, t in world.net("ctx-1").routes.items() if t)
    ours = table[0]
    destination, via = ours.split()[0], ours.split()[2]
    table.remove(ours)  # somebody replaced crossnet's route with their own, to the same place
    theirs = f"{destination} via {via} dev eth0"
    table.append(theirs)
    tear_down(run, progress=quiet)
    assert world.net("ctx-1").routes[node] == [theirs]
    assert not any(lines for n, lines in tables(world).items() if n != node)
