"""The kind provider is safe to run as root (issue "Safe to run as root"), against the fakes of
tests/test_kind_provider.py: teardown deletes only the namespace this run made, a same-named
object that is not ours is an error (never adopted), what --reuse changed (gateway labels,
Submariner) is undone and a Corefile somebody edited after crossnet is left alone, kubeconfigs
are 0600 whatever the umask, and the agents are locked down (no capabilities but NET_RAW, a
per-run token on every control request, no NetworkPolicy that would drop ICMP probes)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crossnet.config import load_topology
from crossnet.lifecycle import bring_up_with, tear_down
from crossnet.providers.base import ProviderError
from crossnet.providers.kind.kube import ApiKubeCluster
from crossnet.providers.kind.provider import KindProvider
from crossnet.providers.lab.topology import stock_corefile
from tests.test_kind_provider import ROOT, TOPOLOGY, FakeKind, FakeKube, FakeNodes, FakeSubctl, provider, quiet

OURS = {"app.kubernetes.io/managed-by": "crossnet", "crossnet.io/run": "run-1"}


def state_of(made: KindProvider) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((made.state_dir / "state.json").read_text())
    return data


def set_state(made: KindProvider, **fields: Any) -> None:
    made.state.update(**fields)


# --------------------------------------------------------------------------- 1. the namespace teardown deletes


@pytest.mark.parametrize(("namespace", "labels"), [
    ("kube-system", {"kubernetes.io/metadata.name": "kube-system"}),  # a state file naming somebody else's
    ("crossnet-run-1", {"app.kubernetes.io/managed-by": "crossnet", "crossnet.io/run": "run-0"}),  # another run's
    ("crossnet-run-1", {"crossnet.io/run": "run-1"}),  # the run label alone is not crossnet's mark
])
def test_teardown_deletes_only_a_namespace_carrying_this_runs_labels(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], namespace: str, labels: dict[str, str]) -> None:
    made, kubes, _ = provider(tmp_path, FakeKind(existing=("cluster-1", "cluster-2")), reuse=True)
    run = bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    kubes["cluster-1"].namespaces[namespace] = labels
    set_state(made, namespace=namespace)
    tear_down(run, progress=quiet)
    assert "crossnet-run-1" not in kubes["cluster-1"].deleted_namespaces
    assert namespace in kubes["cluster-1"].namespaces and kubes["cluster-1"].deleted_namespaces == []
    err = capsys.readouterr().err
    assert f"warning: left namespace {namespace} on cluster cluster-1" in err
    assert "crossnet.io/run=run-1" in err and "this run did not make it" in err


def test_teardown_deletes_the_namespace_this_run_made(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made, kubes, _ = provider(tmp_path, FakeKind(existing=("cluster-1", "cluster-2")), reuse=True)
    run = bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    assert kubes["cluster-1"].namespaces["crossnet-run-1"] == OURS
    tear_down(run, progress=quiet)
    assert kubes["cluster-1"].deleted_namespaces == ["crossnet-run-1"] and "warning" not in capsys.readouterr().err


# --------------------------------------------------------------------------- 2. 409 Conflict is not adoption


class FakeResponse:
    def __init__(self, payload: dict[str, Any]) -> None:
        self.data = json.dumps(payload).encode()
        self.status, self.reason = 200, "OK"

    def read(self) -> bytes:
        return self.data


class FakeApiClient:
    """What ApiKubeCluster reads an existing object through, shaped like the installed kubernetes
    client (>= 35): `param_serialize` then `call_api(method, url, ...)`, a response with a status."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.paths: list[str] = []

    def param_serialize(self, method: str, resource_path: str, **_kwargs: Any) -> tuple[str, str, dict[str, str]]:
        return method, resource_path, {}

    def call_api(self, method: str, url: str, header_params: Any = None, **_kwargs: Any) -> FakeResponse:
        self.paths.append(f"{method} {url}")
        return FakeResponse({"metadata": {"name": url.rsplit("/", 1)[1], "labels": self.labels}})


@pytest.fixture
def conflicting(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every create answers 409 Conflict, as the API server does for a same-named object."""
    from kubernetes import utils
    from kubernetes.client.exceptions import ApiException

    def create_from_dict(_api: Any, _manifest: dict[str, Any]) -> None:
        raise utils.FailToCreateError([ApiException(status=409, reason="Conflict")])  # type: ignore[no-untyped-call,unused-ignore]

    monkeypatch.setattr(utils, "create_from_dict", create_from_dict)
    yield


def api_kube(labels: dict[str, str]) -> tuple[ApiKubeCluster, FakeApiClient]:
    api = FakeApiClient(labels)
    return ApiKubeCluster("cluster-1", "", api=api), api  # no kubeconfig: only the API client is faked


CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "crossnet-agent",
             "namespace": "crossnet-run-1", "labels": OURS}, "data": {}}
POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "crossnet-agent-control",
          "namespace": "crossnet-run-1", "labels": OURS}, "spec": {}}


@pytest.mark.usefixtures("conflicting")
def test_a_409_on_an_object_that_is_not_this_runs_is_an_error_naming_it_and_the_fix() -> None:
    kube, api = api_kube({"team": "payments"})
    with pytest.raises(ProviderError) as caught:
        kube.apply([CONFIGMAP])
    message = str(caught.value)
    assert "cluster-1: ConfigMap crossnet-run-1/crossnet-agent already exists and is not this run's" in message
    assert "kubectl --context kind-cluster-1 delete configmap -n crossnet-run-1 crossnet-agent" in message
    assert api.paths == ["GET /api/v1/namespaces/crossnet-run-1/configmaps/crossnet-agent"]
    kube, _ = api_kube({"app.kubernetes.io/managed-by": "crossnet", "crossnet.io/run": "run-0"})  # another run's
    with pytest.raises(ProviderError, match=r"crossnet\.io/run=run-1"):
        kube.apply([CONFIGMAP])


@pytest.mark.usefixtures("conflicting")
def test_a_409_on_this_runs_own_object_is_a_re_apply() -> None:
    kube, api = api_kube(OURS)
    kube.apply([CONFIGMAP, POLICY])
    assert api.paths[1] == ("GET /apis/networking.k8s.io/v1/namespaces/crossnet-run-1/networkpolicies/"
                            "crossnet-agent-control")


def test_a_namespace_already_there_stops_bring_up_and_teardown_leaves_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kind = FakeKind(existing=("cluster-1", "cluster-2"))
    made, kubes, _ = provider(tmp_path, kind, reuse=True)
    made.up(TOPOLOGY)
    kubes["cluster-1"].namespaces["crossnet-run-1"] = {"team": "payments"}
    with pytest.raises(ProviderError, match=r"cluster-1: Namespace crossnet-run-1 already exists and is not"):
        made.deploy_agents()
    made.down()
    assert kubes["cluster-1"].namespaces["crossnet-run-1"] == {"team": "payments"}
    assert kubes["cluster-1"].deleted_namespaces == []
    assert "left namespace crossnet-run-1 on cluster cluster-1" in capsys.readouterr().err


# --------------------------------------------------------------------------- 3. what --reuse changed is undone

GLOBALNET = [ROOT / "kind-configs" / f"globalnet-{i}.yaml" for i in (1, 2, 3)]


def globalnet_provider(tmp_path: Path, kind: FakeKind, gateway_before: dict[str, str] | None = None,
                       submariner_on: str = "") -> tuple[KindProvider, dict[str, FakeKube], FakeSubctl]:
    kubes: dict[str, FakeKube] = {}

    def factory(name: str, path: Path) -> FakeKube:
        kubes[name] = FakeKube(name, int(name.split("-")[1]) - 1, stock_corefile("cluster.local"))
        for node, value in (gateway_before or {}).items():
            if node.startswith(f"{name}-"):
                kubes[name].labels[node] = {"submariner.io/gateway": value}
        kubes[name].submariner_installed = name == submariner_on
        return kubes[name]

    subctl = FakeSubctl(kubes)
    made = KindProvider(tmp_path / "state", "run-1", reuse=True, kind=kind, nodes=FakeNodes(), kube_factory=factory,
                        progress=quiet, logs_dir=tmp_path / "logs", global_cidr="242.0.0.0/8", subctl=subctl)
    made.converge_timeout = 2.0
    return made, kubes, subctl


def test_reuse_teardown_removes_the_gateway_labels_and_submariner_crossnet_added(tmp_path: Path) -> None:
    from crossnet.profile import load_profile

    kind = FakeKind(existing=("globalnet-1", "globalnet-2", "globalnet-3"))
    made, kubes, subctl = globalnet_provider(tmp_path, kind, gateway_before={"globalnet-2-worker": "true",
                                                                             "globalnet-3-worker": "false"})
    topology = load_topology(GLOBALNET, global_cidr="242.0.0.0/8")
    run = bring_up_with(made, topology, "run-1", load_profile("globalnet").plumbing, progress=quiet)
    recorded = state_of(made)["submariner"]
    assert recorded["broker"] == "globalnet-1" and recorded["joined"] == ["globalnet-1", "globalnet-2", "globalnet-3"]
    assert [(r["node"], r["previous"]) for r in recorded["labels"]] == [("globalnet-1-worker", None),
                                                                         ("globalnet-3-worker", "false")]
    tear_down(run, progress=quiet)
    assert subctl.calls[-3:] == ["uninstall globalnet-3", "uninstall globalnet-2", "uninstall globalnet-1"]
    assert kubes["globalnet-1"].labels["globalnet-1-worker"] == {}  # crossnet added it: removed
    assert kubes["globalnet-2"].labels["globalnet-2-worker"] == {"submariner.io/gateway": "true"}  # there before
    assert kubes["globalnet-3"].labels["globalnet-3-worker"] == {"submariner.io/gateway": "false"}  # put back
    assert kind.deleted == []


def test_created_clusters_are_deleted_whole_without_uninstalling(tmp_path: Path) -> None:
    from crossnet.profile import load_profile

    made, _, subctl = globalnet_provider(tmp_path, FakeKind())
    run = bring_up_with(made, load_topology(GLOBALNET, global_cidr="242.0.0.0/8"), "run-1",
                        load_profile("globalnet").plumbing, progress=quiet)
    tear_down(run, progress=quiet)
    assert not [c for c in subctl.calls if c.startswith("uninstall")]


def test_a_cluster_already_running_submariner_is_refused_before_anything_changes(tmp_path: Path) -> None:
    kind = FakeKind(existing=("globalnet-1", "globalnet-2", "globalnet-3"))
    made, kubes, subctl = globalnet_provider(tmp_path, kind, submariner_on="globalnet-2")
    with pytest.raises(ProviderError, match=r"Submariner is already installed on globalnet-2.*subctl uninstall"):
        made.up(load_topology(GLOBALNET, global_cidr="242.0.0.0/8"))
    assert subctl.calls == [] and all(not k.labels for k in kubes.values())
    made.down()
    assert subctl.calls == []


def test_a_corefile_edited_after_crossnet_is_left_alone_and_the_original_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made, kubes, _ = provider(tmp_path, FakeKind(existing=("cluster-1", "cluster-2")), reuse=True)
    run = bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    configmap = kubes["cluster-1"].configmaps[("kube-system", "coredns")]
    edited = configmap["Corefile"] + "\n# an operator's edit after crossnet\n"
    configmap["Corefile"] = edited
    tear_down(run, progress=quiet)
    assert configmap["Corefile"] == edited  # not overwritten
    kept = tmp_path / "logs" / "corefile-cluster-1-before-crossnet"
    assert kept.read_text() == stock_corefile("cluster-1.com")
    err = capsys.readouterr().err
    assert "left the Corefile of cluster-1" in err and str(kept) in err and "# crossnet begin run-1" in err
    # The untouched one is restored byte for byte, without a warning.
    assert kubes["cluster-2"].configmaps[("kube-system", "coredns")]["Corefile"] == stock_corefile("cluster-2.com")
    assert "Corefile of cluster-2" not in err


# --------------------------------------------------------------------------- 4. kubeconfigs are private


@pytest.fixture
def no_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("no_umask")
@pytest.mark.parametrize("existing", [("cluster-1", "cluster-2"), ("cluster-1",)])
def test_kubeconfigs_are_0600_and_the_state_dir_0700_whatever_the_umask(tmp_path: Path,
                                                                          existing: tuple[str, ...]) -> None:
    made, _, _ = provider(tmp_path, FakeKind(existing=existing), reuse=True)
    made.up(TOPOLOGY)
    for cluster in ("cluster-1", "cluster-2"):  # reused (written by crossnet) and created (written by kind)
        assert stat.S_IMODE((made.state_dir / f"kubeconfig-{cluster}").stat().st_mode) == 0o600, cluster
    assert stat.S_IMODE(made.state_dir.stat().st_mode) == 0o700
    made.down()


@pytest.mark.usefixtures("no_umask")
def test_an_existing_state_dir_is_refused_and_nothing_recorded_in_it_is_acted_on(tmp_path: Path) -> None:
    """A directory that exists (here: another kind run's, with its state file) is never adopted:
    up() refuses it and the teardown that follows a failed bring-up deletes nothing it names."""
    kind = FakeKind(existing=("cluster-1", "cluster-2"))
    made, kubes, _ = provider(tmp_path, kind, reuse=True)
    made.state_dir.mkdir(parents=True)
    foreign = {"schema": "crossnet.state/v1", "provider": "kind", "run_id": "other", "namespace": "kube-system",
               "created": ["cluster-1", "cluster-2"], "reused": []}
    (made.state_dir / "state.json").write_text(json.dumps(foreign))
    with pytest.raises(ProviderError, match="already exists"):
        bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    assert kind.deleted == [] and all(not kube.deleted_namespaces for kube in kubes.values())
    assert json.loads((made.state_dir / "state.json").read_text()) == foreign


# --------------------------------------------------------------------------- 5. the agents are locked down


def test_no_network_policy_selects_the_agents_so_icmp_probes_are_not_dropped(tmp_path: Path) -> None:
    """A NetworkPolicy can admit only TCP, UDP and SCTP: one selecting the agents would drop every
    ICMP probe to a pod where policy is enforced (kindnet enforces it) and turn healthy icmp cells
    into regressions. The control port is guarded by the per-run token instead."""
    made, kubes, _ = provider(tmp_path, FakeKind())
    run = bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    kinds = {m["kind"] for kube in kubes.values() for m in kube.applied}
    assert "NetworkPolicy" not in kinds and {"Pod", "Secret", "Service"} <= kinds
    tear_down(run, progress=quiet)


def test_agent_pods_drop_every_capability_but_net_raw(tmp_path: Path) -> None:
    made, kubes, _ = provider(tmp_path, FakeKind())
    run = bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)
    pods = [m for m in kubes["cluster-1"].applied if m["kind"] == "Pod"]
    assert len(pods) == 6 and sum(1 for p in pods if p["spec"].get("hostNetwork")) == 3
    for pod in pods:
        assert pod["spec"]["automountServiceAccountToken"] is False
        for container in pod["spec"]["containers"]:
            context = container["securityContext"]
            assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
            assert context["allowPrivilegeEscalation"] is False and context["privileged"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert all(m.get("readOnly") for m in container["volumeMounts"] if m["mountPath"] != "/tmp")
    tear_down(run, progress=quiet)


def test_every_control_request_carries_the_runs_token_from_a_secret(tmp_path: Path) -> None:
    made, kubes, _ = provider(tmp_path, FakeKind())
    run = bring_up_with(made, TOPOLOGY, "run-1", progress=quiet)  # converges only if the fake agents accept it
    token = state_of(made)["agent_token"]
    assert len(token) >= 32 and kubes["cluster-1"].token("crossnet-run-1") == token
    assert kubes["cluster-2"].token("crossnet-run-1") == token
    secret = next(m for m in kubes["cluster-1"].applied if m["kind"] == "Secret")
    pod = next(m for m in kubes["cluster-1"].applied if m["kind"] == "Pod")
    command = pod["spec"]["containers"][0]["command"]
    token_file = command[command.index("--token-file") + 1]
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if token_file == f"{m['mountPath']}/token")
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert token_file == f"{mount['mountPath']}/token" and "token" in secret["stringData"]
    assert kubes["cluster-1"].proxied and all(h == {"X-Crossnet-Token": token} for h in kubes["cluster-1"].proxied)
    # A worker attached to the run (pytest --attach, xdist) reads the token from the state file.
    attached = KindProvider.attach(made.state_dir, kube_factory=lambda name, _p: kubes[name], progress=quiet)
    attached.agent_client("cluster-2/worker/agent").probe([{"id": "p", "protocol": "tcp"}], 1.0)
    assert kubes["cluster-2"].proxied[-1] == {"X-Crossnet-Token": token}
    other, _, _ = provider(tmp_path / "other", FakeKind())
    other.up(TOPOLOGY)
    assert state_of(other)["agent_token"] != token  # one per run
    other.down()
    tear_down(run, progress=quiet)
