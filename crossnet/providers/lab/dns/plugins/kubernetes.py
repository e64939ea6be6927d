"""The `kubernetes` plugin: Service, endpoint, pod and reverse names from the records file."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import cast

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset

from crossnet.providers.lab.dns.query import (
    Fallthrough,
    Next,
    Query,
    address_rrsets,
    most_specific,
    response,
    soa_rrset,
)
from crossnet.providers.lab.dns.records import ClusterRecords, ServiceRecord

DEFAULT_KUBERNETES_TTL = 5
ALWAYS_PRESENT_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


@dataclass(frozen=True)
class _Node:
    """A name that exists in the cluster zone: its addresses, or a CNAME, or a PTR target."""

    addresses: tuple[str, ...] = ()
    cname: str | None = None
    ptr: str | None = None
    apex: bool = False


class KubernetesPlugin:
    def __init__(
        self,
        zones: tuple[dns.name.Name, ...],
        records: ClusterRecords,
        ttl: int,
        pod_mode: str,
        fallthrough: Fallthrough,
        namespaces: frozenset[str],
        serial: int,
    ) -> None:
        self.zones, self.ttl, self.pod_mode = zones, ttl, pod_mode
        self.fallthrough, self.exposed_only, self.serial = fallthrough, namespaces, serial
        self.services = {(s.name, s.namespace): s for s in records.services}
        self.pods = frozenset((p.ip, p.namespace) for p in records.pods)
        self.namespaces = frozenset(
            {s.namespace for s in records.services} | {p.namespace for p in records.pods} | ALWAYS_PRESENT_NAMESPACES
        )
        self.reverse = self._reverse_names(records)

    def _reverse_names(self, records: ClusterRecords) -> dict[str, str]:
        forward_zones = [z for z in self.zones if not _is_reverse_zone(z)]
        if not forward_zones:
            return {}
        zone = forward_zones[0].to_text()
        names: dict[str, str] = {}
        for service in records.services:
            base = f"{service.name}.{service.namespace}.svc.{zone}"
            for endpoint in service.endpoints if service.type == "Headless" else ():
                names.setdefault(str(ipaddress.ip_address(endpoint.ip)), f"{endpoint.label}.{base}")
            if service.cluster_ip:
                names.setdefault(str(ipaddress.ip_address(service.cluster_ip)), base)
        return names

    async def serve(self, query: Query, next_plugin: Next) -> dns.message.Message:
        zone = most_specific(self.zones, query.qname)
        if zone is None:
            return await next_plugin(query)
        node = self._reverse_node(query.qname) if _is_reverse_zone(zone) else self._lookup(query.qname, zone)
        if node is None:
            if self.fallthrough.covers(query.qname):
                return await next_plugin(query)
            return self._without_answer(query, zone, dns.rcode.NXDOMAIN)
        reply = response(query, authoritative=True)
        reply.answer.extend(await self._answers(query, zone, node))
        if not reply.answer:
            return self._without_answer(query, zone, dns.rcode.NOERROR)
        return reply

    def _without_answer(self, query: Query, zone: dns.name.Name, rcode: dns.rcode.Rcode) -> dns.message.Message:
        reply = response(query, rcode, authoritative=True)
        reply.authority.append(self._soa(zone))
        return reply

    def _soa(self, zone: dns.name.Name) -> dns.rrset.RRset:
        return soa_rrset(zone, self.ttl, self.serial)

    async def _answers(self, query: Query, zone: dns.name.Name, node: _Node) -> list[dns.rrset.RRset]:
        owner, qtype = query.qname, query.qtype
        if node.apex:
            if qtype == dns.rdatatype.SOA:
                return [self._soa(zone)]
            if qtype == dns.rdatatype.NS:
                return [dns.rrset.from_text(owner, self.ttl, "IN", "NS", f"ns.dns.{zone.to_text()}")]
            return []
        if node.ptr is not None:
            return [dns.rrset.from_text(owner, self.ttl, "IN", "PTR", node.ptr)] if qtype == dns.rdatatype.PTR else []
        if node.cname is not None:
            return await self._cname_answers(query, node.cname)
        return address_rrsets(owner, self.ttl, node.addresses, qtype)

    async def _cname_answers(self, query: Query, target_text: str) -> list[dns.rrset.RRset]:
        target = dns.name.from_text(target_text)
        answers = [dns.rrset.from_text(query.qname, self.ttl, "IN", "CNAME", target.to_text())]
        if query.qtype != dns.rdatatype.CNAME:
            chased = await query.chase(target, query.qtype)
            if chased is not None:
                answers.extend(chased.answer)
        return answers

    def _lookup(self, qname: dns.name.Name, zone: dns.name.Name) -> _Node | None:
        labels = [label.decode("latin-1").lower() for label in reversed(qname.relativize(zone).labels)]
        if not labels:
            return _Node(apex=True)
        if labels[0] == "svc":
            return self._service_node(labels[1:])
        if labels[0] == "pod":
            return self._pod_node(labels[1:])
        return None

    def _exposed(self, namespace: str) -> bool:
        return namespace in self.namespaces and (not self.exposed_only or namespace in self.exposed_only)

    def _service_node(self, labels: list[str]) -> _Node | None:
        if not labels:
            return _Node()
        if not self._exposed(labels[0]):
            return None
        if len(labels) == 1:
            return _Node()
        service = self.services.get((labels[1], labels[0]))
        if service is None or len(labels) > 3:
            return None
        if len(labels) == 3:
            return self._endpoint_node(service, labels[2])
        if service.type == "ExternalName":
            return _Node(cname=service.external_name)
        if service.type == "ClusterIP":
            return _Node(addresses=(cast(str, service.cluster_ip),))
        addresses = tuple(endpoint.ip for endpoint in service.endpoints)
        return _Node(addresses=addresses) if addresses else None

    @staticmethod
    def _endpoint_node(service: ServiceRecord, label: str) -> _Node | None:
        if service.type == "ExternalName":
            return None
        for endpoint in service.endpoints:
            if endpoint.label.lower() == label:
                return _Node(addresses=(endpoint.ip,))
        return None

    def _pod_node(self, labels: list[str]) -> _Node | None:
        if not labels:
            return _Node()
        if self.pod_mode == "disabled" or not self._exposed(labels[0]) or len(labels) > 2:
            return None
        if len(labels) == 1:
            return _Node()
        ip = _undashed(labels[1])
        if ip is None or (self.pod_mode == "verified" and (ip, labels[0]) not in self.pods):
            return None
        return _Node(addresses=(ip,))

    def _reverse_node(self, qname: dns.name.Name) -> _Node | None:
        try:
            ip = str(ipaddress.ip_address(dns.reversename.to_address(qname)))
        except (dns.exception.SyntaxError, ValueError):
            return None
        target = self.reverse.get(ip)
        return None if target is None else _Node(ptr=target)


def _is_reverse_zone(zone: dns.name.Name) -> bool:
    return zone.is_subdomain(dns.reversename.ipv4_reverse_domain) or zone.is_subdomain(
        dns.reversename.ipv6_reverse_domain
    )


def _undashed(label: str) -> str | None:
    for candidate in (label.replace("-", "."), label.replace("-", ":")):
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None
