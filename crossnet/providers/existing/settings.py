"""What a run on existing clusters is asked to do: the options (declared here once, merged into
crossnet.options for pytest and `crossnet up`, used directly by this package's commands), parsed
and checked into `ExistingSettings`, which the state file records."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from crossnet.profile import Profile
from crossnet.providers.base import SAFE_NAME, InputError
from crossnet.providers.existing.client import default_kubeconfig as default_kubeconfig_path
from crossnet.providers.existing.clusterset import ClusterRef, check_refs, load_clusterset, parse_contexts
from crossnet.providers.existing.flags import DEFAULT_DEBUG_IMAGE, OPTION_DESTS
from crossnet.providers.kube_agents import DEFAULT_AGENT_IMAGE

__all__ = [
    "DEFAULT_DEBUG_IMAGE",
    "PLUMBING_MODES",
    "ExistingSettings",
    "option_values",
    "parse_toleration",
    "profile_needs",
    "settings_from_options",
]

DEFAULT_TTL_HOURS = 24
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
PLUMBING_MODES = ("none", "inject")


@dataclass(frozen=True)
class ExistingSettings:
    kubeconfig: str
    clusters: tuple[ClusterRef, ...]
    clusterset_file: str = ""
    nodes: int | None = None
    host_vantage: bool = False
    node_evidence: bool = False
    keep: bool = False
    skip_preflight: bool = False
    namespace: str = ""  # a namespace created beforehand; "" = crossnet-<run-id>, made and deleted by crossnet
    image: str = DEFAULT_AGENT_IMAGE
    debug_image: str = DEFAULT_DEBUG_IMAGE
    image_pull_secrets: tuple[str, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[dict[str, str], ...] | None = None
    ttl_hours: int = DEFAULT_TTL_HOURS
    # From the profile: what it needs of the clusters.
    globalnet: bool = False
    mcs: bool = False
    requires: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # --plumbing: "none" (the default here: nothing changed outside the namespace) or "inject" (asked
    # explicitly, for clusters the user owns: routes and Corefile forwards the kind way, undone at the end).
    plumbing: str = "none"

    @property
    def inject(self) -> bool:
        return self.plumbing == "inject"

    def kubeconfig_of(self, ref: ClusterRef) -> str:
        return ref.kubeconfig or self.kubeconfig

    def images(self) -> list[str]:
        """Every image a run with these settings pulls (for mirroring into an air-gapped registry)."""
        return [self.image, *([self.debug_image] if self.node_evidence or self.inject else [])]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["clusters"] = [c.to_json() for c in self.clusters]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExistingSettings:
        try:
            fields = dict(data)
            fields["clusters"] = tuple(ClusterRef.from_json(c) for c in data["clusters"])
            for key in ("image_pull_secrets",):
                fields[key] = tuple(map(str, fields.get(key) or ()))
            fields["node_selector"] = tuple((str(k), str(v)) for k, v in fields.get("node_selector") or ())
            tolerations = fields.get("tolerations")
            fields["tolerations"] = None if tolerations is None else tuple(dict(t) for t in tolerations)
            fields["requires"] = tuple((str(k), tuple(map(str, v))) for k, v in fields.get("requires") or ())
            if fields.get("plumbing", "none") not in PLUMBING_MODES:
                raise ValueError("plumbing")
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"the recorded settings are malformed ({exc.__class__.__name__})") from None


def parse_toleration(text: str) -> dict[str, str]:
    """`KEY[=VALUE][:EFFECT]` as a toleration (`*` tolerates every taint)."""
    if text == "*":
        return {"operator": "Exists"}
    rest, _, effect = text.partition(":")
    key, has_value, value = rest.partition("=")
    if (
        not _LABEL_KEY.match(key)
        or (has_value and not _LABEL_VALUE.match(value))
        or (effect and effect not in _EFFECTS)
    ):
        raise InputError(
            f"--toleration {text[:80]!r}: write KEY[=VALUE][:EFFECT] with EFFECT one of {', '.join(_EFFECTS)} "
            "(e.g. dedicated=net:NoSchedule), or * for every taint"
        )
    toleration = {"key": key, "operator": "Equal" if has_value else "Exists"}
    if has_value:
        toleration["value"] = value
    if effect:
        toleration["effect"] = effect
    return toleration


def _list(values: Mapping[str, Any], key: str) -> list[str]:
    value = values.get(key)
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def settings_from_options(
    values: Mapping[str, Any], profile: Profile | None = None, default_kubeconfig: str = "", minimum: int = 2
) -> ExistingSettings:
    """ExistingSettings from option values by dest (argparse's vars(args) or pytest's getoption), and
    what the profile needs. Every problem of the options is one InputError."""
    contexts, clusterset = _list(values, "context"), values.get("clusterset")
    if contexts and clusterset:
        raise InputError("pass either --context NAME=CONTEXT (repeated) or --clusterset FILE, not both")
    if not contexts and not clusterset:
        raise InputError(
            "the existing provider needs the clusters: --context NAME=CONTEXT at least twice "
            "(e.g. --context cluster-1=kind-c1 --context cluster-2=kind-c2) or --clusterset FILE"
        )
    file_kubeconfig = ""
    if clusterset:
        refs, file_kubeconfig = load_clusterset(str(clusterset))
    else:
        refs = parse_contexts(contexts)
    kubeconfig = str(values.get("kubeconfig") or file_kubeconfig or default_kubeconfig or default_kubeconfig_path())
    check_refs(refs, kubeconfig, minimum)
    problems = []
    nodes = values.get("nodes")
    if nodes is not None and (type(nodes) is not int or nodes < 1):
        problems.append(f"--nodes {nodes}: give at least 1")
    namespace = str(values.get("namespace") or "")
    if namespace and (len(namespace) > 63 or not SAFE_NAME.match(namespace) or "." in namespace):
        problems.append(f"--namespace {namespace[:80]!r} is not a namespace name (a DNS-1123 label)")
    images = {"--agent-image": values.get("agent_image"), "--debug-image": values.get("debug_image")}
    for flag, image in images.items():
        if image is not None and not _IMAGE.match(str(image)):
            problems.append(f"{flag} {str(image)[:80]!r} is not an image reference")
    secrets = _list(values, "image_pull_secret")
    problems += [f"--image-pull-secret {s[:80]!r} is not a Secret name" for s in secrets if not SAFE_NAME.match(s)]
    selector = []
    for item in _list(values, "node_selector"):
        key, sep, value = item.partition("=")
        if not sep or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            problems.append(f"--node-selector {item[:80]!r}: write KEY=VALUE with a label key and value")
        else:
            selector.append((key, value))
    tolerations = None
    if _list(values, "toleration"):
        try:
            tolerations = tuple(parse_toleration(t) for t in _list(values, "toleration"))
        except InputError as exc:
            problems.append(str(exc))
    plumbing = str(values.get("plumbing") or "none")
    if plumbing not in PLUMBING_MODES:
        problems.append(f"--plumbing {plumbing[:40]!r}: the existing provider knows none (default) and inject")
    if problems:
        raise InputError("; ".join(problems))
    return ExistingSettings(
        kubeconfig=kubeconfig,
        clusters=tuple(refs),
        clusterset_file=str(clusterset or ""),
        nodes=nodes,
        host_vantage=bool(values.get("host_vantage")),
        node_evidence=bool(values.get("node_evidence")),
        keep=bool(values.get("keep")),
        skip_preflight=bool(values.get("skip_preflight")),
        namespace=namespace,
        image=str(images["--agent-image"] or DEFAULT_AGENT_IMAGE),
        debug_image=str(images["--debug-image"] or DEFAULT_DEBUG_IMAGE),
        image_pull_secrets=tuple(secrets),
        node_selector=tuple(selector),
        tolerations=tolerations,
        plumbing=plumbing,
        **profile_needs(profile),
    )


def profile_needs(profile: Profile | None) -> dict[str, Any]:
    """What a profile needs of the clusters: Globalnet; the MCS API (when it requires an MCS-based
    layer, is an MCS profile -- plumbing.mcs, the mcs topology -- or Globalnet, which exports); its `requires:`."""
    if profile is None:
        return {"globalnet": False, "mcs": False, "requires": ()}
    requires = tuple(getattr(profile, "requires", ()) or ())
    wanted: Sequence[str] = dict(requires).get("multicluster", ())
    mcs = profile.globalnet or bool({"mcs", "submariner", "submariner-globalnet"} & set(wanted))
    mcs = mcs or getattr(profile.plumbing, "mcs", None) is not None
    return {"globalnet": profile.globalnet, "mcs": mcs, "requires": requires}


def option_values(get: Callable[[str], Any]) -> dict[str, Any]:
    """The existing-mode option values by dest, from pytest's `config.getoption` (or, for argparse,
    `lambda dest: getattr(args, dest, None)`): what `settings_from_options` takes."""
    return {dest: get(dest) for dest in OPTION_DESTS}
