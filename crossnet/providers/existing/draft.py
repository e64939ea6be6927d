"""`crossnet discover`'s draft profile, and the check of a profile's `requires:` against discovery.

The draft says only what discovery can back, each rule's `because:` naming what was found (a
Corefile forward, a multi-cluster layer); what no read-only look can tell (whether somebody routed
the peer's pod CIDRs by hand, what source address a peer sees) is `optional` or `any`, and says
so: the user decides and edits. It pins `requires:` to the CNI, kube-proxy mode and multi-cluster
layer found, so the profile refuses to judge a different setup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from crossnet.providers.existing.discovery import ClusterFacts

__all__ = ["draft_profile", "requires_of", "requires_problems"]

ROUTING_LAYERS = {
    "submariner": "Submariner connects the clusters' pod and service CIDRs through its gateways",
    "cilium-clustermesh": "Cilium ClusterMesh routes pod IPs between the meshed clusters",
}


def _fact(fact: ClusterFacts, key: str) -> tuple[str, ...]:
    if key == "cni":
        return (fact.cni,)
    if key == "kube_proxy":
        return (fact.kube_proxy,)
    return fact.multicluster or ("none",)


def requires_of(facts: Sequence[ClusterFacts]) -> dict[str, Any]:
    """`requires:` for what was found: one value when every cluster agrees, else the list."""
    result: dict[str, Any] = {}
    for key in ("cni", "kube_proxy", "multicluster"):
        values = sorted({v for f in facts for v in _fact(f, key)} - ({"none"} if key == "multicluster" else set()))
        if key == "multicluster" and not values:
            values = ["none"]
        result[key] = values[0] if len(values) == 1 else values
    return result


def requires_problems(requires: Sequence[tuple[str, Sequence[str]]], facts: Sequence[ClusterFacts]) -> list[str]:
    """What a profile's `requires:` finds different on the clusters. cni and kube_proxy: each
    cluster's must be one of the accepted values; multicluster: each named layer must be present
    on every cluster ("none": no layer at all)."""
    problems = []
    for key, accepted in requires:
        for fact in facts:
            found = _fact(fact, key)
            if key == "multicluster":
                missing = [] if "none" in accepted and found == ("none",) else [a for a in accepted if a not in found]
                if "none" in accepted and found != ("none",):
                    missing = [f"none (found {', '.join(found)})"]
                if missing:
                    problems.append(
                        f"{fact.name}: requires multicluster {', '.join(missing)}; found {', '.join(found)}"
                    )
            elif found[0] not in accepted:
                problems.append(
                    f"{fact.name}: requires {key} {' or '.join(accepted)}; found {found[0]} ({_source(fact, key)})"
                )
    return problems


def _source(fact: ClusterFacts, key: str) -> str:
    return {"cni": fact.cni_source, "kube_proxy": fact.kube_proxy_source}.get(key, fact.multicluster_source)


def _forward(src: ClusterFacts, dst: ClusterFacts) -> tuple[str, ...] | None:
    for zone, targets in src.forwards:
        if zone == dst.domain or dst.domain.endswith("." + zone):
            return targets
    return None


def _rule(match: Mapping[str, Any], reachable: str, because: str, source: str = "") -> dict[str, Any]:
    expect: dict[str, Any] = {"reachable": reachable}
    if source:
        expect["source"] = source
    return {"match": dict(match), "expect": expect, "because": because}


def draft_profile(name: str, facts: Sequence[ClusterFacts]) -> str:
    """The draft profile (YAML text, a comment on top saying it is a draft)."""
    layers = sorted({layer for f in facts for layer in f.multicluster if layer in ROUTING_LAYERS})
    everywhere = [layer for layer in layers if all(layer in f.multicluster for f in facts)]
    peer = {"scope": "peer-cluster"}
    rules = []
    if everywhere:
        why = "; ".join(ROUTING_LAYERS[layer] for layer in everywhere)
        found = f"found on every cluster: {', '.join(everywhere)}"
        rules.append(_rule({**peer, "target": ["pod-ip", "headless"]}, "yes", f"{why} ({found})"))
        if "submariner" in everywhere:
            rules.append(_rule({**peer, "target": "cluster-ip"}, "yes", f"{ROUTING_LAYERS['submariner']} ({found})"))
    else:
        rules.append(
            _rule(
                {**peer, "target": ["pod-ip", "headless"]},
                "optional",
                "no multi-cluster layer that routes pod CIDRs was found (no Submariner, no Cilium ClusterMesh); "
                "whether the peer's pod CIDRs are routed (by hand, BGP, a cloud's VPC) cannot be read: set yes or no",
            )
        )
    if "submariner" not in everywhere:
        rules.append(
            _rule(
                {**peer, "target": "cluster-ip"},
                "no",
                "no layer that routes a peer's service CIDR was found, and a ClusterIP is served inside its cluster",
            )
        )
    rules.append(
        _rule(
            {**peer, "target": "node-port"},
            "optional",
            "a NodePort is reachable wherever the node networks route to each other, which discovery cannot see",
        )
    )
    for src in facts:
        for dst in facts:
            if src is dst:
                continue
            pair = {"suite": "dns", "src_cluster": src.name, "dst_cluster": dst.name, **peer}
            targets = _forward(src, dst)
            if targets is None:
                rules.append(
                    _rule(
                        {**pair, "form": "nxdomain"},
                        "optional",
                        f"{src.name}'s Corefile has no server block for {dst.domain}: a nonexistent name there is "
                        "answered by the upstream resolvers, if at all",
                    )
                )
            where = f"{src.name}'s Corefile forwards {dst.domain} to {' '.join(targets)}" if targets else ""
            rules.append(
                _rule(
                    pair,
                    "yes" if targets is not None else "no",
                    where or f"{src.name}'s Corefile has no server block for {dst.domain} ({dst.name}'s domain)",
                )
            )
    rules.append(
        _rule(
            {"suite": "service", "target": "dns-name", **peer},
            "optional",
            "a peer's Service name is resolved through the Corefile's forward, then connected over the routes to the "
            "peer's pods or ClusterIP: yes only where the rules above say both hold",
        )
    )
    doc: dict[str, Any] = {
        "name": name,
        "description": f"Draft from `crossnet discover` of {', '.join(f.name for f in facts)}: review every rule.",
        "globalnet": False,
        "requires": requires_of(facts),
        "defaults": {
            "reachable": "yes",
            "source": "any",
            "because": "within a cluster every pod, node and Service is reachable (the Kubernetes network model)",
        },
        "rules": rules,
    }
    head = [
        f"# DRAFT written by `crossnet discover` ({', '.join(f.summary() for f in facts)[:2000]})",
        "# Every rule says what discovery found; `optional` marks what it cannot know. Review before use.",
        "# The source address a peer sees (the snat suite) is left to `any`: masquerading cannot be read from the",
        "# API; the first run shows it (then add a snat rule with source: preserved or node-ip).",
    ]
    if any("submariner-globalnet" in f.multicluster for f in facts):
        head.append("# Submariner Globalnet was found: start from profiles/globalnet.yaml instead of this draft.")
    return "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False, width=200)
