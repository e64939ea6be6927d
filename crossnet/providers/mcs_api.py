"""The Multi-Cluster Services API (KEP-1645, `multicluster.x-k8s.io`) on real clusters, provider-neutral
(kind: crossnet.providers.kind.mcs; existing clusters alike), all through the existing provider's REST
seam (`KubeApi.request`), so tests drive it against tests/fake_kube.py's API server:

- `served_version`: v1beta1 where API discovery says it is served, else v1alpha1, else None;
- ServiceExports as data labelled with the run (`service_export`), created without adopting anybody
  else's (`create_exports`), deleted only when this run's (`delete_exports`, labels re-checked);
- their conditions (`export_state`: Valid, Ready and the conflict condition, type `Conflict` in both
  versions -- Go's `ServiceExportConflict` -- reasons `PortConflict`, ...), `wait_exported` bounded;
- ServiceImports (`ImportedService`: type, ips, ports, exporting clusters), `wait_imported` bounded;
- `conflicting_export` (a port conflict as data) and `port_conflict` (the condition it raises);
- `coredns_may_list_serviceimports`: the field's pitfall, CoreDNS's `multicluster` plugin without
  list/watch on ServiceImports answers nothing under clusterset.local and only logs "forbidden".

Only a real MCS implementation (the nightly `kind-mcs` job: Submariner Lighthouse) proves the
controller's side: that it sets these conditions and creates these ServiceImports.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from crossnet.plumbing.corefile_syntax import CorefileError, parse_corefile
from crossnet.providers.base import ProviderError
from crossnet.providers.existing.kube import ApiError, KubeApi, api_path
from crossnet.providers.kind.kube import MANAGED_BY, RUN_LABEL, conflict_error, is_ours

__all__ = [
    "CONFLICT_TYPES",
    "GROUP",
    "Condition",
    "ExportState",
    "ImportedService",
    "McsVersion",
    "conflicting_export",
    "coredns_may_list_serviceimports",
    "coredns_serviceimport_grant",
    "corefile_serves_multicluster",
    "create_exports",
    "delete_exports",
    "export_state",
    "no_mcs_message",
    "port_conflict",
    "read_import",
    "read_imports",
    "require_served_version",
    "served_version",
    "service_export",
    "wait_exported",
    "wait_imported",
]

GROUP = "multicluster.x-k8s.io"
McsVersion = Literal["v1beta1", "v1alpha1"]
VERSIONS: tuple[McsVersion, ...] = ("v1beta1", "v1alpha1")  # the first one served wins
RESOURCES = ("serviceexports", "serviceimports")
# "Conflict" in v1alpha1 and v1beta1 (Go: ServiceExportConflict, which some implementations wrote as the type)
CONFLICT_TYPES = ("Conflict", "ServiceExportConflict")
# Valid=False for good (mcs-api's reasons, Lighthouse's); others (AwaitingSync, NoService) may pass: waited out.
FINAL_INVALID = ("InvalidServiceType", "UnsupportedServiceType")
NEEDED_VERBS, CORE_DNS_SA = ("list", "watch"), ("kube-system", "coredns")
RBAC, EXPORT_TIMEOUT = "/apis/rbac.authorization.k8s.io/v1", 120.0


def no_mcs_message(cluster: str) -> str:
    return (
        f"no MCS API on cluster {cluster}: install an MCS implementation (Submariner Lighthouse, Karmada, the "
        f"mcs-api controller); the API server serves neither {GROUP}/v1beta1 nor /v1alpha1 for "
        f"{' and '.join(RESOURCES)}"
    )


def served_version(api: KubeApi, say: Callable[[str], None] | None = None) -> McsVersion | None:
    """The version of `multicluster.x-k8s.io` the API server serves both serviceexports and
    serviceimports in (API discovery): v1beta1 where served, v1alpha1 otherwise; None when neither
    (and `say` is told why, naming the cluster)."""
    for version in VERSIONS:
        try:
            found = api.request("GET", f"/apis/{GROUP}/{version}")
        except ApiError as exc:
            if exc.status == 404:
                continue
            raise
        resources = found.get("resources") if isinstance(found, dict) else None
        names = {r.get("name") for r in resources or [] if isinstance(r, dict)}
        if set(RESOURCES) <= names:
            return version
    if say is not None:
        say(no_mcs_message(api.context))
    return None


def require_served_version(api: KubeApi, cluster: str) -> McsVersion:
    version = served_version(api)
    if version is None:
        raise ProviderError(no_mcs_message(cluster))
    return version


# ------------------------------------------------------------------------------------ ServiceExports


def run_labels(run_id: str) -> dict[str, str]:
    return {**MANAGED_BY, RUN_LABEL: run_id}


def service_export(name: str, namespace: str, run_id: str, version: McsVersion = "v1alpha1") -> dict[str, Any]:
    """The ServiceExport of Service `namespace/name`, labelled as this run's."""
    if not run_id:
        raise ProviderError("a ServiceExport crossnet makes carries its run id: none given")
    meta = {"name": name, "namespace": namespace, "labels": run_labels(run_id)}
    return {"apiVersion": f"{GROUP}/{version}", "kind": "ServiceExport", "metadata": meta}


def _exports_path(manifest: Mapping[str, Any], named: bool = False) -> str:
    meta = manifest["metadata"]
    return api_path(manifest["apiVersion"], "serviceexports", meta["namespace"], meta["name"] if named else "")


def create_exports(api: KubeApi, cluster: str, exports: Iterable[Mapping[str, Any]]) -> None:
    """Create each ServiceExport; a same-named one is fine only when it is this run's own (re-apply)."""
    for manifest in exports:
        try:
            api.request("POST", _exports_path(manifest), body=dict(manifest))
        except ApiError as exc:
            if exc.status != 409:
                raise
            found = api.request("GET", _exports_path(manifest, named=True))
            labels = ((found.get("metadata") if isinstance(found, dict) else None) or {}).get("labels")
            conflict = conflict_error(cluster, dict(manifest), labels if isinstance(labels, dict) else {})
            if conflict is not None:
                raise conflict from None


def delete_exports(api: KubeApi, namespace: str, run_id: str, version: McsVersion = "v1alpha1") -> list[str]:
    """Delete the ServiceExports in `namespace` this run made (selected by its labels, each one's labels
    checked again before it goes); returns their names. Nobody else's export is touched."""
    if not run_id:
        raise ProviderError("crossnet deletes ServiceExports only by its own run id: none given")
    path = api_path(f"{GROUP}/{version}", "serviceexports", namespace)
    selector = ",".join(f"{k}={v}" for k, v in run_labels(run_id).items())
    try:
        found = api.request("GET", path, query=[("labelSelector", selector)])
    except ApiError as exc:
        if exc.status == 404:  # no MCS API (any more), or no namespace: nothing of ours is left
            return []
        raise
    deleted = []
    for item in (found.get("items") if isinstance(found, dict) else None) or []:
        meta = item.get("metadata") if isinstance(item, dict) else None
        if not isinstance(meta, dict) or not is_ours(meta.get("labels"), run_id):
            continue
        try:
            api.request("DELETE", f"{path}/{meta['name']}")
        except ApiError as exc:
            if exc.status != 404:
                raise
        deleted.append(str(meta["name"]))
    return deleted


# ------------------------------------------------------------------------------------ conditions


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # True | False | Unknown
    reason: str = ""
    message: str = ""

    def __str__(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.type}={self.status}{why}" + (f": {self.message}" if self.message else "")


@dataclass(frozen=True)
class ExportState:
    """A ServiceExport as its MCS controller left it (None: it does not exist)."""

    name: str
    namespace: str
    conditions: tuple[Condition, ...] = ()

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    @property
    def valid(self) -> bool | None:
        found = self.condition("Valid")
        return None if found is None else found.status == "True"

    @property
    def ready(self) -> bool | None:
        found = self.condition("Ready")
        return None if found is None else found.status == "True"

    @property
    def conflict(self) -> Condition | None:
        """The conflict condition when it is raised: type Conflict (or ServiceExportConflict), status True."""
        return next((c for c in self.conditions if c.type in CONFLICT_TYPES and c.status == "True"), None)

    def summary(self) -> str:
        return "; ".join(map(str, self.conditions)) or "no condition yet (is the MCS controller running?)"


def _conditions(obj: Mapping[str, Any]) -> tuple[Condition, ...]:
    found = []
    for raw in ((obj.get("status") or {}).get("conditions") or []) if isinstance(obj.get("status"), dict) else []:
        if isinstance(raw, dict) and isinstance(raw.get("type"), str):
            text = {k: str(raw.get(k) or "")[:400] for k in ("status", "reason", "message")}
            found.append(Condition(raw["type"], text["status"] or "Unknown", text["reason"], text["message"]))
    return tuple(found)


def export_state(api: KubeApi, namespace: str, name: str, version: McsVersion = "v1alpha1") -> ExportState | None:
    try:
        obj = api.request("GET", api_path(f"{GROUP}/{version}", "serviceexports", namespace, name))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return ExportState(name, namespace, _conditions(obj if isinstance(obj, dict) else {}))


def port_conflict(state: ExportState | None) -> Condition | None:
    """The raised conflict condition when it is about ports: v1beta1's reason PortConflict, or an
    implementation's own reason or message naming ports (Lighthouse: "The service ports conflict ...")."""
    found = state.conflict if state is not None else None
    if found is None:
        return None
    text = f"{found.reason} {found.message}".lower()
    return found if "port" in text else None


def _export_problem(state: ExportState | None, require_ready: bool) -> tuple[bool, str]:
    """(done, what is wrong) of one export; a problem with done=True is final (no point waiting)."""
    if state is None:
        return False, "the ServiceExport does not exist"
    if state.conflict is not None:
        return True, f"conflict: {state.conflict}"
    valid = state.condition("Valid")
    if valid is not None and valid.status == "False" and valid.reason in FINAL_INVALID:
        return True, f"not valid: {valid}"
    ready = state.condition("Ready")
    if valid is None or valid.status != "True":  # Lighthouse: Valid=False AwaitingSync until the broker has it
        return False, state.summary()
    if ready is not None and ready.status != "True":
        return False, f"not ready yet: {ready}"
    if require_ready and ready is None:
        return False, "Valid=True, no Ready condition yet"
    return True, ""


def wait_exported(
    api: KubeApi,
    cluster: str,
    namespace: str,
    names: Sequence[str],
    version: McsVersion = "v1alpha1",
    timeout: float = EXPORT_TIMEOUT,
    pause: float = 2.0,
    require_ready: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, ExportState]:
    """Wait (at most `timeout` seconds) until every ServiceExport `names` is Valid=True and not Ready
    False/Unknown (Ready=True too with `require_ready`: mcs-api's v1beta1 controllers set it, older
    ones only Valid). A conflict or Valid=False ends the wait at once; every error names the export,
    the condition and its message."""
    deadline = clock() + timeout
    while True:
        states = {n: export_state(api, namespace, n, version) for n in names}
        verdicts = {n: _export_problem(s, require_ready) for n, s in states.items()}
        final = [f"{n}: {why}" for n, (done, why) in verdicts.items() if done and why]
        if final:
            raise ProviderError(f"{cluster}: ServiceExport {namespace}/" + f"; {namespace}/".join(final))
        pending = [f"{n}: {why}" for n, (done, why) in verdicts.items() if not done]
        if not pending:
            return {n: s for n, s in states.items() if s is not None}
        if clock() >= deadline:
            raise ProviderError(
                f"{cluster}: ServiceExport(s) in {namespace} not exported within {timeout:.0f}s: "
                + "; ".join(pending)
                + f" (`kubectl get serviceexports.{GROUP} -n {namespace} -o yaml` shows the conditions)"
            )
        sleep(pause)


# ------------------------------------------------------------------------------------ ServiceImports


@dataclass(frozen=True)
class ImportPort:
    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True)
class ImportedService:
    name: str
    namespace: str
    type: str  # ClusterSetIP | Headless (as the controller wrote it)
    ips: tuple[str, ...] = ()  # the clusterset IP(s): empty for Headless, and where the implementation allocates none
    ports: tuple[ImportPort, ...] = ()
    clusters: tuple[str, ...] = ()  # the exporting clusters (status.clusters)


def _imported(obj: Mapping[str, Any]) -> ImportedService | None:
    meta, spec = obj.get("metadata"), obj.get("spec")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not isinstance(spec, dict):
        return None
    ips = []
    for ip in spec.get("ips") or []:
        try:
            ips.append(str(ipaddress.ip_address(str(ip))))
        except ValueError:
            continue
    ports = []
    for p in spec.get("ports") or []:
        if isinstance(p, dict) and isinstance(p.get("port"), int) and 0 < p["port"] < 65536:
            ports.append(ImportPort(p["port"], str(p.get("protocol") or "TCP"), str(p.get("name") or "")))
    status = obj.get("status")
    status = status if isinstance(status, dict) else {}
    clusters = [str(c["cluster"]) for c in status.get("clusters") or [] if isinstance(c, dict) and c.get("cluster")]
    return ImportedService(
        meta["name"],
        str(meta.get("namespace") or ""),
        str(spec.get("type") or ""),
        tuple(ips),
        tuple(ports),
        tuple(clusters),
    )


def read_imports(api: KubeApi, namespace: str, version: McsVersion = "v1alpha1") -> dict[str, ImportedService]:
    """The ServiceImports in `namespace` by name (empty when there are none, or no MCS API)."""
    try:
        found = api.request("GET", api_path(f"{GROUP}/{version}", "serviceimports", namespace))
    except ApiError as exc:
        if exc.status == 404:
            return {}
        raise
    items = (found.get("items") if isinstance(found, dict) else None) or []
    parsed = [_imported(i) for i in items if isinstance(i, dict)]
    return {i.name: i for i in parsed if i is not None}


def read_import(api: KubeApi, namespace: str, name: str, version: McsVersion = "v1alpha1") -> ImportedService | None:
    return read_imports(api, namespace, version).get(name)


def wait_imported(
    api: KubeApi,
    cluster: str,
    namespace: str,
    wanted: Mapping[str, str],
    version: McsVersion = "v1alpha1",
    timeout: float = EXPORT_TIMEOUT,
    pause: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, ImportedService]:
    """Wait (bounded) until `namespace` on `cluster` has a ServiceImport per name of `wanted` (name ->
    type, ClusterSetIP or Headless) of that type; the error says what is missing and what is there."""
    deadline = clock() + timeout
    while True:
        found = read_imports(api, namespace, version)
        wrong = [
            f"{n}: {'missing' if n not in found else f'type {found[n].type!r}, not {t}'}"
            for n, t in wanted.items()
            if n not in found or found[n].type != t
        ]
        if not wrong:
            return {n: found[n] for n in wanted}
        if clock() >= deadline:
            there = ", ".join(f"{i.name} ({i.type})" for i in found.values()) or "none"
            raise ProviderError(
                f"{cluster}: the ServiceImports in {namespace} are not there within {timeout:.0f}s: "
                f"{'; '.join(wrong)} (there: {there}); is the MCS controller importing into this cluster?"
            )
        sleep(pause)


# ------------------------------------------------------------------------------------ a port conflict


def conflicting_export(
    name: str, namespace: str, run_id: str, ports: Sequence[int], version: McsVersion = "v1alpha1"
) -> list[dict[str, Any]]:
    """What makes a port conflict when created in a second cluster while the first exports `name` with
    other ports: a same-named ClusterIP Service with `ports` (no selector: nothing behind it) and its
    ServiceExport, both labelled as this run's. The MCS controller then raises the conflict condition
    (`port_conflict` recognises it) on at least this export."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": run_labels(run_id)},
        "spec": {
            "type": "ClusterIP",
            "ports": [{"name": f"p{p}", "port": int(p), "protocol": "TCP"} for p in ports],
        },
    }
    return [service, service_export(name, namespace, run_id, version)]


# ------------------------------------------------------------------------------------ CoreDNS's RBAC


def corefile_serves_multicluster(corefile: str) -> bool:
    """True when a server block of the Corefile uses CoreDNS's `multicluster` plugin (which reads
    ServiceImports itself: its RBAC matters). Submariner Lighthouse instead forwards clusterset.local
    to its own DNS server, with its own ServiceAccount."""
    try:
        parsed = parse_corefile(corefile, "configmap kube-system/coredns")
    except CorefileError:
        return "multicluster" in corefile.split()
    return any(server.plugins("multicluster") for server in parsed.servers)


def _service_account(api: KubeApi) -> str:
    try:
        deployment = api.request("GET", "/apis/apps/v1/namespaces/kube-system/deployments/coredns")
    except ApiError:
        return CORE_DNS_SA[1]
    try:
        name = deployment["spec"]["template"]["spec"].get("serviceAccountName")
    except (AttributeError, KeyError, TypeError):
        name = None
    return name if isinstance(name, str) and name else CORE_DNS_SA[1]


def _binds(binding: Mapping[str, Any], namespace: str, account: str) -> bool:
    for subject in binding.get("subjects") or []:
        if not isinstance(subject, dict):
            continue
        kind, name = subject.get("kind"), subject.get("name")
        if kind == "ServiceAccount" and name == account and subject.get("namespace") == namespace:
            return True
        if kind == "Group" and name in ("system:serviceaccounts", f"system:serviceaccounts:{namespace}"):
            return True
    return False


def _granted_verbs(rules: Any) -> set[str]:
    verbs: set[str] = set()
    for rule in rules or []:
        if not isinstance(rule, dict) or rule.get("resourceNames"):
            continue  # a rule narrowed to names grants no list of them all
        if {GROUP, "*"} & set(rule.get("apiGroups") or []) and {"serviceimports", "*"} & set(
            rule.get("resources") or []
        ):
            verbs |= set(rule.get("verbs") or [])
    return verbs


def _fix(role: str) -> str:
    rule = [{"apiGroups": [GROUP], "resources": ["serviceimports"], "verbs": list(NEEDED_VERBS)}]
    return f"add this rule to the ClusterRole {role} (`kubectl edit clusterrole {role}`):\n" + yaml.safe_dump(
        rule, default_flow_style=None, sort_keys=False
    )


def coredns_serviceimport_grant(api: KubeApi, cluster: str) -> tuple[bool | None, str]:
    """(granted, problem): whether the ClusterRoles bound cluster-wide to CoreDNS's ServiceAccount
    (kube-system, the Deployment's serviceAccountName, `coredns` by default; the ClusterRoleBinding
    system:coredns and whatever else binds it) grant list and watch on serviceimports.multicluster.x-k8s.io.
    None when the RBAC objects cannot be read (the problem then says how to check by hand)."""
    namespace, account = CORE_DNS_SA[0], _service_account(api)
    who = f"system:serviceaccount:{namespace}:{account}"
    by_hand = f"`kubectl auth can-i list serviceimports.{GROUP} --as={who}` (and `watch`)"
    try:
        listed = api.request("GET", f"{RBAC}/clusterrolebindings")
        bindings = [b for b in (listed.get("items") or []) if isinstance(b, dict) and _binds(b, namespace, account)]
        verbs: set[str] = set()
        roles = []
        for binding in bindings:
            ref = binding.get("roleRef") or {}
            if ref.get("kind") != "ClusterRole" or not isinstance(ref.get("name"), str):
                continue
            roles.append(ref["name"])
            try:
                role = api.request("GET", f"{RBAC}/clusterroles/{ref['name']}")
            except ApiError as exc:
                if exc.status != 404:  # a binding to a role that does not exist grants nothing
                    raise
                continue
            verbs |= _granted_verbs(role.get("rules") if isinstance(role, dict) else None)
    except ApiError as exc:
        return None, (
            f"{cluster}: cannot check whether CoreDNS may list ServiceImports (reading its RBAC: {exc.status} "
            f"{exc.reason}); check it by hand: {by_hand}"
        )
    missing = [v for v in NEEDED_VERBS if v not in verbs and "*" not in verbs]
    if not missing:
        return True, ""
    target = "system:coredns" if "system:coredns" in roles or not roles else roles[0]
    bound = f"bound through ClusterRole(s) {', '.join(sorted(set(roles)))}" if roles else "bound to no ClusterRole"
    return False, (
        f"{cluster}: CoreDNS ({who}, {bound}) may not {' and '.join(missing)} serviceimports.{GROUP}; its "
        f'multicluster plugin then answers nothing under clusterset.local and only logs "forbidden". Fix: '
        f"{_fix(target)}then restart CoreDNS (`kubectl -n kube-system rollout restart deployment coredns`); "
        f"check: {by_hand}"
    )


def coredns_may_list_serviceimports(api: KubeApi, cluster: str | None = None) -> str | None:
    """None when CoreDNS may list and watch ServiceImports; else the one problem, with the fix."""
    granted, problem = coredns_serviceimport_grant(api, cluster or api.context)
    return None if granted else problem
