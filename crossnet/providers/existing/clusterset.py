"""Which clusters a run is about: `--context NAME=CONTEXT` (repeated, in order) or a cluster-set
file (`clustersets/<name>.yaml`), each cluster with optional hints for what discovery cannot tell.

    name: vendor-x                     # optional
    kubeconfig: ~/.kube/config         # optional: default --kubeconfig, $KUBECONFIG, ~/.kube/config
    clusters:
      - name: cluster-1                # how cells and reports name it (a DNS-1123 label)
        context: kind-cluster-1        # the kubeconfig context that reaches it
        kubeconfig: ./c1.kubeconfig    # optional, per cluster (two files that both call their
                                       # context kubernetes-admin@kubernetes)
        hints:                         # optional
          domain: cluster-1.local
          pod_cidrs: [10.10.0.0/16]
          service_cidr: 10.110.0.0/16

Every problem is reported at once; two clusters on the same (kubeconfig, context) is one of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crossnet import yamlsafe
from crossnet.config import dns1123_label_problem, dns_domain_problem
from crossnet.providers.base import InputError
from crossnet.yamlsafe import cut

__all__ = ["ClusterRef", "check_refs", "clusterset_yaml", "load_clusterset", "parse_contexts"]

CLUSTER_KEYS = frozenset({"name", "context", "kubeconfig", "hints"})
HINT_KEYS = frozenset({"domain", "pod_cidrs", "service_cidr"})
FILE_KEYS = frozenset({"name", "kubeconfig", "clusters"})


@dataclass(frozen=True)
class ClusterRef:
    """One cluster of the set: its name in crossnet, its context, and the hints given for it."""

    name: str
    context: str
    kubeconfig: str = ""  # "" = the run's kubeconfig
    domain: str = ""
    pod_cidrs: tuple[str, ...] = ()
    service_cidr: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "context": self.context}
        if self.kubeconfig:
            data["kubeconfig"] = self.kubeconfig
        hints = {
            k: v
            for k, v in (
                ("domain", self.domain),
                ("pod_cidrs", list(self.pod_cidrs)),
                ("service_cidr", self.service_cidr),
            )
            if v
        }
        if hints:
            data["hints"] = hints
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterRef:
        problems: list[str] = []
        ref = _ref(data, "recorded cluster", "", problems)
        if ref is None or problems:
            raise InputError(f"the state's cluster list is malformed: {'; '.join(problems)[:300]}")
        return ref


def _cidr(value: Any, where: str, problems: list[str]) -> str:
    try:
        network = ipaddress.ip_network(value if isinstance(value, str) else "-", strict=False)
    except ValueError:
        problems.append(f"{where}: {cut(value)} is not a CIDR such as 10.96.0.0/16")
        return ""
    if network.version != 4:
        problems.append(f"{where}: {cut(value)} is IPv6; this version covers IPv4 only")
        return ""
    return str(network)


def _ref(raw: Any, where: str, base: str, problems: list[str]) -> ClusterRef | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: is not a mapping with name and context")
        return None
    for key in sorted((str(k) for k in raw if k not in CLUSTER_KEYS), key=str):
        problems.append(f"{where}: unknown key {cut(key)}; known: {', '.join(sorted(CLUSTER_KEYS))}")
    name, context = raw.get("name"), raw.get("context")
    problem = dns1123_label_problem(name)
    if problem:
        problems.append(f"{where}: name {problem}; name clusters like cluster-1")
    if not isinstance(context, str) or not context or len(context) > 253 or any(ord(c) < 32 for c in context):
        problems.append(f"{where}: context {cut(context)} is not a kubeconfig context name")
    kubeconfig = raw.get("kubeconfig") or ""
    if not isinstance(kubeconfig, str):
        problems.append(f"{where}: kubeconfig {cut(kubeconfig)} is not a path")
        kubeconfig = ""
    elif kubeconfig:
        path = Path(kubeconfig).expanduser()
        kubeconfig = str(path if path.is_absolute() or not base else Path(base).parent / path)
    hints = raw.get("hints") or {}
    if not isinstance(hints, dict):
        problems.append(f"{where}: hints must be a mapping of {', '.join(sorted(HINT_KEYS))}")
        hints = {}
    for key in sorted((str(k) for k in hints if k not in HINT_KEYS), key=str):
        problems.append(f"{where}: unknown hint {cut(key)}; known: {', '.join(sorted(HINT_KEYS))}")
    domain = hints.get("domain") or ""
    if domain and dns_domain_problem(domain):
        problems.append(f"{where}: hint domain {dns_domain_problem(domain)}")
        domain = ""
    raw_pods = hints.get("pod_cidrs") or []
    raw_pods = raw_pods if isinstance(raw_pods, list) else [raw_pods]
    pods = tuple(c for c in (_cidr(v, f"{where}: hint pod_cidrs", problems) for v in raw_pods) if c)
    service = _cidr(hints["service_cidr"], f"{where}: hint service_cidr", problems) if hints.get("service_cidr") else ""
    if not isinstance(name, str) or not isinstance(context, str):
        return None
    return ClusterRef(name, context, kubeconfig, str(domain), pods, service)


def parse_contexts(values: Sequence[str]) -> list[ClusterRef]:
    """`--context NAME=CONTEXT` values, in order (a bare CONTEXT names the cluster after itself
    when that is a DNS-1123 label)."""
    refs: list[ClusterRef] = []
    problems: list[str] = []
    for number, value in enumerate(values, start=1):
        name, sep, context = value.partition("=")
        if not sep:
            name, context = value, value
        ref = _ref({"name": name, "context": context}, f"--context #{number} ({cut(value)})", "", problems)
        if ref is not None:
            refs.append(ref)
    if problems:
        raise InputError("; ".join(problems))
    return refs


def load_clusterset(path: str) -> tuple[list[ClusterRef], str]:
    """The clusters of a cluster-set file and the kubeconfig it names ("" when none)."""
    try:
        doc = yamlsafe.load(yamlsafe.read_text(Path(path), "cluster-set file"), path)
    except OSError as exc:
        raise InputError(
            f"cluster-set file {path}: cannot be read ({exc.strerror or exc.__class__.__name__})"
        ) from None
    except yamlsafe.UnsafeYAMLError as exc:
        raise InputError(f"cluster-set file {path}: {exc.problem}; {exc.fix}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"cluster-set file {path}: malformed YAML: {yamlsafe.clip(str(exc), 300)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clusters"), list):
        raise InputError(
            f"cluster-set file {path}: a mapping with `clusters:`, a list of name/context (see clustersets/)"
        )
    problems = [f"unknown key {cut(k)}; known: {', '.join(sorted(FILE_KEYS))}" for k in doc if k not in FILE_KEYS]
    refs = [r for i, raw in enumerate(doc["clusters"], 1) if (r := _ref(raw, f"clusters[{i}]", path, problems))]
    kubeconfig = doc.get("kubeconfig") or ""
    if not isinstance(kubeconfig, str):
        problems.append(f"kubeconfig {cut(kubeconfig)} is not a path")
        kubeconfig = ""
    if problems:
        raise InputError(f"cluster-set file {path}: " + "; ".join(problems[:20]))
    if kubeconfig:
        resolved = Path(kubeconfig).expanduser()
        kubeconfig = str(resolved if resolved.is_absolute() else Path(path).parent / resolved)
    return refs, kubeconfig


def check_refs(refs: Sequence[ClusterRef], kubeconfig: str, minimum: int = 2) -> None:
    """`minimum` clusters or more, distinct names, and no (kubeconfig, context) twice: one error listing all."""
    problems = []
    if len(refs) < minimum:
        problems.append(
            f"{len(refs)} cluster(s) given; crossnet tests networking across clusters: pass --context NAME=CONTEXT "
            "at least twice (e.g. --context cluster-1=kind-c1 --context cluster-2=kind-c2) or --clusterset FILE"
        )
    seen_names: dict[str, int] = {}
    seen_contexts: dict[tuple[str, str], str] = {}
    for ref in refs:
        if ref.name in seen_names:
            problems.append(f"cluster name {ref.name} is given twice; give each cluster its own name")
        seen_names[ref.name] = 1
        key = (ref.kubeconfig or kubeconfig, ref.context)
        if key in seen_contexts:
            problems.append(
                f"clusters {seen_contexts[key]} and {ref.name} both use context {ref.context!r} (identical context "
                "names reach one cluster): give each cluster its own context, or, when two kubeconfig files name "
                "their contexts alike, a `kubeconfig:` per cluster in a cluster-set file"
            )
        seen_contexts[key] = ref.name
    if problems:
        raise InputError("; ".join(problems))


def clusterset_yaml(name: str, refs: Sequence[ClusterRef], kubeconfig: str, notes: Sequence[str] = ()) -> str:
    """A cluster-set file for `refs` (what `crossnet discover` writes), notes as comments."""
    doc: dict[str, Any] = {"name": name, "clusters": [r.to_json() for r in refs]}
    if kubeconfig:
        doc["kubeconfig"] = kubeconfig
    header = "".join(f"# {line}\n" for line in ["crossnet cluster set", *notes])
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
