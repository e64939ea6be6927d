"""The MCS API on real clusters (crossnet.providers.mcs_api) and its kind hook (crossnet.providers.kind.mcs),
against tests/fake_kube.py's API server holding objects shaped like an MCS controller's: version discovery,
ServiceExport conditions (Valid, Ready, the conflict), CoreDNS's RBAC for ServiceImports, deleting only this
run's exports, the bounded waits and their errors. Only the nightly `kind-mcs` job runs a real controller."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from crossnet.config import load_topology
from crossnet.providers import mcs_api
from crossnet.providers.base import ProviderError
from crossnet.providers.kind import mcs as kind_mcs
from crossnet.providers.kind.kube import MANAGED_BY, RUN_LABEL
from tests.conftest import ROOT
from tests.fake_kube import FakeCluster

NS = "crossnet-run1"
RUN = "run1"
GROUP = "multicluster.x-k8s.io"
BOTH = ["serviceexports", "serviceimports"]
RBAC = "/apis/rbac.authorization.k8s.io/v1"
TOPOLOGY = load_topology([ROOT / "kind-configs" / "mcs-1.yaml", ROOT / "kind-configs" / "mcs-2.yaml"])


def cluster(context: str = "mcs-1", index: int = 1, versions: tuple[str, ...] = ("v1alpha1",)) -> FakeCluster:
    fake = FakeCluster(context, index)
    fake.api_resources = {f"{GROUP}/{v}": list(BOTH) for v in versions}
    fake._put("/api/v1/namespaces", {"metadata": {"name": NS, "labels": {}}})
    return fake


def exports_path(version: str = "v1alpha1", namespace: str = NS) -> str:
    return f"/apis/{GROUP}/{version}/namespaces/{namespace}/serviceexports"


def imports_path(version: str = "v1alpha1") -> str:
    return f"/apis/{GROUP}/{version}/namespaces/{NS}/serviceimports"


def set_conditions(fake: FakeCluster, name: str, *conditions: dict[str, str], version: str = "v1alpha1",
                   namespace: str = NS) -> None:
    path = f"/apis/{GROUP}/{version}/namespaces/{namespace}/serviceexports"
    fake.objects(path)[name]["status"] = {"conditions": list(conditions)}


def cond(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


class Clock:
    """A monotonic clock that a wait's sleep advances (no real waiting); `each` runs at every sleep."""

    def __init__(self, each: Any = None) -> None:
        self.now, self.sleeps, self.each = 0.0, 0, each

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.each is not None:
            self.each(self.sleeps)


# ------------------------------------------------------------------------------------ version discovery


@pytest.mark.parametrize(("served", "expected"), [
    ({"v1alpha1": BOTH, "v1beta1": BOTH}, "v1beta1"),
    ({"v1alpha1": BOTH}, "v1alpha1"),
    ({"v1beta1": BOTH}, "v1beta1"),
    ({"v1beta1": ["serviceexports"], "v1alpha1": BOTH}, "v1alpha1"),  # both resources in one version
])
def test_the_served_version_comes_from_api_discovery(served: dict[str, list[str]], expected: str) -> None:
    fake = cluster()
    fake.api_resources = {f"{GROUP}/{v}": r for v, r in served.items()}
    assert mcs_api.served_version(fake) == expected
    assert mcs_api.require_served_version(fake, "mcs-1") == expected


@pytest.mark.parametrize("served", [{}, {"v1beta1": ["serviceexports"]}, {"v1": BOTH}])
def test_no_mcs_api_is_none_with_a_message_naming_the_cluster_and_the_fix(served: dict[str, list[str]]) -> None:
    fake = cluster()
    fake.api_resources = {f"{GROUP}/{v}": r for v, r in served.items()}
    said: list[str] = []
    assert mcs_api.served_version(fake, said.append) is None
    assert said and said[0].startswith(
        "no MCS API on cluster mcs-1: install an MCS implementation (Submariner Lighthouse, Karmada, the mcs-api "
        "controller)")
    with pytest.raises(ProviderError, match="no MCS API on cluster other"):
        mcs_api.require_served_version(fake, "other")


# ------------------------------------------------------------------------------------ ServiceExports


def test_service_exports_are_labelled_as_this_runs_and_created_once() -> None:
    fake = cluster()
    manifest = mcs_api.service_export("echo", NS, RUN, "v1beta1")
    assert manifest == {"apiVersion": f"{GROUP}/v1beta1", "kind": "ServiceExport", "metadata": {
        "name": "echo", "namespace": NS, "labels": {**MANAGED_BY, RUN_LABEL: RUN}}}
    fake.api_resources[f"{GROUP}/v1beta1"] = BOTH
    mcs_api.create_exports(fake, "mcs-1", [manifest])
    mcs_api.create_exports(fake, "mcs-1", [manifest])  # a re-apply of our own is fine
    assert list(fake.objects(exports_path("v1beta1"))) == ["echo"]
    with pytest.raises(ProviderError, match="run id"):
        mcs_api.service_export("echo", NS, "")


def test_an_export_that_is_not_this_runs_is_never_adopted() -> None:
    fake = cluster()
    fake._put(exports_path(), {"metadata": {"name": "echo", "labels": {"team": "theirs"}}})
    with pytest.raises(ProviderError, match="already exists and is not this run's"):
        mcs_api.create_exports(fake, "mcs-1", [mcs_api.service_export("echo", NS, RUN)])
    assert fake.objects(exports_path())["echo"]["metadata"]["labels"] == {"team": "theirs"}


def test_only_this_runs_exports_are_deleted() -> None:
    fake = cluster()
    mcs_api.create_exports(fake, "mcs-1", [mcs_api.service_export(n, NS, RUN) for n in ("echo", "echo-headless")])
    fake._put(exports_path(), {"metadata": {"name": "theirs", "labels": {"team": "x"}}})
    fake._put(exports_path(), {"metadata": {"name": "older-run", "labels": {**MANAGED_BY, RUN_LABEL: "run0"}}})
    assert sorted(mcs_api.delete_exports(fake, NS, RUN)) == ["echo", "echo-headless"]
    assert sorted(fake.objects(exports_path())) == ["older-run", "theirs"]
    deletes = [r for r in fake.requests if r.method == "DELETE"]
    assert sorted(r.name for r in deletes) == ["echo", "echo-headless"]
    assert mcs_api.delete_exports(fake, NS, RUN) == []
    with pytest.raises(ProviderError, match="run id"):
        mcs_api.delete_exports(fake, NS, "")


def test_a_label_selector_that_lies_does_not_delete_someone_elses_export() -> None:
    """The labels are checked again before each delete, not only trusted to the server's selector."""
    fake = cluster()
    fake._put(exports_path(), {"metadata": {"name": "theirs", "labels": {"team": "x"}}})
    real = fake.request

    def unselective(method: str, path: str, **kw: Any) -> Any:
        return real(method, path, **{**kw, "query": ()})  # the selector ignored: everything listed

    fake.request = unselective  # type: ignore[method-assign]
    assert mcs_api.delete_exports(fake, NS, RUN) == []
    assert "theirs" in fake.objects(exports_path())


# ------------------------------------------------------------------------------------ conditions


def test_valid_and_ready_true_is_exported() -> None:
    fake = cluster()
    mcs_api.create_exports(fake, "mcs-1", [mcs_api.service_export("echo", NS, RUN)])
    set_conditions(fake, "echo", cond("Valid", "True", "Valid"), cond("Ready", "True", "Exported"),
                   cond("Conflict", "False", "NoConflicts"))
    state = mcs_api.export_state(fake, NS, "echo")
    assert state is not None and state.valid is True and state.ready is True and state.conflict is None
    assert mcs_api.port_conflict(state) is None
    clock = Clock()
    got = mcs_api.wait_exported(fake, "mcs-1", NS, ["echo"], clock=clock, sleep=clock.sleep)
    assert got["echo"] == state and clock.sleeps == 0


@pytest.mark.parametrize(("kind", "reason", "message"), [
    ("Conflict", "PortConflict", "ports differ"),  # v1beta1
    ("ServiceExportConflict", "", "port 80 vs 8080"),  # the Go constant's name as the type
    ("Conflict", "ConflictingPorts", "The service ports conflict between the constituent clusters [a, b]"),
])
def test_a_port_conflict_is_recognised_and_ends_the_wait(kind: str, reason: str, message: str) -> None:
    fake = cluster()
    mcs_api.create_exports(fake, "mcs-1", [mcs_api.service_export("echo", NS, RUN)])
    set_conditions(fake, "echo", cond("Valid", "True"), cond(kind, "True", reason, message))
    state = mcs_api.export_state(fake, NS, "echo")
    found = mcs_api.port_conflict(state)
    assert found is not None and found.type == kind and found.message == message
    clock = Clock()
    with pytest.raises(ProviderError) as caught:
        mcs_api.wait_exported(fake, "mcs-1", NS, ["echo"], timeout=60, clock=clock, sleep=clock.sleep)
    assert f"mcs-1: ServiceExport {NS}/echo: conflict: {kind}=True" in str(caught.value)
    assert message in str(caught.value)
    assert clock.sleeps == 0  # a conflict does not go away by waiting


def test_a_type_conflict_is_a_conflict_but_not_a_port_conflict() -> None:
    state = mcs_api.ExportState("echo", NS, (mcs_api.Condition("Conflict", "True", "TypeConflict", "headless"),))
    assert state.conflict is not None and mcs_api.port_conflict(state) is None


def test_not_valid_ends_the_wait_naming_the_condition_and_its_message() -> None:
    fake = cluster()
    mcs_api.create_exports(fake, "mcs-1", [mcs_api.service_export("echo", NS, RUN)])
    set_conditions(fake, "echo", cond("Valid", "False", "UnsupportedServiceType", "Service of type NodePort not "
                                      "supported"))
    clock = Clock()
    with pytest.raises(ProviderError, match=r"echo: not valid: Valid=False \(UnsupportedServiceType\): Service of "
                                            "type NodePort not supported"):
        mcs_api.wait_exported(fake, "mcs-1", NS, ["echo"], clock=clock, sleep=clock.sleep)


def test_a_passing_invalid_state_is_waited_out() -> None:
    """Lighthouse reports Valid=False AwaitingSync until the broker has the export: not an error."""
    fake = cluster()
    mcs_api.create_exports(fake, "mcs-1", [mcs_api.service_export("echo", NS, RUN)])
    set_conditions(fake, "echo", cond("Valid", "False", "AwaitingSync", "Awaiting sync of the ServiceImport"))
    clock = Clock(lambda n: n == 2 and set_conditions(fake, "echo", cond("Valid", "True")))
    assert mcs_api.wait_exported(fake, "mcs-1", NS, ["echo"], clock=clock, sleep=clock.sleep)["echo"].valid
    set_conditions(fake, "echo", cond("Valid", "False", "AwaitingSync", "Awaiting sync of the ServiceImport"))
    with pytest.raises(ProviderError, match=r"within 4s: echo: Valid=False \(AwaitingSync\): Awaiting sync"):
        mcs_api.wait_exported(fake, "mcs-1", NS, ["echo"], timeout=4, clock=clock, sleep=clock.sleep)


def test_the_wait_is_bounded_and_its_error_says_what_each_export_lacks() -> None:
    fake = cluster()
    mcs_api.create_exports(fake, "mcs-1", [mcs_api.service_export(n, NS, RUN) for n in ("echo", "echo-headless")])
    set_conditions(fake, "echo-headless", cond("Valid", "True"), cond("Ready", "False", "Pending", "syncing"))
    clock = Clock()
    with pytest.raises(ProviderError) as caught:
        mcs_api.wait_exported(fake, "mcs-1", NS, ["echo", "echo-headless", "gone"], timeout=10, pause=2,
                              clock=clock, sleep=clock.sleep)
    text = str(caught.value)
    assert text.startswith(f"mcs-1: ServiceExport(s) in {NS} not exported within 10s: ")
    assert "echo: no condition yet (is the MCS controller running?)" in text
    assert "echo-headless: not ready yet: Ready=False (Pending): syncing" in text
    assert "gone: the ServiceExport does not exist" in text
    assert 5 <= clock.sleeps <= 6


def test_the_wait_ends_when_the_controller_catches_up() -> None:
    fake = cluster()
    mcs_api.create_exports(fake, "mcs-1", [mcs_api.service_export("echo", NS, RUN)])
    clock = Clock(lambda n: n == 3 and set_conditions(fake, "echo", cond("Valid", "True")))
    got = mcs_api.wait_exported(fake, "mcs-1", NS, ["echo"], timeout=60, clock=clock, sleep=clock.sleep)
    assert got["echo"].valid is True and clock.sleeps == 3
    # with require_ready, Valid alone is not enough
    with pytest.raises(ProviderError, match="Valid=True, no Ready condition yet"):
        mcs_api.wait_exported(fake, "mcs-1", NS, ["echo"], timeout=4, require_ready=True, clock=clock,
                              sleep=clock.sleep)


# ------------------------------------------------------------------------------------ ServiceImports


def put_import(fake: FakeCluster, name: str, kind: str, ips: list[str], ports: list[int], clusters: list[str],
               version: str = "v1alpha1", namespace: str = NS) -> None:
    path = f"/apis/{GROUP}/{version}/namespaces/{namespace}/serviceimports"
    fake._put(path, {"metadata": {"name": name, "namespace": namespace}, "spec": {
        "type": kind, "ips": ips, "ports": [{"port": p, "protocol": "TCP", "name": f"p{p}"} for p in ports]},
        "status": {"clusters": [{"cluster": c} for c in clusters]}})


def test_service_imports_are_read_into_data() -> None:
    fake = cluster("mcs-2", 2)
    put_import(fake, "echo", "ClusterSetIP", ["10.150.0.7", "not-an-ip"], [8080, 70000], ["mcs-1"])
    put_import(fake, "echo-headless", "Headless", [], [8080], ["mcs-1"])
    found = mcs_api.read_imports(fake, NS)
    assert found["echo"] == mcs_api.ImportedService("echo", NS, "ClusterSetIP", ("10.150.0.7",),
                                                    (mcs_api.ImportPort(8080, "TCP", "p8080"),), ("mcs-1",))
    assert found["echo-headless"].type == "Headless" and found["echo-headless"].ips == ()
    assert mcs_api.read_import(fake, NS, "private") is None


def test_the_import_wait_names_what_is_missing_and_what_is_there() -> None:
    fake = cluster("mcs-2", 2)
    put_import(fake, "echo", "Headless", [], [8080], ["mcs-1"])
    clock = Clock()
    with pytest.raises(ProviderError) as caught:
        mcs_api.wait_imported(fake, "mcs-2", NS, kind_mcs.EXPORTED, timeout=6, clock=clock, sleep=clock.sleep)
    assert str(caught.value) == (
        f"mcs-2: the ServiceImports in {NS} are not there within 6s: echo: type 'Headless', not ClusterSetIP; "
        "echo-headless: missing; remote-echo: missing (there: echo (Headless)); is the MCS controller importing "
        "into this cluster?")


def test_a_port_conflict_as_data_is_a_same_named_service_with_other_ports_and_its_export() -> None:
    first, second = cluster(), cluster("mcs-2", 2)
    mcs_api.create_exports(first, "mcs-1", [mcs_api.service_export("echo", NS, RUN)])
    service, export = mcs_api.conflicting_export("echo", NS, RUN, [9090])
    assert service["kind"] == "Service" and [p["port"] for p in service["spec"]["ports"]] == [9090]
    assert "selector" not in service["spec"] and service["metadata"]["labels"][RUN_LABEL] == RUN
    assert export == mcs_api.service_export("echo", NS, RUN)
    second.request("POST", f"/api/v1/namespaces/{NS}/services", body=service)
    mcs_api.create_exports(second, "mcs-2", [export])
    # what the controller then writes (mcs-api v1beta1 reason; Lighthouse's message names the ports too)
    set_conditions(second, "echo", cond("Valid", "True"), cond("Conflict", "True", "PortConflict",
                                                                "The service ports conflict between [mcs-1, mcs-2]"))
    found = mcs_api.port_conflict(mcs_api.export_state(second, NS, "echo"))
    assert found is not None and found.reason == "PortConflict"
    assert mcs_api.port_conflict(mcs_api.export_state(first, NS, "echo")) is None


# ------------------------------------------------------------------------------------ CoreDNS's RBAC


def rbac(fake: FakeCluster, rules: list[dict[str, Any]], *, role: str = "system:coredns",
         subject: dict[str, str] | None = None, binding: str = "system:coredns") -> None:
    fake._put(f"{RBAC}/clusterroles", {"metadata": {"name": role}, "rules": rules})
    fake._put(f"{RBAC}/clusterrolebindings", {"metadata": {"name": binding}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [subject or {"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]})


STOCK = {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]}
SLICES = {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}


@pytest.mark.parametrize("rules", [
    [STOCK, SLICES, {"apiGroups": [GROUP], "resources": ["serviceimports"], "verbs": ["list", "watch"]}],
    [STOCK, {"apiGroups": [GROUP], "resources": ["serviceimports"], "verbs": ["list"]},
     {"apiGroups": [GROUP], "resources": ["serviceimports"], "verbs": ["watch"]}],  # split over two rules
    [{"apiGroups": [GROUP], "resources": ["*"], "verbs": ["list", "watch"]}],
    [{"apiGroups": ["*"], "resources": ["serviceimports"], "verbs": ["*"]}],
    [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
])
def test_coredns_may_list_serviceimports_when_its_role_grants_it(rules: list[dict[str, Any]]) -> None:
    fake = cluster()
    rbac(fake, rules)
    assert mcs_api.coredns_may_list_serviceimports(fake) is None
    assert mcs_api.coredns_serviceimport_grant(fake, "mcs-1") == (True, "")


@pytest.mark.parametrize(("rules", "missing"), [
    ([STOCK, SLICES], "list and watch"),  # the resource missing: the stock system:coredns
    ([STOCK, {"apiGroups": [GROUP], "resources": ["serviceimports"], "verbs": ["list"]}], "watch"),
    ([{"apiGroups": [GROUP], "resources": ["serviceexports"], "verbs": ["*"]}], "list and watch"),
    ([{"apiGroups": [""], "resources": ["serviceimports"], "verbs": ["list", "watch"]}], "list and watch"),
    ([{"apiGroups": [GROUP], "resources": ["serviceimports"], "verbs": ["list", "watch"],
       "resourceNames": ["echo"]}], "list and watch"),
])
def test_a_missing_grant_is_one_error_with_the_rule_to_add(rules: list[dict[str, Any]], missing: str) -> None:
    fake = cluster()
    rbac(fake, rules)
    problem = mcs_api.coredns_may_list_serviceimports(fake, "mcs-1")
    assert problem is not None and problem.startswith(
        f"mcs-1: CoreDNS (system:serviceaccount:kube-system:coredns, bound through ClusterRole(s) system:coredns) "
        f"may not {missing} serviceimports.{GROUP}; its multicluster plugin then answers nothing under "
        'clusterset.local and only logs "forbidden"')
    rule_yaml = problem.split("(`kubectl edit clusterrole system:coredns`):\n")[1].split("then restart")[0]
    assert yaml.safe_load(rule_yaml) == [{"apiGroups": [GROUP], "resources": ["serviceimports"],
                                          "verbs": ["list", "watch"]}]
    assert "kubectl auth can-i list serviceimports.multicluster.x-k8s.io --as=system:serviceaccount:kube-system:" \
           "coredns" in problem


def test_the_grant_may_come_from_another_binding_of_the_service_account_named_by_the_deployment() -> None:
    fake = cluster()
    fake._put("/apis/apps/v1/namespaces/kube-system/deployments", {"metadata": {"name": "coredns"}, "spec": {
        "template": {"spec": {"serviceAccountName": "dns"}}}})
    sa = {"kind": "ServiceAccount", "name": "dns", "namespace": "kube-system"}
    rbac(fake, [STOCK], subject=sa)
    assert "system:serviceaccount:kube-system:dns" in (mcs_api.coredns_may_list_serviceimports(fake) or "")
    rbac(fake, [{"apiGroups": [GROUP], "resources": ["serviceimports"], "verbs": ["list", "watch"]}],
         role="mcs-serviceimports-reader", subject=sa, binding="coredns-mcs")
    assert mcs_api.coredns_may_list_serviceimports(fake) is None
    # a binding of the same role to somebody else grants CoreDNS nothing
    other = cluster()
    rbac(other, [STOCK])
    rbac(other, [{"apiGroups": [GROUP], "resources": ["serviceimports"], "verbs": ["list", "watch"]}],
         role="reader", subject={"kind": "ServiceAccount", "name": "lighthouse", "namespace": "submariner"},
         binding="lh")
    assert mcs_api.coredns_may_list_serviceimports(other) is not None


def test_unreadable_rbac_is_unknown_and_says_how_to_check_by_hand() -> None:
    from tests.fake_kube import Rbac

    fake = cluster()
    fake.rbac = Rbac([])  # this user may read nothing
    granted, problem = mcs_api.coredns_serviceimport_grant(fake, "mcs-1")
    assert granted is None and problem.startswith("mcs-1: cannot check whether CoreDNS may list ServiceImports")
    assert "403" in problem and "kubectl auth can-i" in problem


def test_only_a_corefile_with_the_multicluster_plugin_needs_the_grant() -> None:
    karmada = ".:53 {\n    kubernetes c.local\n    multicluster clusterset.local\n}\n"
    assert mcs_api.corefile_serves_multicluster(karmada)
    lighthouse = ".:53 {\n    kubernetes c.local\n}\nclusterset.local:53 {\n    forward . 10.150.0.99\n}\n"
    assert not mcs_api.corefile_serves_multicluster(lighthouse)


# ------------------------------------------------------------------------------------ the kind hook


def kind_site(clusters: dict[str, FakeCluster], records: list[dict[str, Any]], **kw: Any) -> kind_mcs.McsSite:
    return kind_mcs.McsSite(SimpleNamespace(derived_services=False, header_ra=True), TOPOLOGY, RUN, NS,
                            clusters.__getitem__, lambda d: records.append(dict(d)), **kw)


def lighthouse(first: FakeCluster, second: FakeCluster) -> Any:
    """What Lighthouse does once the exports exist: conditions on them, ServiceImports in the other cluster."""
    def act(_n: int) -> None:
        for name in first.objects(exports_path()):
            set_conditions(first, name, cond("Valid", "True"), cond("Ready", "True", "Exported"))
        put_import(second, "echo", "ClusterSetIP", [], [8080], ["mcs-1"])
        put_import(second, "echo-headless", "Headless", [], [8080], ["mcs-1"])
        put_import(second, "remote-echo", "ClusterSetIP", [], [8080], ["mcs-1"])
    return act


def test_the_kind_hook_records_exports_waits_for_imports_and_checks_coredns() -> None:
    first, second = cluster(), cluster("mcs-2", 2)
    records: list[dict[str, Any]] = []
    clock = Clock(lighthouse(first, second))
    seen_before: list[list[str]] = []
    site = kind_site({"mcs-1": first, "mcs-2": second}, records, pause=1.0, timeout=30, clock=clock,
                     sleep=clock.sleep)
    site = kind_mcs.McsSite(**{**site.__dict__, "record": lambda d: (
        seen_before.append(sorted(first.objects(exports_path()))), records.append(dict(d)))})
    done = kind_mcs.export_services(site)
    assert seen_before[0] == [], "recorded before anything is created"
    assert records[0] == {"cluster": "mcs-1", "namespace": NS, "version": "v1alpha1",
                          "exports": ["echo", "echo-headless", "remote-echo"], "run_id": RUN}
    assert records[-1] == done and done["imported"]["mcs-2"]["echo"]["type"] == "ClusterSetIP"
    assert clock.sleeps == 1  # one pause: then Lighthouse had set the conditions and made the imports
    assert done["coredns"]["mcs-2"].startswith("not needed")  # the stock Corefile: no multicluster plugin
    assert sorted(first.objects(exports_path())) == ["echo", "echo-headless", "remote-echo"]
    assert not second.objects(exports_path())
    # teardown: ours only, on a cluster that is still there
    first._put(exports_path(), {"metadata": {"name": "theirs", "labels": {}}})
    assert kind_mcs.undo_mcs(done, {"mcs-1": first}.__getitem__, {"mcs-1"}) == []
    assert list(first.objects(exports_path())) == ["theirs"]
    assert kind_mcs.undo_mcs(done, {}.__getitem__, {"mcs-2"}) == []  # the exporter is gone (deleted whole)
    assert kind_mcs.undo_mcs({"cluster": "mcs-1"}, {}.__getitem__, {"mcs-1"})[0].startswith("the recorded MCS")
    assert kind_mcs.undo_mcs({}, {}.__getitem__, {"mcs-1"}) == []


def test_the_kind_hook_stops_on_coredns_without_the_grant_where_coredns_reads_serviceimports() -> None:
    first, second = cluster(), cluster("mcs-2", 2)
    corefile = ".:53 {\n    kubernetes mcs-2.com\n    multicluster clusterset.local\n}\n"
    second.objects("/api/v1/namespaces/kube-system/configmaps")["coredns"]["data"]["Corefile"] = corefile
    rbac(second, [STOCK, SLICES])
    records: list[dict[str, Any]] = []
    site = kind_site({"mcs-1": first, "mcs-2": second}, records)
    with pytest.raises(ProviderError, match=r'mcs-2: CoreDNS .* only logs "forbidden"'):
        kind_mcs.check_coredns(site, ["mcs-2"])
    rbac(second, [STOCK, {"apiGroups": [GROUP], "resources": ["serviceimports"], "verbs": ["list", "watch"]}])
    assert kind_mcs.check_coredns(site, ["mcs-2"]) == {"mcs-2": "granted"}


def test_the_kind_hook_refuses_a_cluster_without_the_mcs_api_before_creating_anything() -> None:
    first, second = cluster(), cluster("mcs-2", 2, versions=())
    records: list[dict[str, Any]] = []
    with pytest.raises(ProviderError, match="no MCS API on cluster mcs-2"):
        kind_mcs.export_services(kind_site({"mcs-1": first, "mcs-2": second}, records))
    assert records == [] and not first.objects(exports_path())


def test_lighthouse_is_deployed_without_globalnet_and_mcs_comes_from_the_settings(tmp_path: Path) -> None:
    cli = kind_mcs.LighthouseCli(binary="python3")
    ran: list[list[str]] = []
    cli._run = lambda argv, workdir=None, timeout=600.0: ran.append(argv)  # type: ignore[method-assign]
    assert cli.deploy_broker(tmp_path / "k", tmp_path) == tmp_path / "broker-info.subm"
    assert ran == [["deploy-broker", "--kubeconfig", str(tmp_path / "k")]]
    assert kind_mcs.mcs_of(SimpleNamespace()) is None
    assert kind_mcs.mcs_of(SimpleNamespace(mcs="plumbing")) == "plumbing"


class Lighthouse:
    """The REST seam of one cluster with Lighthouse acting at once: a created ServiceExport becomes Valid and
    Ready, and the other cluster gets its ServiceImport (no waiting in the hooks' bounded waits)."""

    def __init__(self, fake: FakeCluster, peer: FakeCluster) -> None:
        self.fake, self.peer, self.context = fake, peer, fake.context

    def request(self, method: str, path: str, **kw: Any) -> Any:
        answer = self.fake.request(method, path, **kw)
        if method == "POST" and path.endswith("/serviceexports"):
            meta = kw["body"]["metadata"]
            name, namespace = meta["name"], meta["namespace"]
            set_conditions(self.fake, name, cond("Valid", "True"), cond("Ready", "True"), namespace=namespace)
            put_import(self.peer, name, kind_mcs.EXPORTED[name], [], [8080], [self.context], namespace=namespace)
        return answer


def test_the_provider_hooks_run_on_a_kind_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-line hooks of KindProvider (the lead wires them into provider.py): subctl checked before
    anything is made, Lighthouse deployed and recorded as Submariner is, the exports made, recorded and
    waited for, and at teardown this run's exports deleted."""
    from tests.test_kind_provider import FakeKind, FakeSubctl, provider

    made, kubes, _nodes = provider(tmp_path, FakeKind())
    made.mcs = SimpleNamespace(derived_services=True, header_ra=True)  # type: ignore[attr-defined]
    with pytest.raises(ProviderError, match="Lighthouse, which makes none: use --profile mcs-clusterset-only"):
        kind_mcs.check_tools(made)  # mcs-karmada's derived Services: nothing on kind would make them
    made.mcs = SimpleNamespace(derived_services=False, header_ra=True)  # type: ignore[attr-defined]
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ProviderError, match="subctl is not on PATH"):
        kind_mcs.check_tools(made)
    subctl = FakeSubctl(kubes)
    made._subctl = subctl
    kind_mcs.check_tools(made)
    assert made._subctl is subctl
    made.up(TOPOLOGY)  # its hook deploys Lighthouse (kind_mcs.deploy)
    assert subctl.calls == ["deploy-broker kubeconfig-mcs-1", "join mcs-1", "join mcs-2"]
    assert made.state.read()["submariner"]["joined"] == ["mcs-1", "mcs-2"]
    first, second = cluster(), cluster("mcs-2", 2)
    for fake in (first, second):  # the agents' namespace, as deploy_agents makes it
        fake._put("/api/v1/namespaces", {"metadata": {"name": made.namespace, "labels": {}}})
    apis = {"mcs-1": Lighthouse(first, second), "mcs-2": Lighthouse(second, first)}
    done = kind_mcs.export(made, TOPOLOGY, apis.__getitem__)
    assert done is not None and made.state.read()["mcs"] == done and done["run_id"] == "run-1"
    assert sorted(done["imported"]["mcs-2"]) == ["echo", "echo-headless", "remote-echo"]
    assert [r.namespace for r in first.requests if r.method == "POST"] == ["crossnet-run-1"] * 3
    assert kind_mcs.undo(made, made.state.read(), apis.__getitem__) == []
    assert first.objects("/apis/multicluster.x-k8s.io/v1alpha1/namespaces/crossnet-run-1/serviceexports") == {}
    made.mcs = None  # type: ignore[attr-defined]
    assert kind_mcs.export(made, TOPOLOGY) is None and kind_mcs.undo(made, {}) == []
    monkeypatch.setattr(kind_mcs, "kind_api", lambda _state_dir: apis.__getitem__)  # down() undoes again: a no-op
    made.down()


# ------------------------------------------------------------------------------------ what Lighthouse exports


def lighthouse_import_type(service: dict[str, Any]) -> str | None:
    """Lighthouse's getServiceImportType (submariner-io/lighthouse, pkg/agent/controller/agent.go): a Service
    of type "" or ClusterIP is exported (ClusterSetIP, or Headless with clusterIP None); any other type
    (NodePort, LoadBalancer, ExternalName) is not: Valid=False, reason UnsupportedServiceType."""
    spec = service.get("spec") or {}
    if spec.get("type") not in (None, "", "ClusterIP"):
        return None
    return "Headless" if spec.get("clusterIP") == "None" else "ClusterSetIP"


class StrictLighthouse:
    """One cluster's REST seam with Lighthouse's agent acting at once on a ServiceExport created there, as it
    does on a real one: the Service must exist (`service_of`), be exportable (`lighthouse_import_type`; else the
    export is Valid=False UnsupportedServiceType, which ends crossnet's wait), and then the export is Valid and
    Ready and every peer (a FakeCluster and the MCS version it serves) gets the ServiceImport."""

    def __init__(self, fake: FakeCluster, peers: list[tuple[FakeCluster, str]],
                 service_of: Any, version: str = "v1alpha1") -> None:
        self.fake, self.peers, self.service_of, self.version = fake, peers, service_of, version
        self.context = fake.context

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fake, name)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        answer = self.fake.request(method, path, **kw)
        dry = ("dryRun", "All") in list(kw.get("query") or ())
        if method == "POST" and path.endswith("/serviceexports") and not dry:
            meta = kw["body"]["metadata"]
            name, namespace = meta["name"], meta["namespace"]
            service = self.service_of(name)
            assert service is not None, f"ServiceExport {namespace}/{name}: Service to be exported doesn't exist"
            kind = lighthouse_import_type(service)
            if kind is None:
                set_conditions(self.fake, name, cond("Valid", "False", "UnsupportedServiceType",
                                                     f"Service of type {service['spec']['type']} not supported"),
                               version=self.version, namespace=namespace)
                return answer
            set_conditions(self.fake, name, cond("Valid", "True"), cond("Ready", "True"), version=self.version,
                           namespace=namespace)
            ports = [p["port"] for p in service["spec"].get("ports") or []]
            ips = [service["spec"]["clusterIP"]] if kind == "ClusterSetIP" and service["spec"].get("clusterIP") else []
            for peer, version in self.peers:
                put_import(peer, name, kind, ips, ports, [self.context], version=version, namespace=namespace)
        return answer


def test_the_kind_exporter_deploys_services_lighthouse_exports_and_remote_echo_there_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On kind under MCS the first cluster's echo is ClusterIP (Lighthouse refuses to export a NodePort
    Service), its NodePort on echo-nodeport (the node-port cells still find it), and remote-echo exists there
    only and is exported, as the lab emulates it; the importer keeps the NodePort echo and has no remote-echo."""
    from tests.test_kind_provider import FakeKind, FakeSubctl, provider

    made, kubes, _nodes = provider(tmp_path, FakeKind())
    made.mcs = SimpleNamespace(derived_services=False, header_ra=True)
    made._subctl = FakeSubctl(kubes)
    made.up(TOPOLOGY)
    first, second = cluster(), cluster("mcs-2", 2)
    for fake in (first, second):
        fake._put("/api/v1/namespaces", {"metadata": {"name": made.namespace, "labels": {}}})

    def applied(cluster_name: str) -> dict[str, dict[str, Any]]:
        return {m["metadata"]["name"]: m for m in kubes[cluster_name].applied if m["kind"] == "Service"}

    apis = {"mcs-1": StrictLighthouse(first, [(second, "v1alpha1")], lambda n: applied("mcs-1").get(n)),
            "mcs-2": StrictLighthouse(second, [(first, "v1alpha1")], lambda n: applied("mcs-2").get(n))}
    monkeypatch.setattr(kind_mcs, "kind_api", lambda _state_dir: apis.__getitem__)
    cluster_set = made.deploy_agents()  # the agents, then kind_mcs.export: Lighthouse accepts every export
    exporter, importer = applied("mcs-1"), applied("mcs-2")
    assert {n: lighthouse_import_type(exporter[n]) for n in kind_mcs.EXPORTED} == kind_mcs.EXPORTED
    assert exporter["echo-nodeport"]["spec"]["type"] == "NodePort"
    assert {p["nodePort"] for p in exporter["echo-nodeport"]["spec"]["ports"]} == {30080}
    assert exporter["remote-echo"]["spec"]["selector"] == exporter["echo"]["spec"]["selector"]
    assert importer["echo"]["spec"]["type"] == "NodePort" and not {"remote-echo", "echo-nodeport"} & set(importer)
    assert cluster_set.cluster("mcs-1").service("echo", made.namespace).node_port == 30080  # node-port cells
    assert cluster_set.cluster("mcs-1").service("remote-echo", made.namespace).type == "ClusterIP"
    assert sorted(made.state.read()["mcs"]["imported"]["mcs-2"]) == ["echo", "echo-headless", "remote-echo"]
    assert set(first.objects(exports_path(namespace=made.namespace))) == set(kind_mcs.EXPORTED)


def test_clusterset_answers_come_from_the_imports_else_the_exporters_cluster_ip() -> None:
    from crossnet.providers.kind.mcs import clusterset_ips

    record = {"cluster": "c1", "imported": {"c2": {
        "echo": {"type": "ClusterSetIP", "ips": ["10.99.0.5"]},
        "remote-echo": {"type": "ClusterSetIP", "ips": []},
        "echo-headless": {"type": "Headless", "ips": []},
    }}}
    exporter = {"echo": "10.40.0.100", "remote-echo": "10.40.0.102"}
    answers = (("echo", "10.99.0.5"), ("remote-echo", "10.40.0.102"))
    assert clusterset_ips(record, "c2", exporter) == answers
    assert clusterset_ips(record, "c1", exporter) == answers, "the exporter sees what the importers see"
    assert clusterset_ips(None, "c2", exporter) == () and clusterset_ips({"imported": {}}, "c2", exporter) == ()
