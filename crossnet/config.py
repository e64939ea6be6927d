"""Read and validate kind cluster configs: the one source of topology truth.

Every problem found is collected; one ConfigError then lists them all, each naming the file,
the field and the fix (a user should fix their configs in one pass, not one error per run).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crossnet.model import Cluster, NodeSpec, Topology

__all__ = ["DEFAULT_CONFIGS", "TOPOLOGIES", "ConfigError", "ConfigProblem", "load_topology", "resolve_setup"]

KIND_API_VERSION = "kind.x-k8s.io/v1alpha4"
DEFAULT_CONFIGS = ("kind-configs/cluster-1.yaml", "kind-configs/cluster-2.yaml")
# Named presets: the kind configs and the profile of a setup (--topology NAME).
TOPOLOGIES: dict[str, tuple[tuple[str, ...], str]] = {
    "routed": (DEFAULT_CONFIGS, "flat-routed"),
    "globalnet": (("kind-configs/globalnet-1.yaml", "kind-configs/globalnet-2.yaml", "kind-configs/globalnet-3.yaml"),
                  "globalnet"),
}
NODE_PREFIX = 24  # kube-controller-manager's default --node-cidr-mask-size for IPv4
KIND_DEFAULT_POD_SUBNET = "10.244.0.0/16"
KIND_DEFAULT_SERVICE_SUBNET = "10.96.0.0/16"
KIND_DEFAULT_DNS_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    field: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.problem}\n    fix: {self.fix}"


class ConfigError(Exception):
    """All problems of a set of configs, reported together."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = [f"{count} problem{'s' if count != 1 else ''} in the cluster configs:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


def _dns_domain(doc: dict[str, Any], file: str, problems: list[ConfigProblem]) -> str:
    domain = KIND_DEFAULT_DNS_DOMAIN
    patches = doc.get("kubeadmConfigPatches") or []
    if not isinstance(patches, list):
        problems.append(ConfigProblem(file, "kubeadmConfigPatches", "is not a list",
                                      "make it a list of YAML strings (kubeadm patches)"))
        return domain
    for index, patch in enumerate(patches):
        field = f"kubeadmConfigPatches[{index}]"
        try:
            parsed = yaml.safe_load(patch) if isinstance(patch, str) else patch
        except yaml.YAMLError as exc:
            problems.append(ConfigProblem(file, field, f"is not valid YAML ({exc.__class__.__name__})",
                                          "fix the indentation of the patch text"))
            continue
        if not isinstance(parsed, dict) or parsed.get("kind") != "ClusterConfiguration":
            continue
        if "apiVersion" in parsed:
            problems.append(ConfigProblem(
                file, f"{field}.apiVersion",
                "a ClusterConfiguration patch with an apiVersion is silently ignored by kind when "
                "it differs from the kubeadm version kind renders",
                "remove apiVersion from the patch"))
        networking = parsed.get("networking") or {}
        if isinstance(networking, dict) and networking.get("dnsDomain"):
            domain = str(networking["dnsDomain"]).lower().rstrip(".")
    return domain


def _network(value: Any, file: str, field: str, problems: list[ConfigProblem]) -> ipaddress.IPv4Network | None:
    try:
        network = ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        problems.append(ConfigProblem(file, field, f"{value!r} is not a CIDR ({exc})",
                                      "write it as a network address with prefix, e.g. 10.10.0.0/16"))
        return None
    if not isinstance(network, ipaddress.IPv4Network):
        problems.append(ConfigProblem(file, field, f"{value} is IPv6; this version covers IPv4 only",
                                      "use an IPv4 CIDR"))
        return None
    return network


def _parse_cluster(path: Path, problems: list[ConfigProblem]) -> Cluster | None:
    file = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        problems.append(ConfigProblem(file, "(file)", f"cannot be read: {exc.strerror}",
                                      "pass an existing kind config with --kind-config"))
        return None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(document)"
        problems.append(ConfigProblem(file, where, f"malformed YAML: {getattr(exc, 'problem', exc)}",
                                      "fix the YAML syntax (indentation, colons, quotes)"))
        return None
    if not isinstance(doc, dict):
        problems.append(ConfigProblem(file, "(document)", "is not a YAML mapping",
                                      "a kind config starts with 'kind: Cluster'"))
        return None
    before = len(problems)
    if doc.get("kind") != "Cluster":
        problems.append(ConfigProblem(file, "kind", f"is {doc.get('kind')!r}, not 'Cluster'",
                                      "set 'kind: Cluster'"))
    if doc.get("apiVersion") != KIND_API_VERSION:
        problems.append(ConfigProblem(file, "apiVersion", f"is {doc.get('apiVersion')!r}",
                                      f"set 'apiVersion: {KIND_API_VERSION}'"))
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        problems.append(ConfigProblem(file, "name", "is missing",
                                      "give every cluster a distinct name (kind's --name)"))
        name = path.stem
    networking = doc.get("networking") or {}
    if not isinstance(networking, dict):
        problems.append(ConfigProblem(file, "networking", "is not a mapping", "see kind's config docs"))
        networking = {}
    pod = _network(networking.get("podSubnet", KIND_DEFAULT_POD_SUBNET), file, "networking.podSubnet", problems)
    svc = _network(networking.get("serviceSubnet", KIND_DEFAULT_SERVICE_SUBNET), file,
                   "networking.serviceSubnet", problems)
    domain = _dns_domain(doc, file, problems)
    raw_nodes = doc.get("nodes") or [{"role": "control-plane"}]
    nodes: list[NodeSpec] = []
    workers = 0
    if not isinstance(raw_nodes, list):
        problems.append(ConfigProblem(file, "nodes", "is not a list", "list nodes with their role"))
        raw_nodes = []
    for index, raw in enumerate(raw_nodes):
        role = raw.get("role") if isinstance(raw, dict) else None
        if role == "control-plane":
            short = "control-plane" if not any(n.role == "control-plane" for n in nodes) else (
                f"control-plane{sum(n.role == 'control-plane' for n in nodes) + 1}")
            nodes.append(NodeSpec(str(name), short, "control-plane"))
        elif role == "worker":
            workers += 1
            nodes.append(NodeSpec(str(name), "worker" if workers == 1 else f"worker{workers}", "worker"))
        else:
            problems.append(ConfigProblem(file, f"nodes[{index}].role", f"is {role!r}",
                                          "use 'control-plane' or 'worker'"))
    if nodes and not any(n.role == "control-plane" for n in nodes):
        problems.append(ConfigProblem(file, "nodes", "has no control-plane node",
                                      "add '- role: control-plane'"))
    if pod is not None and svc is not None and pod.overlaps(svc):
        problems.append(ConfigProblem(file, "networking.serviceSubnet",
                                      f"{svc} overlaps this cluster's own podSubnet {pod}",
                                      "pick a serviceSubnet outside the podSubnet"))
    if pod is not None and pod.prefixlen > NODE_PREFIX:
        problems.append(ConfigProblem(file, "networking.podSubnet",
                                      f"{pod} is smaller than one /{NODE_PREFIX} node podCIDR",
                                      f"use a podSubnet of /{NODE_PREFIX - 4} or larger"))
    elif pod is not None and 2 ** (NODE_PREFIX - pod.prefixlen) < len(nodes):
        problems.append(ConfigProblem(
            file, "networking.podSubnet",
            f"{pod} holds {2 ** (NODE_PREFIX - pod.prefixlen)} node podCIDRs (/{NODE_PREFIX}) "
            f"but the cluster has {len(nodes)} nodes",
            "use a larger podSubnet or fewer nodes"))
    if len(problems) > before or pod is None or svc is None:
        return None
    return Cluster(name=str(name), pod_subnet=str(pod), service_subnet=str(svc), dns_domain=domain,
                   nodes=tuple(nodes), source_file=file)


def _cross_checks(clusters: Sequence[Cluster], allow_overlap: bool, problems: list[ConfigProblem]) -> None:
    for i, a in enumerate(clusters):
        for b in clusters[i + 1:]:
            if a.name == b.name:
                problems.append(ConfigProblem(b.source_file, "name", f"{b.name!r} is also the name in {a.source_file}",
                                              "give every cluster a distinct name"))
            if a.dns_domain == b.dns_domain and not allow_overlap:
                problems.append(ConfigProblem(
                    b.source_file, "kubeadmConfigPatches[].networking.dnsDomain",
                    f"{b.dns_domain!r} is also the dnsDomain of {a.name} ({a.source_file}); a peer's "
                    "names could not be forwarded to it",
                    "give each cluster its own dnsDomain (e.g. cluster-1.com, cluster-2.com)"))
            if allow_overlap:
                continue
            for a_field, a_net in (("podSubnet", a.pod_network), ("serviceSubnet", a.service_network)):
                for b_field, b_net in (("podSubnet", b.pod_network), ("serviceSubnet", b.service_network)):
                    if a_net.overlaps(b_net):
                        problems.append(ConfigProblem(
                            b.source_file, f"networking.{b_field}",
                            f"{b_net} overlaps {a.name}'s {a_field} {a_net} ({a.source_file}); plain "
                            "routing cannot tell the clusters apart",
                            "choose non-overlapping subnets, or select a profile that declares "
                            "Globalnet (--profile globalnet)"))


def load_topology(paths: Sequence[str | Path], allow_overlap: bool = False, global_cidr: str | None = None) -> Topology:
    """Parse and validate every config; raise one ConfigError listing every problem. With a
    Globalnet `global_cidr`, overlapping cluster CIDRs are expected, and the global CIDR is
    checked instead (a slice per cluster, no overlap with any cluster CIDR)."""
    problems: list[ConfigProblem] = []
    if len(paths) < 2:
        problems.append(ConfigProblem(", ".join(map(str, paths)) or "(none)", "--kind-config",
                                      "crossnet needs at least two clusters",
                                      "pass two or more kind configs"))
    clusters = [c for c in (_parse_cluster(Path(p), problems) for p in paths) if c is not None]
    _cross_checks(clusters, allow_overlap or global_cidr is not None, problems)
    if global_cidr is not None and not problems:
        from crossnet.globalnet import global_cidr_problems

        problems += [ConfigProblem("(profile)", "plumbing.global_cidr", p, "see the Globalnet profile")
                     for p in global_cidr_problems(Topology(tuple(clusters)), global_cidr)]
    if problems:
        raise ConfigError(problems)
    return Topology(clusters=tuple(clusters))


def resolve_setup(root: Path, topology: str | None, configs: Sequence[str] | None,
                  profile: str | None) -> tuple[list[str], str]:
    """The kind configs and profile to use: explicit ones win, then the named topology's."""
    name = topology or "routed"
    if name not in TOPOLOGIES:
        raise ConfigError([ConfigProblem("(command line)", "--topology", f"unknown topology {name!r}",
                                         f"use one of {', '.join(TOPOLOGIES)}")])
    preset_configs, preset_profile = TOPOLOGIES[name]
    return list(configs) if configs else [str(root / p) for p in preset_configs], profile or preset_profile
