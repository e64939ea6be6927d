"""The rights crossnet uses on an existing cluster, as data: `crossnet rbac` prints them as RBAC
YAML, `crossnet preflight` asks a SelfSubjectAccessReview for each, and the tests' fake API server
grants exactly these and denies everything else.

- cluster-wide read (ClusterRole `crossnet-discovery`): nodes, namespaces, DaemonSets, CRDs,
  ServiceCIDRs, Calico IPPools (and Globalnet's egress IPs for a Globalnet profile; for an MCS
  profile ClusterRoleBindings and ClusterRoles: whether CoreDNS may list ServiceImports);
- kube-system read (Role `crossnet-discovery`): the ConfigMaps coredns, kube-proxy,
  kubeadm-config and cilium-config by name, and the pods and Services there (CoreDNS; for an
  MCS profile the coredns Deployment by name: its ServiceAccount);
- the run's own namespace: pods, `pods/proxy` (the agents' control API), `pods/log` (an agent's
  resolv.conf), Services, ConfigMaps, Secrets (the agents' token); `pods/exec` only with
  --node-evidence or --plumbing inject; ServiceExports (made, read for their conditions, deleted) and ServiceImports
  (read) only for an MCS or Globalnet profile, GlobalIngressIPs only for a Globalnet one.

With `--plumbing inject` (clusters the user owns, joined the kind way): `pods/exec` (routes are
added in the run's debug pods) and `update` of the ConfigMap kube-system/coredns by name (the
peer forwards, restored at the end).

Where those last rights live depends on the namespace. RBAC cannot bind a Role in a namespace
that does not exist yet, so with per-run namespaces (`crossnet-<run-id>`, the default) they are a
ClusterRole bound cluster-wide, together with creating and deleting namespaces (crossnet deletes
only namespaces carrying its own run's labels; RBAC cannot narrow that to a prefix). With
`--namespace NS`, a namespace an administrator created, they are a Role in NS only and crossnet
needs no right on namespaces beyond reading them: the least-privilege setup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

__all__ = ["Right", "rbac_documents", "rbac_yaml", "rights"]

Scope = Literal["cluster", "kube-system", "namespaces", "run"]
DISCOVERY = "crossnet-discovery"
RUN = "crossnet-run"
NAMESPACES = "crossnet-namespaces"
READ_CONFIGMAPS = ("coredns", "kube-proxy", "kubeadm-config", "cilium-config")
MCS, RBAC = "multicluster.x-k8s.io", "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class Right:
    scope: Scope
    group: str
    resource: str  # with the subresource: "pods/proxy"
    verbs: tuple[str, ...]
    why: str
    names: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        return self.resource.split("/")[0]

    @property
    def subresource(self) -> str:
        return self.resource.partition("/")[2]


def rights(
    *,
    node_evidence: bool = False,
    mcs: bool = False,
    globalnet: bool = False,
    fixed_namespace: bool = False,
    inject: bool = False,
) -> list[Right]:
    """Every right crossnet uses with these options (what preflight checks and the fake grants)."""
    # In a namespace of its own, deleting that removes everything; in a given one, by the run's labels.
    cleanup = ("deletecollection",) if fixed_namespace else ()
    found: list[Right] = [
        Right("cluster", "", "nodes", ("get", "list"), "nodes: names, InternalIPs, podCIDRs, gateway labels"),
        Right(
            "cluster", "", "namespaces", ("get", "list"), "kube-system's UID (one cluster, two contexts?), leftovers"
        ),
        Right("cluster", "apps", "daemonsets", ("list",), "the CNI and kube-proxy, by their DaemonSets"),
        Right("cluster", "apiextensions.k8s.io", "customresourcedefinitions", ("list",), "the multi-cluster layer"),
        Right("cluster", "networking.k8s.io", "servicecidrs", ("list",), "the service CIDR (Kubernetes >= 1.31)"),
        Right("cluster", "crd.projectcalico.org", "ippools", ("list",), "pod CIDRs under Calico IPAM"),
        Right("kube-system", "", "configmaps", ("get",), "Corefile, kube-proxy mode, kubeadm CIDRs", READ_CONFIGMAPS),
        Right("kube-system", "", "pods", ("list",), "the CoreDNS pods' IPs"),
        Right("kube-system", "", "services", ("list",), "the cluster DNS Service, Cilium ClusterMesh"),
        Right("run", "", "pods", ("create", "get", "list", *cleanup), "the agents, pinned to nodes"),
        Right("run", "", "pods/proxy", ("create",), "the agents' control API, through the API server"),
        Right("run", "", "pods/log", ("get",), "an agent's resolv.conf search list (the cluster domain)"),
        Right("run", "", "services", ("create", "list", *cleanup), "echo Services (NodePort, headless, ExternalName)"),
        Right("run", "", "configmaps", ("create", *cleanup), "the agent program"),
        Right("run", "", "secrets", ("create", *cleanup), "the agents' per-run token"),
    ]
    if not fixed_namespace:
        found.append(Right("namespaces", "", "namespaces", ("create", "delete"), "the run's own namespace"))
    if node_evidence or inject:
        why = "--node-evidence: commands in debug pods" if not inject else "--plumbing inject: routes, in debug pods"
        found.append(Right("run", "", "pods/exec", ("create", "get"), why))
    if inject:
        why = "--plumbing inject: the peer forwards (restored at the end)"
        found.append(Right("kube-system", "", "configmaps", ("update",), why, ("coredns",)))
    if mcs or globalnet:  # providers/existing/mcs.py, providers/mcs_api.py
        found += [
            Right(
                "run", MCS, "serviceexports", ("create", "get", "delete", *cleanup), "export echo Services, conditions"
            ),
            Right("run", MCS, "serviceimports", ("get", "list"), "the ServiceImports the MCS controller makes"),
            Right("cluster", RBAC, "clusterrolebindings", ("list",), "who binds CoreDNS (may it list serviceimports?)"),
            Right("cluster", RBAC, "clusterroles", ("get",), "CoreDNS's ClusterRoles (may it list serviceimports?)"),
            Right("kube-system", "apps", "deployments", ("get",), "CoreDNS's ServiceAccount", ("coredns",)),
        ]
    if globalnet:
        found.append(Right("run", "submariner.io", "globalingressips", ("list",), "Globalnet's ingress IPs"))
        found.append(Right("cluster", "submariner.io", "clusterglobalegressips", ("list",), "Globalnet's egress IPs"))
    return found


def _rules(found: Sequence[Right]) -> list[dict[str, Any]]:
    rules = []
    for right in found:
        rule: dict[str, Any] = {"apiGroups": [right.group], "resources": [right.resource], "verbs": list(right.verbs)}
        if right.names:
            rule["resourceNames"] = list(right.names)
        rules.append(rule)
    return rules


def _subject(subject: str) -> dict[str, str]:
    kind, _, name = subject.partition(":")
    if kind == "ServiceAccount":
        namespace, _, account = name.partition("/")
        return {"kind": kind, "name": account, "namespace": namespace}
    return {"kind": kind, "name": name, "apiGroup": "rbac.authorization.k8s.io"}


def _binding(kind: str, name: str, role_kind: str, subject: str, namespace: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/part-of": "crossnet"}}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": [_subject(subject)],
    }


def _role(kind: str, name: str, found: Sequence[Right], namespace: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/part-of": "crossnet"}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": _rules(found)}


def rbac_documents(found: Sequence[Right], subject: str, namespace: str = "") -> list[dict[str, Any]]:
    """ClusterRole + binding (cluster-wide read), Role + binding in kube-system, and the run's rights:
    a Role + RoleBinding in `namespace`, or (per-run namespaces) ClusterRoles bound cluster-wide."""
    docs = [
        _role("ClusterRole", DISCOVERY, [r for r in found if r.scope == "cluster"]),
        _binding("ClusterRoleBinding", DISCOVERY, "ClusterRole", subject),
        _role("Role", DISCOVERY, [r for r in found if r.scope == "kube-system"], "kube-system"),
        _binding("RoleBinding", DISCOVERY, "Role", subject, "kube-system"),
    ]
    run = [r for r in found if r.scope == "run"]
    if namespace:
        docs += [_role("Role", RUN, run, namespace), _binding("RoleBinding", RUN, "Role", subject, namespace)]
    else:
        docs += [
            _role("ClusterRole", NAMESPACES, [r for r in found if r.scope == "namespaces"]),
            _binding("ClusterRoleBinding", NAMESPACES, "ClusterRole", subject),
            _role("ClusterRole", RUN, run),
            _binding("ClusterRoleBinding", RUN, "ClusterRole", subject),
        ]
    return docs


def rbac_yaml(found: Sequence[Right], subject: str, namespace: str = "") -> str:
    """`crossnet rbac`'s output: the documents with a comment on each right's use."""
    header = [
        "# The rights crossnet uses on each cluster (`crossnet rbac`); apply with kubectl apply -f -.",
        f"# Bound to {subject}: change the subjects to the identity of your kubeconfig context.",
        "# What each right is for:",
        *(f"#   {r.scope:<11} {r.resource:<26} {','.join(r.verbs):<22} {r.why}" for r in found),
    ]
    if namespace:
        header.append(f"# The run's rights are a Role in namespace {namespace}; run with --namespace {namespace}.")
    else:
        header += [
            "# Each run makes its own namespace crossnet-<run-id>: RBAC cannot bind a Role in a namespace that",
            "# does not exist yet, so the run's rights (crossnet-run) are bound cluster-wide, and namespaces may",
            "# be created and deleted (crossnet deletes only those labelled with its own run). For rights in one",
            "# namespace only, have it created and pass --namespace NS (to this command and to the run).",
        ]
    body = yaml.safe_dump_all(rbac_documents(found, subject, namespace), sort_keys=False, explicit_start=True)
    return "\n".join(header) + "\n" + body
