"""The `multicluster` plugin: MCS ServiceImports under their zone (clusterset.local), answered the
way coredns/multicluster -- the external plugin Karmada builds into CoreDNS, just below
`kubernetes` in plugin.cfg -- answers them, from the records' `serviceimports`.

    multicluster [ZONES...] {
        fallthrough [ZONES...]
        noendpoints
        kubeconfig KUBECONFIG [CONTEXT]     (accepted, ignored: the records file stands for the API)
    }

Names (the MCS DNS specification; TTL 5 s, as the plugin's fixed default):

    <svc>.<ns>.svc.<zone>                     A: a ClusterSetIP import's `ips`, every endpoint of a
                                              Headless one; SRV: one record per port
    <hostname>.<cluster>.<svc>.<ns>.svc.<zone>  A: that endpoint (hostname, or its IP with dashes)
    _<port>._<proto>.<svc>.<ns>.svc.<zone>    SRV: one record per matching port: priority 0, weight
                                              100 shared out as CoreDNS does (floor(100 / records)),
                                              target <svc>.<ns>.svc.<zone>. (ClusterSetIP) or each
                                              <hostname>.<cluster>.<svc>.<ns>.svc.<zone>. (Headless),
                                              the targets' addresses in the additional section
    dns-version.<zone>                        TXT: the schema version, 1.1.0

A name that exists but has no record of the asked type (AAAA of an IPv4 import, the apex, `svc`,
an existing namespace) is NOERROR with no answer and the zone's SOA (NODATA); anything else under
the zone -- a Service that is not imported, a namespace that does not exist -- is NXDOMAIN with
the SOA, or goes to the next plugin with `fallthrough`. Names outside the zone always go to the
next plugin. Answers are authoritative (AA) without RA, as CoreDNS sends them; `header { response
set ra }` adds RA. `noendpoints`: endpoint names and Headless imports are NXDOMAIN. Names under
`pod.<zone>` below a namespace are NXDOMAIN (the plugin serves Services only).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
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
from crossnet.providers.lab.dns.records import ImportPortRecord, ServiceImportRecord

MULTICLUSTER_TTL = 5
DNS_SCHEMA_VERSION = "1.1.0"
_SCHEMA_TTL = 28800


@dataclass(frozen=True)
class _Entry:
    """One (address, port) a name stands for; `owner` is the name an SRV record points at."""

    owner: str  # relative to the zone, e.g. "echo.crossnet.svc"
    ip: str
    port: ImportPortRecord | None


@dataclass(frozen=True)
class _Request:
    """A query name split as the plugin's parseRequest splits it."""

    namespace: str = ""
    service: str = ""
    port: str = "*"
    protocol: str = "*"
    endpoint: str = ""
    cluster: str = ""


class MulticlusterPlugin:
    def __init__(
        self,
        zones: tuple[dns.name.Name, ...],
        imports: Iterable[ServiceImportRecord],
        namespaces: frozenset[str],
        fallthrough: Fallthrough,
        serve_endpoints: bool,
        serial: int,
    ) -> None:
        self.zones, self.fallthrough, self.serve_endpoints, self.serial = zones, fallthrough, serve_endpoints, serial
        self.imports = {(i.name.lower(), i.namespace.lower()): i for i in imports}
        imported = {i.namespace.lower() for i in self.imports.values()}
        self.namespaces = frozenset(n.lower() for n in namespaces) | imported

    async def serve(self, query: Query, next_plugin: Next) -> dns.message.Message:
        zone = most_specific(self.zones, query.qname)
        if zone is None:
            return await next_plugin(query)
        labels = [label.decode("latin-1").lower() for label in query.qname.relativize(zone).labels]
        if labels == ["dns-version"] and query.qtype == dns.rdatatype.TXT:
            reply = response(query, authoritative=True)
            reply.answer.append(dns.rrset.from_text(query.qname, _SCHEMA_TTL, "IN", "TXT", f'"{DNS_SCHEMA_VERSION}"'))
            return reply
        entries = self._lookup(labels)
        if entries is None:
            if self.fallthrough.covers(query.qname):
                return await next_plugin(query)
            return self._without_answer(query, zone, dns.rcode.NXDOMAIN)
        reply = response(query, authoritative=True)
        if query.qtype == dns.rdatatype.SRV:
            reply.answer, reply.additional = self._srv(query.qname, zone, entries)
        else:
            addresses = list(dict.fromkeys(entry.ip for entry in entries))
            reply.answer.extend(address_rrsets(query.qname, MULTICLUSTER_TTL, addresses, query.qtype))
        if not reply.answer:
            return self._without_answer(query, zone, dns.rcode.NOERROR)
        return reply

    def _without_answer(self, query: Query, zone: dns.name.Name, rcode: dns.rcode.Rcode) -> dns.message.Message:
        reply = response(query, rcode, authoritative=True)
        reply.authority.append(soa_rrset(zone, MULTICLUSTER_TTL, self.serial))
        return reply

    # ----------------------------------------------------------------------- names

    def _lookup(self, labels: list[str]) -> list[_Entry] | None:
        """The entries a name stands for ([] for a name that exists without addresses), or None
        for a name that does not exist."""
        request = _parse(labels)
        if request is None:
            return None
        if not request.namespace:
            return []
        if request.namespace not in self.namespaces:
            return None
        if not request.service:
            return []
        service = self.imports.get((request.service, request.namespace))
        if service is None:
            return None
        entries = self._entries(service, request)
        return entries or None

    def _entries(self, service: ServiceImportRecord, request: _Request) -> list[_Entry]:
        ports: list[ImportPortRecord | None] = [
            p for p in service.ports if _match(request.port, p.name) and _match(request.protocol, p.protocol)
        ]
        if not service.ports and request.port == "*":  # no ports: the name still has its addresses
            ports = [None]
        base = f"{service.name}.{service.namespace}.svc".lower()
        if service.type == "Headless" or request.endpoint:
            if not self.serve_endpoints:
                return []
            return [
                _Entry(f"{endpoint.label}.{endpoint.cluster}.{base}".lower(), endpoint.ip, port)
                for endpoint in service.endpoints
                if not request.endpoint
                or (_match(request.cluster, endpoint.cluster) and _match(request.endpoint, endpoint.label))
                for port in ports
            ]
        return [_Entry(base, ip, port) for port in ports for ip in service.ips]

    @staticmethod
    def _srv(
        qname: dns.name.Name, zone: dns.name.Name, entries: list[_Entry]
    ) -> tuple[list[dns.rrset.RRset], list[dns.rrset.RRset]]:
        """SRV records as CoreDNS's plugin.SRV makes them: weight 100 shared out over the
        entries, duplicates (target, port) dropped, the targets' addresses as extra records."""
        with_port = [entry for entry in entries if entry.port is not None]
        if not with_port:
            return [], []
        weight = max(1, 100 // len(entries))
        records: dict[tuple[str, int], str] = {}
        extra: dict[str, list[str]] = {}
        for entry in with_port:
            assert entry.port is not None
            target = dns.name.from_text(entry.owner, zone).to_text()
            records.setdefault((target, entry.port.port), f"0 {weight} {entry.port.port} {target}")
            if entry.ip not in extra.setdefault(target, []):
                extra[target].append(entry.ip)
        answer = [dns.rrset.from_text(qname, MULTICLUSTER_TTL, "IN", "SRV", *records.values())]
        additional = [
            rrset
            for target, addresses in extra.items()
            for rrset in address_rrsets(dns.name.from_text(target), MULTICLUSTER_TTL, addresses, dns.rdatatype.ANY)
        ]
        return answer, additional


def _parse(labels: list[str]) -> _Request | None:
    """Split a name (left to right, relative to the zone) like the plugin's parseRequest; None
    for a name the plugin calls an invalid request (NXDOMAIN)."""
    if not labels:
        return _Request()
    kind, rest = labels[-1], labels[:-1]
    if kind not in ("svc", "pod"):
        return None
    if not rest:
        return _Request()
    if kind == "pod" and len(rest) > 1:
        return None
    namespace, rest = rest[-1], rest[:-1]
    if not rest:
        return _Request(namespace)
    service, rest = rest[-1], rest[:-1]
    if not rest:
        return _Request(namespace, service)
    if len(rest) != 2:
        return None
    first, second = rest
    if first.startswith("_"):
        return _Request(namespace, service, port=first[1:], protocol=second.removeprefix("_"))
    return _Request(namespace, service, endpoint=first, cluster=second)


def _match(wanted: str, value: str) -> bool:
    return wanted in ("*", "any") or value in ("*", "any") or wanted.lower() == value.lower()
