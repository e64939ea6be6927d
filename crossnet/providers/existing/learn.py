"""What a run on existing clusters learns once its agents run (split from provider.py): pod CIDRs
the nodes do not carry (Calico IPAM) from the agents' IPs, the cluster domain as an agent's
resolv.conf search list says it, and the one NodePort the API server allocated."""

from __future__ import annotations

import sys
from dataclasses import replace

from crossnet.providers.base import ProviderError
from crossnet.providers.existing.kube import ExistingKube
from crossnet.providers.existing.session import Discovery
from crossnet.providers.kube_agents import agent_pod_name, echo_node_ports, live_agents

__all__ = ["learn_from_agents"]


def _warn(message: str) -> None:
    print(f"crossnet: warning: {message}", file=sys.stderr, flush=True)


def learn_from_agents(discovery: Discovery, cluster: str, kube: ExistingKube, namespace: str) -> Discovery:
    """`discovery` with what `cluster`'s agents showed (a domain different from discovery's becomes
    a note and a warning)."""
    fact = discovery.fact(cluster)
    shorts = [s.short for s in discovery.sampled[cluster]]
    pods, _ = live_agents(kube, cluster, namespace, shorts)
    carrier, node_ports = echo_node_ports(kube.list_objects(f"/api/v1/namespaces/{namespace}/services"))
    if len(node_ports) != 1:  # the cells probe one NodePort over tcp and udp, as the API server allocates it
        raise ProviderError(f"{cluster}: Service {carrier} got NodePorts {sorted(map(str, node_ports))}, not one")
    notes = list(fact.notes)
    if not fact.pod_cidrs:
        fact = replace(
            fact,
            pod_cidrs=tuple(f"{p.ip}/32" for p in pods if p.ip),
            pod_cidrs_source="the agents' pod IPs (the nodes carry no spec.podCIDRs)",
        )
    try:
        log = kube.pod_log(namespace, agent_pod_name("pod", shorts[0]))
    except ProviderError as exc:
        log = ""
        notes.append(f"an agent's resolv.conf could not be read ({str(exc)[:120]})")
    search = next((line.split()[2:] for line in log.splitlines() if line.startswith("crossnet-resolv: search")), [])
    prefix = f"{namespace}.svc."
    domain = next((entry.removeprefix(prefix) for entry in search if entry.startswith(prefix)), "")
    if domain and domain != fact.domain:
        note = f"the agents' resolv.conf searches {domain}, discovery said {fact.domain} ({fact.domain_source})"
        notes.append(note)
        _warn(f"{cluster}: {note}; the dns cells use {fact.domain}")
    return discovery.with_fact(replace(fact, notes=tuple(notes)))
