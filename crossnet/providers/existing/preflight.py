"""`crossnet preflight`: can a run work on these clusters, and what would stop it — without writing
anything (reads, SelfSubjectAccessReviews and server-side dry runs only).

Per context: the API server answers (and its version); discovery works; a SelfSubjectAccessReview
for every right crossnet will use (rbac.rights); dry-run creates of the run's namespace (with the
Pod Security label host vantages need, when asked) and — where the namespace already exists
(--namespace) — of an agent pod, a hostNetwork pod, a debug pod and the Services, so admission and
quota rejections show before anything exists; the CRDs the profile needs; leftovers of earlier
runs. Across contexts: one cluster behind two contexts, the profile's `requires:`, shared cluster
domains, and overlapping pod/service CIDRs unless the profile declares Globalnet.

A per-run namespace does not exist before the run, and the API server refuses any dry run inside a
namespace that does not exist: those pod and Service rows are `skip` here, and a run repeats the
same dry runs right after creating its namespace (an agent pod refused stops the run with the
reason; a hostNetwork pod refused only turns the host vantages off, with the reason).

Every failing row says how to fix it; `fail` blocks a run (exit 1), `warn` does not.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from crossnet.providers.base import ProviderError
from crossnet.providers.existing.clusterset import ClusterRef
from crossnet.providers.existing.discovery import (
    GLOBALNET_CRDS,
    MCS_CRDS,
    ClusterFacts,
    discover_cluster,
    same_cluster_problems,
)
from crossnet.providers.existing.draft import requires_problems
from crossnet.providers.existing.kube import ApiError, ExistingKube
from crossnet.providers.existing.rbac import rights
from crossnet.providers.existing.settings import ExistingSettings
from crossnet.providers.kube_agents import MANAGED_SELECTOR

__all__ = ["Row", "blocking", "needed_crds", "preflight", "probe_manifests", "render_table", "rows_json"]

Status = Literal["ok", "warn", "fail", "skip"]
PRIVILEGED = "pod-security.kubernetes.io/enforce"
RBAC_FIX = "grant it: `crossnet rbac {flags}| kubectl --context {context} apply -f -` (as a cluster administrator)"


@dataclass(frozen=True)
class Row:
    cluster: str
    check: str
    status: Status
    detail: str
    fix: str = ""


def needed_crds(settings: ExistingSettings) -> list[str]:
    """The CRDs the profile needs on every cluster."""
    wanted = dict(settings.requires).get("multicluster", ())
    crds: list[str] = []
    if settings.globalnet or "submariner-globalnet" in wanted:
        crds += GLOBALNET_CRDS
    if settings.mcs or settings.globalnet or "mcs" in wanted:
        crds += MCS_CRDS
    return sorted(set(crds))


def _rbac_flags(settings: ExistingSettings) -> str:
    flags = ["--node-evidence"] if settings.node_evidence else []
    flags += ["--plumbing", "inject"] if settings.inject else []
    flags += ["--namespace", settings.namespace] if settings.namespace else []
    return " ".join(flags) + (" " if flags else "")


def _rights_rows(ref: ClusterRef, kube: ExistingKube, settings: ExistingSettings, namespace: str) -> list[Row]:
    rows = []
    for right in rights(
        node_evidence=settings.node_evidence,
        mcs=settings.mcs,
        globalnet=settings.globalnet,
        fixed_namespace=bool(settings.namespace),
        inject=settings.inject,
    ):
        where = {"cluster": "", "namespaces": "", "kube-system": "kube-system", "run": namespace}[right.scope]
        denied = []
        for verb in right.verbs:
            for name in right.names or ("",):
                allowed, _ = kube.may(verb, right.group, right.base, where, right.subresource, name)
                if not allowed:
                    denied.append(f"{verb}{f' {name}' if name else ''}")
        what = f"may {'/'.join(right.verbs)} {right.resource}" + (f" in {where}" if where else "")
        if denied:
            fix = RBAC_FIX.format(flags=_rbac_flags(settings), context=ref.context)
            rows.append(Row(ref.name, what, "fail", f"denied: {', '.join(denied)} ({right.why})", fix))
        else:
            rows.append(Row(ref.name, what, "ok", right.why))
    return rows


def probe_manifests(namespace: str, labels: Mapping[str, str], settings: ExistingSettings) -> dict[str, dict[str, Any]]:
    """What preflight and a run dry-run: one of each kind of object a run creates."""
    from crossnet.providers.kube_agents import AgentNode, AgentPodOptions, agent_pod

    options = AgentPodOptions(
        restricted=True,
        image_pull_secrets=settings.image_pull_secrets,
        tolerations=settings.tolerations,
        node_selector=settings.node_selector,
    )
    node = AgentNode("preflight", "preflight-node")
    pod = agent_pod("preflight", node, "pod", namespace=namespace, image=settings.image, labels=labels, options=options)
    host = agent_pod(
        "preflight", node, "host", namespace=namespace, image=settings.image, labels=labels, options=options
    )
    for made in (pod, host):
        made["spec"].pop("nodeName")  # a dry run must not depend on a node's name
    manifests = {"agent pod": pod}
    if settings.host_vantage:
        manifests["hostNetwork pod"] = host
    if settings.node_evidence or settings.inject:
        from crossnet.providers.existing.debug import debug_pod

        debug = debug_pod(node, namespace, labels, settings)
        debug["spec"].pop("nodeName")
        manifests["debug pod"] = debug
    ports = [{"name": "tcp", "protocol": "TCP", "port": 8080, "targetPort": 8080}]
    for name, spec in (("NodePort Service", {"type": "NodePort"}), ("headless Service", {"clusterIP": "None"})):
        manifests[name] = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "crossnet-preflight", "namespace": namespace, "labels": dict(labels)},
            "spec": {**spec, "selector": {"app": "crossnet-preflight"}, "ports": ports},
        }
    return manifests


def _namespace_rows(
    ref: ClusterRef, kube: ExistingKube, settings: ExistingSettings, namespace: str, labels: Mapping[str, str]
) -> list[Row]:
    rows = []
    if settings.namespace:
        found = kube.namespace(namespace)
        if found is None:
            return [Row(ref.name, f"namespace {namespace}", "fail", "does not exist", f"kubectl create ns {namespace}")]
        level = ((found.get("metadata") or {}).get("labels") or {}).get(PRIVILEGED, "")
        rows.append(Row(ref.name, f"namespace {namespace}", "ok", f"exists (pod security: {level or 'default'})"))
        if settings.host_vantage and level in ("baseline", "restricted"):
            rows.append(
                Row(
                    ref.name,
                    "host vantages",
                    "warn",
                    f"namespace {namespace} enforces pod security {level}: hostNetwork pods are refused, the host "
                    "vantages' cells will be skipped",
                    f"kubectl label ns {namespace} {PRIVILEGED}=privileged --overwrite, if your policy allows it",
                )
            )
        for what, manifest in probe_manifests(namespace, labels, settings).items():
            error = kube.dry_run_error(manifest)
            status: Status = "ok" if error is None else ("fail" if what == "agent pod" else "warn")
            detail = "a dry-run create is accepted" if error is None else f"refused: {error.status} {error.api_message}"
            rows.append(
                Row(ref.name, f"dry-run {what}", status, detail[:400], "" if error is None else _admit_fix(what))
            )
        return rows
    plain: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": dict(labels)},
    }
    error = kube.dry_run_error(plain)
    if error is not None:
        rows.append(
            Row(
                ref.name,
                "dry-run namespace",
                "fail",
                f"refused: {error.status} {error.api_message[:300]}",
                "grant creating namespaces (`crossnet rbac`), or have one made and pass --namespace NS",
            )
        )
        return rows
    rows.append(Row(ref.name, "dry-run namespace", "ok", f"{namespace} would be created"))
    if settings.host_vantage:
        privileged = {**plain, "metadata": {**plain["metadata"], "labels": {**labels, PRIVILEGED: "privileged"}}}
        error = kube.dry_run_error(privileged)
        rows.append(
            Row(
                ref.name,
                "dry-run privileged namespace",
                "ok" if error is None else "warn",
                "hostNetwork pods may run there"
                if error is None
                else f"refused ({error.status} {error.api_message[:200]}): the host vantages' cells will be skipped",
            )
        )
    rows.append(
        Row(
            ref.name,
            "dry-run pods and Services",
            "skip",
            "checked when a run starts: the API server refuses dry runs in a namespace that does not exist yet",
            "for a check now, have a namespace made and pass --namespace NS",
        )
    )
    return rows


def _admit_fix(what: str) -> str:
    if what == "agent pod":
        return "the agents meet Pod Security 'restricted'; ask which policy refuses them (Gatekeeper, Kyverno, quota)"
    return f"without it the {what}'s cells are skipped; allow privileged pods in crossnet's namespace if you want them"


def _cluster_rows(
    ref: ClusterRef, kube: ExistingKube, settings: ExistingSettings, namespace: str, facts: ClusterFacts | None
) -> tuple[list[Row], ClusterFacts | None]:
    from crossnet.providers.kube_agents import run_labels

    try:
        version = kube.version()
    except ProviderError as exc:
        return [Row(ref.name, "API server", "fail", str(exc), f"kubectl --context {ref.context} version")], None
    rows = [Row(ref.name, "API server", "ok", f"reachable through context {ref.context}, Kubernetes {version}")]
    try:
        facts = facts or discover_cluster(ref, kube)
    except ProviderError as exc:
        rows.append(Row(ref.name, "discovery", "fail", str(exc), "see the rights below; `crossnet rbac`"))
    else:
        rows.append(Row(ref.name, "discovery", "ok", facts.summary()))
        rows += [Row(ref.name, "discovery note", "warn", note) for note in facts.notes]
        if not facts.domain:
            fix = "add `hints: {domain: ...}` for it in a cluster-set file"
            rows.append(Row(ref.name, "cluster domain", "fail", "not found in kubeadm-config or the Corefile", fix))
        missing = [c for c in needed_crds(settings) if c not in facts.crds]
        if missing:
            fix = "install the multi-cluster layer the profile is written for, or choose another profile"
            rows.append(Row(ref.name, "CRDs the profile needs", "fail", f"missing: {', '.join(missing)}", fix))
        elif needed_crds(settings):
            rows.append(Row(ref.name, "CRDs the profile needs", "ok", ", ".join(needed_crds(settings))))
    rows += _rights_rows(ref, kube, settings, namespace)
    labels = run_labels(namespace.removeprefix("crossnet-"))
    try:
        rows += _namespace_rows(ref, kube, settings, namespace, labels)
        leftovers = [n for n, _, _ in kube.namespaces(MANAGED_SELECTOR) if n != settings.namespace]
    except ApiError as exc:
        rows.append(Row(ref.name, "namespace checks", "fail", str(exc), "`crossnet rbac`"))
        leftovers = []
    if leftovers:
        fix = f"crossnet down --context {ref.name}={ref.context} --all (deletes only namespaces crossnet labelled)"
        rows.append(Row(ref.name, "leftovers", "warn", f"earlier runs' namespaces: {', '.join(leftovers[:10])}", fix))
    else:
        rows.append(Row(ref.name, "leftovers", "ok", "no namespace of an earlier run"))
    return rows, facts


def _networks(fact: ClusterFacts) -> list[tuple[str, ipaddress.IPv4Network]]:
    found = [("pod CIDR", c) for c in fact.pod_cidrs] + [("service CIDR", c) for c in fact.service_cidrs]
    return [(what, ipaddress.IPv4Network(c)) for what, c in found]


def cross_rows(facts: Sequence[ClusterFacts], settings: ExistingSettings) -> list[Row]:
    """One cluster twice, the profile's requires:, shared domains, overlapping CIDRs."""
    rows = [Row("*", "distinct clusters", "fail", p, "") for p in same_cluster_problems(facts)]
    rows += [
        Row("*", "profile requires", "fail", p, "use a profile written for this setup (`crossnet discover` drafts one)")
        for p in requires_problems(settings.requires, facts)
    ]
    for i, a in enumerate(facts):
        for b in facts[i + 1 :]:
            if a.domain and a.domain == b.domain and not settings.globalnet:
                rows.append(
                    Row(
                        f"{a.name},{b.name}",
                        "cluster domains",
                        "fail",
                        f"both serve {a.domain}: a peer's Service names resolve in the own cluster",
                        "give the clusters distinct domains, or use a profile that declares Globalnet",
                    )
                )
            overlaps = [
                f"{a.name} {wa} {na} overlaps {b.name} {wb} {nb}"
                for wa, na in _networks(a)
                for wb, nb in _networks(b)
                if na.overlaps(nb)
            ]
            if overlaps and not settings.globalnet:
                fix = "plain routing cannot tell these clusters apart: use a profile that declares Globalnet"
                rows.append(Row(f"{a.name},{b.name}", "CIDR overlap", "fail", "; ".join(overlaps[:4]), fix))
            elif not (a.pod_cidrs and b.pod_cidrs):
                unknown = a.name if not a.pod_cidrs else b.name
                fix = "give `hints: {pod_cidrs: [...]}` in a cluster-set file"
                rows.append(Row(f"{a.name},{b.name}", "CIDR overlap", "warn", f"{unknown}'s pod CIDRs unknown", fix))
            else:
                ok = "overlap allowed (Globalnet)" if overlaps else "pod and service CIDRs are disjoint"
                rows.append(Row(f"{a.name},{b.name}", "CIDR overlap", "ok", ok))
    return rows


def preflight(
    settings: ExistingSettings,
    kube_of: Callable[[ClusterRef], ExistingKube],
    namespace: str,
    facts: Mapping[str, ClusterFacts] | None = None,
) -> tuple[list[Row], dict[str, ClusterFacts]]:
    """Every row, and the facts discovered on the way (per cluster name)."""
    rows: list[Row] = []
    found: dict[str, ClusterFacts] = {}
    for ref in settings.clusters:
        try:
            kube = kube_of(ref)
        except ProviderError as exc:
            rows.append(Row(ref.name, "kubeconfig", "fail", str(exc), "see the message"))
            continue
        cluster_rows, fact = _cluster_rows(ref, kube, settings, namespace, (facts or {}).get(ref.name))
        rows += cluster_rows
        if fact is not None:
            found[ref.name] = fact
    if len(found) == len(settings.clusters):
        rows += cross_rows([found[r.name] for r in settings.clusters], settings)
    return rows, found


def blocking(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.status == "fail"]


def rows_json(rows: Sequence[Row]) -> str:
    return json.dumps({"rows": [asdict(r) for r in rows], "blocking": len(blocking(rows))}, indent=1)


def render_table(rows: Sequence[Row]) -> str:
    width = {k: max([len(k), *(len(getattr(r, k)) for r in rows)]) for k in ("cluster", "check")}
    lines = [f"{'CLUSTER':<{width['cluster']}}  {'CHECK':<{width['check']}}  STATUS  DETAIL"]
    for r in rows:
        lines.append(f"{r.cluster:<{width['cluster']}}  {r.check:<{width['check']}}  {r.status.upper():<6}  {r.detail}")
        if r.fix and r.status in ("fail", "warn"):
            lines.append(f"{'':<{width['cluster']}}  {'':<{width['check']}}  {'':<6}  fix: {r.fix}")
    failing = blocking(rows)
    lines.append(f"{len(failing)} blocking, {sum(r.status == 'warn' for r in rows)} warnings, {len(rows)} checks")
    return "\n".join(lines)
