"""The `hosts` plugin: inline entries and a hosts file beside the Corefile (never /etc/hosts)."""

from __future__ import annotations

from collections.abc import Mapping

import dns.message
import dns.name
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
    servfail,
)


class HostsPlugin:
    def __init__(
        self,
        zones: tuple[dns.name.Name, ...],
        entries: Mapping[dns.name.Name, tuple[str, ...]],
        ttl: int,
        reverse: bool,
        fallthrough: Fallthrough,
    ) -> None:
        self.zones, self.entries, self.ttl, self.fallthrough = zones, entries, ttl, fallthrough
        self.ptr: dict[dns.name.Name, list[dns.name.Name]] = {}
        for name, addresses in entries.items() if reverse else ():
            for address in addresses:
                self.ptr.setdefault(dns.reversename.from_address(address), []).append(name)

    async def serve(self, query: Query, next_plugin: Next) -> dns.message.Message:
        if most_specific(self.zones, query.qname) is None:
            return await next_plugin(query)
        answers = self._answers(query)
        if not answers and query.qname not in self.entries and query.qname not in self.ptr:
            if self.fallthrough.covers(query.qname):
                return await next_plugin(query)
            # CoreDNS hosts has no SOA to give, so it answers SERVFAIL rather than NXDOMAIN.
            return servfail(query, f"hosts: no entry for {query.qname}")
        reply = response(query, authoritative=True)
        reply.answer.extend(answers)
        return reply

    def _answers(self, query: Query) -> list[dns.rrset.RRset]:
        if query.qtype == dns.rdatatype.PTR and query.qname in self.ptr:
            targets = [name.to_text() for name in self.ptr[query.qname]]
            return [dns.rrset.from_text(query.qname, self.ttl, "IN", "PTR", *targets)]
        return address_rrsets(query.qname, self.ttl, self.entries.get(query.qname, ()), query.qtype)
