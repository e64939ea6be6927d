"""Read and validate kind cluster configs: the one source of topology truth.

Every problem found is collected; one ConfigError then lists them all, each naming the file,
the field and the fix (a user should fix their configs in one pass, not one error per run).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crossnet import yamlsafe
from crossnet.model import Cluster, NodeSpec, Topology
from crossnet.yamlsafe import clip, cut

__all__ = [
    "DEFAULT_CONFIGS",
    "KIND_NAME_MAX",
    "TOPOLOGIES",
    "ConfigError",
    "ConfigProblem",
    "dns1123_label_problem",
    "dns_domain_problem",
    "load_topology",
    "resolve_setup",
]

KIND_API_VERSION = "kind.x-k8s.io/v1alpha4"
DEFAULT_CONFIGS = ("cluster-1.yaml", "cluster-2.yaml")
# Named presets: the kind configs (files in kind-configs/) and the profile of a setup (--topology NAME).
TOPOLOGIES: dict[str, tuple[tuple[str, ...], str]] = {
    "routed": (DEFAULT_CONFIGS, "flat-routed"),
    "globalnet": (("globalnet-1.yaml", "globalnet-2.yaml", "globalnet-3.yaml"), "globalnet"),
    "bgp": (("bgp-1.yaml", "bgp-2.yaml"), "bgp-flat"),
    "mcs": (("mcs-1.yaml", "mcs-2.yaml"), "mcs-karmada"),
}
# A Kubernetes label: an optional DNS-subdomain prefix and '/', a name of at most 63 characters;
# values the same characters, possibly empty. (Values reach kubectl and the lab's records.)
_LABEL_NAME = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
MAX_LISTED_PROBLEMS = 50  # a ConfigError's message lists this many; .problems holds them all
NODE_PREFIX = 24  # kube-controller-manager's default --node-cidr-mask-size for IPv4
KIND_DEFAULT_POD_SUBNET = "10.244.0.0/16"
KIND_DEFAULT_SERVICE_SUBNET = "10.96.0.0/16"
KIND_DEFAULT_DNS_DOMAIN = "cluster.local"
# kind refuses cluster names longer than 50 characters (clusterNameMax in kind's create), so that
# its node names (<name>-control-plane, <name>-worker2, ...) stay valid host names.
KIND_NAME_MAX = 50
DNS_LABEL_MAX = 63
DNS_NAME_MAX = 253
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_RULE = "lowercase letters a-z, digits and '-', starting and ending with a letter or digit"


def dns1123_label_problem(value: object, max_length: int = DNS_LABEL_MAX) -> str | None:
    """Why `value` is not a DNS-1123 label of at most `max_length` characters, or None when it is.
    The text starts with the quoted value (cut), ready for a ConfigProblem."""
    if not isinstance(value, str):
        return f"{cut(value)} is a {type(value).__name__}, not a name"
    if not value:
        return "is empty"
    if len(value) > max_length:
        return f"{cut(value)} is {len(value)} characters long; at most {max_length} are allowed"
    if _DNS_LABEL.fullmatch(value) is None:
        return f"{cut(value)} is not a DNS-1123 label ({_LABEL_RULE})"
    return None


def dns_domain_problem(value: object) -> str | None:
    """Why `value` is not a DNS name Kubernetes accepts as a dnsDomain (dot-separated DNS-1123
    labels of 1..63 characters, 253 in all; one label is fine), or None when it is."""
    if not isinstance(value, str):
        return f"{cut(value)} is a {type(value).__name__}, not a domain name"
    if len(value) > DNS_NAME_MAX:
        return f"{cut(value)} is {len(value)} characters long; a DNS name has at most {DNS_NAME_MAX}"
    for label in value.split("."):
        if not label:
            return f"{cut(value)} has an empty label (a leading, trailing or doubled '.')"
        if len(label) > DNS_LABEL_MAX:
            return f"{cut(value)} has a label of {len(label)} characters; at most {DNS_LABEL_MAX} per label"
        if _DNS_LABEL.fullmatch(label) is None:
            return f"{cut(value)} is not a DNS name (each dot-separated label: {_LABEL_RULE})"
    return None


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
        lines += [f"  - {p}" for p in self.problems[:MAX_LISTED_PROBLEMS]]
        if count > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {count - MAX_LISTED_PROBLEMS} more")
        super().__init__("\n".join(lines))


def _dns_domain(doc: dict[str, Any], file: str, problems: list[ConfigProblem]) -> str:
    domain = KIND_DEFAULT_DNS_DOMAIN
    patches = doc.get("kubeadmConfigPatches") or []
    if not isinstance(patches, list):
        problems.append(
            ConfigProblem(
                file, "kubeadmConfigPatches", "is not a list", "make it a list of YAML strings (kubeadm patches)"
            )
        )
        return domain
    for index, patch in enumerate(patches):
        field = f"kubeadmConfigPatches[{index}]"
        try:
            parsed = yamlsafe.load(patch, f"{file}: {field}") if isinstance(patch, str) else patch
        except yamlsafe.UnsafeYAMLError as exc:
            problems.append(ConfigProblem(file, field, exc.problem, exc.fix))
            continue
        except yaml.YAMLError as exc:
            problems.append(
                ConfigProblem(
                    file,
                    field,
                    f"is not valid YAML ({exc.__class__.__name__})",
                    "fix the indentation of the patch text",
                )
            )
            continue
        if not isinstance(parsed, dict) or parsed.get("kind") != "ClusterConfiguration":
            continue
        if "apiVersion" in parsed:
            problems.append(
                ConfigProblem(
                    file,
                    f"{field}.apiVersion",
                    "a ClusterConfiguration patch with an apiVersion is silently ignored by kind when "
                    "it differs from the kubeadm version kind renders",
                    "remove apiVersion from the patch",
                )
            )
        networking = parsed.get("networking") or {}
        if isinstance(networking, dict) and networking.get("dnsDomain"):
            value = networking["dnsDomain"]
            problem = dns_domain_problem(value)
            if problem is not None:
                problems.append(
                    ConfigProblem(
                        file,
                        f"{field}.networking.dnsDomain",
                        problem,
                        "use a lowercase DNS name such as cluster-1.com or cluster.local (labels of a-z, 0-9 and '-', "
                        "no trailing '.')",
                    )
                )
                continue
            domain = str(value)
    return domain


def _network(value: Any, file: str, field: str, problems: list[ConfigProblem]) -> ipaddress.IPv4Network | None:
    fix = "write it as a network address with prefix, e.g. 10.10.0.0/16"
    if not isinstance(value, str):
        problems.append(ConfigProblem(file, field, f"{cut(value)} is not a CIDR", fix))
        return None
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        reason = clip(str(exc).replace(repr(value), "it"), 120)
        problems.append(ConfigProblem(file, field, f"{cut(value)} is not a CIDR ({reason})", fix))
        return None
    if not isinstance(network, ipaddress.IPv4Network):
        problems.append(
            ConfigProblem(file, field, f"{cut(value)} is IPv6; this version covers IPv4 only", "use an IPv4 CIDR")
        )
        return None
    return network


def _labels(raw: dict[str, Any], file: str, index: int, problems: list[ConfigProblem]) -> tuple[tuple[str, str], ...]:
    """A node's `labels:` (kind applies them to the node), validated as Kubernetes labels."""
    labels = raw.get("labels")
    if labels is None:
        return ()
    if not isinstance(labels, dict):
        problems.append(ConfigProblem(file, f"nodes[{index}].labels", "is not a mapping", "write 'key: value' pairs"))
        return ()
    good: list[tuple[str, str]] = []
    for key, value in labels.items():
        text = "" if value is None else str(value)
        if not isinstance(key, str) or len(key) > DNS_NAME_MAX or not _LABEL_NAME.fullmatch(key):
            problems.append(
                ConfigProblem(
                    file,
                    f"nodes[{index}].labels",
                    f"key {cut(key)} is not a Kubernetes label name",
                    "use [prefix/]name with letters, digits, '-', '_', '.' (name at most 63 characters)",
                )
            )
        elif isinstance(value, (dict, list)) or not _LABEL_VALUE.fullmatch(text):
            problems.append(
                ConfigProblem(
                    file,
                    f"nodes[{index}].labels.{key}",
                    f"value {cut(value)} is not a Kubernetes label value",
                    "quote a value of at most 63 letters, digits, '-', '_', '.' (e.g. \"true\")",
                )
            )
        else:
            good.append((key, text))
    return tuple(sorted(good))


def _parse_cluster(path: Path, problems: list[ConfigProblem]) -> Cluster | None:
    file = str(path)
    try:
        text = yamlsafe.read_text(path, "kind config")
        doc = yamlsafe.load(text, file)
    except OSError as exc:
        problems.append(
            ConfigProblem(
                file,
                "(file)",
                f"cannot be read: {exc.strerror or exc.__class__.__name__}",
                "pass an existing kind config with --kind-config",
            )
        )
        return None
    except yamlsafe.UnsafeYAMLError as exc:
        problems.append(ConfigProblem(file, "(document)", exc.problem, exc.fix))
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(document)"
        message = str(getattr(exc, "problem", None) or exc)
        problems.append(
            ConfigProblem(
                file, where, f"malformed YAML: {clip(message)}", "fix the YAML syntax (indentation, colons, quotes)"
            )
        )
        return None
    if not isinstance(doc, dict):
        problems.append(
            ConfigProblem(file, "(document)", "is not a YAML mapping", "a kind config starts with 'kind: Cluster'")
        )
        return None
    before = len(problems)
    if doc.get("kind") != "Cluster":
        problems.append(ConfigProblem(file, "kind", f"is {cut(doc.get('kind'))}, not 'Cluster'", "set 'kind: Cluster'"))
    if doc.get("apiVersion") != KIND_API_VERSION:
        problems.append(
            ConfigProblem(
                file, "apiVersion", f"is {cut(doc.get('apiVersion'))}", f"set 'apiVersion: {KIND_API_VERSION}'"
            )
        )
    name = doc.get("name")
    if name is None or name == "":
        problems.append(ConfigProblem(file, "name", "is missing", "give every cluster a distinct name (kind's --name)"))
        name = path.stem
    else:
        problem = dns1123_label_problem(name, KIND_NAME_MAX)
        if problem is not None:
            problems.append(
                ConfigProblem(
                    file,
                    "name",
                    problem,
                    f"name the cluster with lowercase letters, digits and '-' (at most {KIND_NAME_MAX} characters, "
                    "kind's limit), e.g. cluster-1",
                )
            )
            name = path.stem
    networking = doc.get("networking") or {}
    if not isinstance(networking, dict):
        problems.append(ConfigProblem(file, "networking", "is not a mapping", "see kind's config docs"))
        networking = {}
    pod = _network(networking.get("podSubnet", KIND_DEFAULT_POD_SUBNET), file, "networking.podSubnet", problems)
    svc = _network(
        networking.get("serviceSubnet", KIND_DEFAULT_SERVICE_SUBNET), file, "networking.serviceSubnet", problems
    )
    domain = _dns_domain(doc, file, problems)
    raw_nodes = doc.get("nodes", [{"role": "control-plane"}])
    nodes: list[NodeSpec] = []
    workers = 0
    if raw_nodes is None or raw_nodes == []:
        problems.append(
            ConfigProblem(
                file,
                "nodes",
                "is empty",
                "remove the key for kind's default single control-plane node, or list the nodes "
                "('- role: control-plane', '- role: worker')",
            )
        )
        raw_nodes = []
    elif not isinstance(raw_nodes, list):
        problems.append(ConfigProblem(file, "nodes", "is not a list", "list nodes with their role"))
        raw_nodes = []
    for index, raw in enumerate(raw_nodes):
        role = raw.get("role") if isinstance(raw, dict) else None
        if role == "control-plane":
            short = (
                "control-plane"
                if not any(n.role == "control-plane" for n in nodes)
                else (f"control-plane{sum(n.role == 'control-plane' for n in nodes) + 1}")
            )
            nodes.append(NodeSpec(str(name), short, "control-plane", _labels(raw, file, index, problems)))
        elif role == "worker":
            workers += 1
            short = "worker" if workers == 1 else f"worker{workers}"
            nodes.append(NodeSpec(str(name), short, "worker", _labels(raw, file, index, problems)))
        else:
            problems.append(
                ConfigProblem(file, f"nodes[{index}].role", f"is {cut(role)}", "use 'control-plane' or 'worker'")
            )
    if nodes and not any(n.role == "control-plane" for n in nodes):
        problems.append(ConfigProblem(file, "nodes", "has no control-plane node", "add '- role: control-plane'"))
    if pod is not None and svc is not None and pod.overlaps(svc):
        problems.append(
            ConfigProblem(
                file,
                "networking.serviceSubnet",
                f"{svc} overlaps this cluster's own podSubnet {pod}",
                "pick a serviceSubnet outside the podSubnet",
            )
        )
    if pod is not None and pod.prefixlen > NODE_PREFIX:
        problems.append(
            ConfigProblem(
                file,
                "networking.podSubnet",
                f"{pod} is smaller than one /{NODE_PREFIX} node podCIDR",
                f"use a podSubnet of /{NODE_PREFIX - 4} or larger",
            )
        )
    elif pod is not None and 2 ** (NODE_PREFIX - pod.prefixlen) < len(nodes):
        problems.append(
            ConfigProblem(
                file,
                "networking.podSubnet",
                f"{pod} holds {2 ** (NODE_PREFIX - pod.prefixlen)} node podCIDRs (/{NODE_PREFIX}) "
                f"but the cluster has {len(nodes)} nodes",
                "use a larger podSubnet or fewer nodes",
            )
        )
    if len(problems) > before or pod is None or svc is None:
        return None
    return Cluster(
        name=str(name),
        pod_subnet=str(pod),
        service_subnet=str(svc),
        dns_domain=domain,
        nodes=tuple(nodes),
        source_file=file,
    )


def _cross_checks(clusters: Sequence[Cluster], allow_overlap: bool, problems: list[ConfigProblem]) -> None:
    for i, a in enumerate(clusters):
        for b in clusters[i + 1 :]:
            if a.name == b.name:
                problems.append(
                    ConfigProblem(
                        b.source_file,
                        "name",
                        f"{cut(b.name)} is also the name in {a.source_file}",
                        "give every cluster a distinct name",
                    )
                )
            if a.dns_domain == b.dns_domain and not allow_overlap:
                problems.append(
                    ConfigProblem(
                        b.source_file,
                        "kubeadmConfigPatches[].networking.dnsDomain",
                        f"{cut(b.dns_domain)} is also the dnsDomain of {a.name} ({a.source_file}); a peer's "
                        "names could not be forwarded to it",
                        "give each cluster its own dnsDomain (e.g. cluster-1.com, cluster-2.com)",
                    )
                )
            if allow_overlap:
                continue
            for a_field, a_net in (("podSubnet", a.pod_network), ("serviceSubnet", a.service_network)):
                for b_field, b_net in (("podSubnet", b.pod_network), ("serviceSubnet", b.service_network)):
                    if a_net.overlaps(b_net):
                        problems.append(
                            ConfigProblem(
                                b.source_file,
                                f"networking.{b_field}",
                                f"{b_net} overlaps {a.name}'s {a_field} {a_net} ({a.source_file}); plain "
                                "routing cannot tell the clusters apart",
                                "choose non-overlapping subnets, or select a profile that declares "
                                "Globalnet (--profile globalnet)",
                            )
                        )


def load_topology(paths: Sequence[str | Path], allow_overlap: bool = False, global_cidr: str | None = None) -> Topology:
    """Parse and validate every config; raise one ConfigError listing every problem. With a
    Globalnet `global_cidr`, overlapping cluster CIDRs are expected, and the global CIDR is
    checked instead (a slice per cluster, no overlap with any cluster CIDR)."""
    problems: list[ConfigProblem] = []
    if len(paths) < 2:
        problems.append(
            ConfigProblem(
                ", ".join(map(str, paths)) or "(none)",
                "--kind-config",
                "crossnet needs at least two clusters",
                "pass two or more kind configs",
            )
        )
    clusters = [c for c in (_parse_cluster(Path(p), problems) for p in paths) if c is not None]
    _cross_checks(clusters, allow_overlap or global_cidr is not None, problems)
    if global_cidr is not None and not problems:
        from crossnet.globalnet import global_cidr_problems

        problems += [
            ConfigProblem("(profile)", "plumbing.global_cidr", p, "see the Globalnet profile")
            for p in global_cidr_problems(Topology(tuple(clusters)), global_cidr)
        ]
    if problems:
        raise ConfigError(problems)
    return Topology(clusters=tuple(clusters))


def resolve_setup(
    configs_dir: Path, topology: str | None, configs: Sequence[str] | None, profile: str | None
) -> tuple[list[str], str]:
    """The kind configs and profile to use: explicit ones win, then the named topology's."""
    name = topology or "routed"
    if name not in TOPOLOGIES:
        raise ConfigError(
            [
                ConfigProblem(
                    "(command line)",
                    "--topology",
                    f"unknown topology {cut(name)}",
                    f"use one of {', '.join(TOPOLOGIES)}",
                )
            ]
        )
    preset_configs, preset_profile = TOPOLOGIES[name]
    return list(configs) if configs else [str(configs_dir / p) for p in preset_configs], profile or preset_profile
