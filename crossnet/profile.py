"""Expectation profiles: what a setup should give, as data.

A profile is YAML: `defaults` plus an ordered list of `rules`; the FIRST rule whose `match`
fits a cell decides its expectation, else the defaults do. Every rule says `because:`.
Code never decides what should be reachable; it only looks it up here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import yaml

from crossnet import yamlsafe
from crossnet.bgp import CLUSTER_AS_BASE
from crossnet.globalnet import DEFAULT_GLOBAL_CIDR
from crossnet.model import MATCH_VOCABULARY, Expectation, Reachable, SourceExpectation
from crossnet.resources import PROFILES
from crossnet.yamlsafe import clip, cut

__all__ = [
    "MATCH_KEYS",
    "PROFILE_DIR",
    "BgpPlumbing",
    "McsPlumbing",
    "Plumbing",
    "Profile",
    "ProfileError",
    "Rule",
    "load_profile",
]

PROFILE_DIR = PROFILES

MATCH_KEYS: dict[str, frozenset[str] | None] = {
    key: None if values is None else frozenset(values) for key, values in MATCH_VOCABULARY.items()
}
REACHABLE = {"yes": "yes", "no": "no", "optional": "optional", True: "yes", False: "no"}
SOURCES = frozenset({"preserved", "node-ip", "global-egress", "target-node-ip", "any"})
PROFILE_KEYS = frozenset({"name", "description", "globalnet", "plumbing", "defaults", "rules", "requires"})
# `requires:` pins the setup a profile was written for (checked against what discovery finds on existing
# clusters, crossnet.providers.existing): each key takes a value or a list of accepted values.
REQUIRES_KEYS = frozenset({"cni", "kube_proxy", "multicluster"})
PLUMBING_KEYS = frozenset({"service_routes", "masquerade_to_peer_pods", "rp_filter", "global_cidr", "bgp", "mcs"})
MCS_KEYS = frozenset({"derived_services", "header_ra"})
BGP_KEYS = frozenset({"switch_as", "advertise_service_ips", "keep_source"})
PRIVATE_AS = range(64512, 65535)  # RFC 6996 16-bit private AS numbers (65535 is reserved)
MAX_CLUSTERS = 64  # cluster AS numbers are CLUSTER_AS_BASE + index
MAX_LISTED_PROBLEMS = 50  # an error lists this many problems, then counts the rest
RULE_KEYS = frozenset({"match", "expect", "because"})
EXPECT_KEYS = frozenset({"reachable", "source"})


class ProfileError(Exception):
    """Every problem of a profile, each naming the file, the rule and the fix."""


@dataclass(frozen=True)
class Rule:
    ident: str  # "<profile>#<n>" (1-based) or "<profile>#defaults"
    match: Mapping[str, frozenset[str]]
    reachable: str
    source: str
    because: str

    def matches(self, facts: Mapping[str, str]) -> bool:
        return all(facts.get(key) in allowed for key, allowed in self.match.items())

    def expectation(self) -> Expectation:
        reachable, source = cast(Reachable, self.reachable), cast(SourceExpectation, self.source)
        return Expectation(reachable=reachable, source=source, rule=self.ident, because=self.because)


@dataclass(frozen=True)
class BgpPlumbing:
    """Clusters joined by BGP the way Calico without encapsulation does it (the `bgp` topology):
    every node announces its pod block over an iBGP mesh, the ingress nodes peer with a top-of-rack
    switch of AS `switch_as`, no route is injected and no Corefile touched."""

    switch_as: int = 65200
    advertise_service_ips: bool = False  # BGPConfiguration.spec.serviceClusterIPs: the service range announced
    keep_source: bool = False  # each cluster lists the peers' pod CIDRs as disabled IPPools: no natOutgoing to them


@dataclass(frozen=True)
class McsPlumbing:
    """Multi-Cluster Services (the `mcs` topology): the first cluster exports `echo` and
    `echo-headless`, every cluster imports them; CoreDNS answers clusterset.local with the
    `multicluster` plugin. `derived_services`: the importer also has Karmada's `derived-<svc>`
    Service; `header_ra`: the Corefile sets the RA bit (`header { response set ra }`)."""

    derived_services: bool = True
    header_ra: bool = True


@dataclass(frozen=True)
class Plumbing:
    """How the clusters are joined under this profile; providers apply it, the plumbing suite
    checks it on every node."""

    service_routes: bool = False  # routes to each peer's serviceSubnet via the peer's gateway node
    masquerade_to_peer_pods: bool = True  # kindnet masquerades traffic to the peer's pod CIDR
    rp_filter: int = 0  # net.ipv4.conf.all.rp_filter on every node
    global_cidr: str | None = None  # Submariner Globalnet: the global CIDR (set when the profile declares globalnet)
    bgp: BgpPlumbing | None = None  # joined by BGP (Calico, no encapsulation) instead of injected routes
    mcs: McsPlumbing | None = None  # Multi-Cluster Services on top of the routes and forwards


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    globalnet: bool
    plumbing: Plumbing
    defaults: Rule
    rules: tuple[Rule, ...]
    source_file: str
    requires: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (key, accepted values), from `requires:`

    def decide(self, facts: Mapping[str, str]) -> Expectation:
        for rule in self.rules:
            if rule.matches(facts):
                return rule.expectation()
        return self.defaults.expectation()

    def unused_rules(self, all_facts: Iterable[Mapping[str, str]]) -> list[Rule]:
        facts = list(all_facts)
        return [rule for rule in self.rules if not any(rule.matches(f) for f in facts)]


def _known(value: object, allowed: Iterable[object]) -> bool:
    """`value in allowed` that is False (not a TypeError) for an unhashable value such as a list."""
    try:
        return value in allowed
    except TypeError:
        return False


def _unknown_keys(raw: Mapping[Any, Any], known: frozenset[str]) -> list[str]:
    return [cut(key) for key in sorted((k for k in raw if not _known(k, known)), key=str)]


def _expect(raw: Any, where: str, problems: list[str]) -> tuple[str, str]:
    if not isinstance(raw, dict):
        problems.append(f"{where}: 'expect' must be a mapping with reachable/source")
        return "yes", "any"
    for key in _unknown_keys(raw, EXPECT_KEYS):
        problems.append(f"{where}: unknown key {key} in expect; known: {', '.join(sorted(EXPECT_KEYS))}")
    reachable = raw.get("reachable", "yes")
    if not _known(reachable, REACHABLE):
        problems.append(f"{where}: reachable is {cut(reachable)}; use yes, no or optional")
        reachable = "yes"
    source = raw.get("source", "any")
    if not _known(source, SOURCES):
        problems.append(f"{where}: source is {cut(source)}; use one of {', '.join(sorted(SOURCES))}")
        source = "any"
    return REACHABLE[reachable], str(source)


def _match(raw: Any, where: str, problems: list[str]) -> dict[str, frozenset[str]]:
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{where}: 'match' must be a non-empty mapping of {', '.join(MATCH_KEYS)}")
        return {}
    match: dict[str, frozenset[str]] = {}
    for key, value in raw.items():
        if not _known(key, MATCH_KEYS):
            problems.append(f"{where}: unknown match key {cut(key)}; known: {', '.join(MATCH_KEYS)}")
            continue
        values = frozenset(str(v) for v in (value if isinstance(value, list) else [value]))
        allowed = MATCH_KEYS[key]
        if allowed is not None and not values <= allowed:
            bad = clip(", ".join(sorted(values - allowed)), 200)
            problems.append(f"{where}: match {key}: {bad} can never match; known: {', '.join(sorted(allowed))}")
        match[key] = values
    return match


def _plumbing(raw: Any, problems: list[str]) -> Plumbing:
    if not isinstance(raw, dict):
        problems.append("plumbing: must be a mapping of " + ", ".join(sorted(PLUMBING_KEYS)))
        return Plumbing()
    for key in _unknown_keys(raw, PLUMBING_KEYS):
        problems.append(f"plumbing: unknown key {key}; known: {', '.join(sorted(PLUMBING_KEYS))}")
    for key in ("service_routes", "masquerade_to_peer_pods"):
        if key in raw and not isinstance(raw[key], bool):
            problems.append(f"plumbing: {key} is {cut(raw[key])}; use true or false")
    rp_filter = raw.get("rp_filter", 0)
    if isinstance(rp_filter, bool) or not _known(rp_filter, (0, 1, 2)):
        problems.append(f"plumbing: rp_filter is {cut(rp_filter)}; use 0 (off), 1 (strict) or 2 (loose)")
        rp_filter = 0
    global_cidr = raw.get("global_cidr") or None
    if global_cidr is not None:
        try:
            ipaddress.IPv4Network(global_cidr if isinstance(global_cidr, str) else "not a string")
        except ValueError:
            problems.append(f"plumbing: global_cidr is {cut(global_cidr)}; write an IPv4 CIDR such as 242.0.0.0/8")
            global_cidr = None
    return Plumbing(
        service_routes=raw.get("service_routes") is True,
        masquerade_to_peer_pods=raw.get("masquerade_to_peer_pods", True) is not False,
        rp_filter=int(rp_filter),
        global_cidr=global_cidr,
        bgp=_bgp(raw["bgp"], problems) if "bgp" in raw else None,
        mcs=_mcs(raw["mcs"], problems) if "mcs" in raw else None,
    )


def _mcs(raw: Any, problems: list[str]) -> McsPlumbing | None:
    if raw is None or raw is True:
        return McsPlumbing()
    if not isinstance(raw, dict):
        problems.append(f"plumbing: mcs is {cut(raw)}; write a mapping of {', '.join(sorted(MCS_KEYS))} (or true)")
        return None
    for key in _unknown_keys(raw, MCS_KEYS):
        problems.append(f"plumbing.mcs: unknown key {key}; known: {', '.join(sorted(MCS_KEYS))}")
    for key in MCS_KEYS:
        if key in raw and not isinstance(raw[key], bool):
            problems.append(f"plumbing.mcs: {key} is {cut(raw[key])}; use true or false")
    return McsPlumbing(
        derived_services=raw.get("derived_services", True) is not False,
        header_ra=raw.get("header_ra", True) is not False,
    )


def _bgp(raw: Any, problems: list[str]) -> BgpPlumbing | None:
    if raw is None or raw is True:
        return BgpPlumbing()
    if not isinstance(raw, dict):
        problems.append(f"plumbing: bgp is {cut(raw)}; write a mapping of {', '.join(sorted(BGP_KEYS))} (or true)")
        return None
    for key in _unknown_keys(raw, BGP_KEYS):
        problems.append(f"plumbing.bgp: unknown key {key}; known: {', '.join(sorted(BGP_KEYS))}")
    for key in ("advertise_service_ips", "keep_source"):
        if key in raw and not isinstance(raw[key], bool):
            problems.append(f"plumbing.bgp: {key} is {cut(raw[key])}; use true or false")
    switch_as = raw.get("switch_as", 65200)
    if isinstance(switch_as, bool) or not isinstance(switch_as, int) or switch_as not in PRIVATE_AS:
        problems.append(
            f"plumbing.bgp: switch_as is {cut(switch_as)}; use a private AS number {PRIVATE_AS.start}-"
            f"{PRIVATE_AS.stop - 1} (the clusters take 64513, 64514, ... in config order)"
        )
        switch_as = 65200
    elif CLUSTER_AS_BASE <= switch_as < CLUSTER_AS_BASE + MAX_CLUSTERS:
        problems.append(
            f"plumbing.bgp: switch_as is {switch_as}; that is a cluster's AS (the clusters take {CLUSTER_AS_BASE}, "
            f"{CLUSTER_AS_BASE + 1}, ... in config order): use another, e.g. 65200"
        )
    return BgpPlumbing(
        switch_as=int(switch_as),
        advertise_service_ips=raw.get("advertise_service_ips") is True,
        keep_source=raw.get("keep_source") is True,
    )


def load_profile(name_or_path: str) -> Profile:
    """Load `profiles/<name>.yaml` or a path; raise ProfileError listing every problem."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
        raise ProfileError(
            f"profile {cut(name_or_path)} not found ({cut(str(path))}); known profiles: {known}; "
            "or pass a path to a YAML file"
        )
    try:
        doc = yamlsafe.load(yamlsafe.read_text(path, "profile"), str(path))
    except OSError as exc:
        raise ProfileError(
            f"{path}: cannot be read: {exc.strerror or exc.__class__.__name__}; pass a readable profile file"
        ) from None
    except yamlsafe.UnsafeYAMLError as exc:
        raise ProfileError(f"{path}: {exc.problem}\n    fix: {exc.fix}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: malformed YAML: {clip(str(exc), 600)}") from None
    if not isinstance(doc, dict):
        raise ProfileError(f"{path}: a profile is a mapping with name, defaults and rules")
    problems: list[str] = []
    for key in _unknown_keys(doc, PROFILE_KEYS):
        problems.append(f"unknown key {key}; known: {', '.join(sorted(PROFILE_KEYS))}")
    name = str(doc.get("name") or path.stem)
    plumbing = _plumbing(doc.get("plumbing") or {}, problems)
    if doc.get("globalnet") and plumbing.global_cidr is None:
        plumbing = replace(plumbing, global_cidr=DEFAULT_GLOBAL_CIDR)
    if plumbing.global_cidr and not doc.get("globalnet"):
        problems.append("plumbing: global_cidr is set but the profile does not declare 'globalnet: true'")
    if plumbing.mcs is not None and (plumbing.global_cidr or plumbing.bgp):
        problems.append("plumbing: mcs runs on routed clusters here; drop globalnet/global_cidr and bgp")
    if plumbing.bgp is not None and (plumbing.global_cidr or plumbing.service_routes):
        problems.append(
            "plumbing: bgp joins the clusters by BGP alone; drop global_cidr/globalnet and service_routes "
            "(announce the service ranges with bgp: {advertise_service_ips: true})"
        )
    requires = _requires(doc.get("requires") or {}, problems)
    defaults_raw = doc.get("defaults") or {}
    if not isinstance(defaults_raw, dict):
        problems.append("defaults: must be a mapping (reachable, source, because)")
        defaults_raw = {}
    reach, source = _expect({k: v for k, v in defaults_raw.items() if k != "because"}, "defaults", problems)
    defaults = Rule(f"{name}#defaults", {}, reach, source, str(defaults_raw.get("because") or "the profile's default"))
    rules: list[Rule] = []
    raw_rules = doc.get("rules") or []
    if not isinstance(raw_rules, list):
        problems.append("rules: must be a list")
        raw_rules = []
    for number, raw in enumerate(raw_rules, start=1):
        where = f"rule {number}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a mapping with match, expect and because")
            continue
        for key in _unknown_keys(raw, RULE_KEYS):
            problems.append(f"{where}: unknown key {key}; known: match, expect, because")
        if not raw.get("because"):
            problems.append(f"{where}: says no 'because:'; every rule must say why it holds")
        match = _match(raw.get("match"), where, problems)
        reach, source = _expect(raw.get("expect"), where, problems)
        rules.append(Rule(f"{name}#{number}", match, reach, source, str(raw.get("because", ""))))
    if problems:
        listed = [f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
        if len(problems) > MAX_LISTED_PROBLEMS:
            listed.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
        raise ProfileError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(listed))
    return Profile(
        name=name,
        description=str(doc.get("description", "")),
        globalnet=bool(doc.get("globalnet")),
        plumbing=plumbing,
        defaults=defaults,
        rules=tuple(rules),
        source_file=str(path),
        requires=requires,
    )


def _requires(raw: Any, problems: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`requires: {cni: calico, kube_proxy: [iptables, nftables], multicluster: none}`."""
    if not isinstance(raw, dict):
        problems.append("requires: must be a mapping of " + ", ".join(sorted(REQUIRES_KEYS)))
        return ()
    found = []
    for key, value in raw.items():
        if not _known(key, REQUIRES_KEYS):
            problems.append(f"requires: unknown key {cut(key)}; known: {', '.join(sorted(REQUIRES_KEYS))}")
            continue
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) and v and len(v) <= 63 for v in values):
            problems.append(f"requires: {key} is {cut(value)}; give a name or a list of names (e.g. calico)")
            continue
        found.append((str(key), tuple(values)))
    return tuple(sorted(found))
