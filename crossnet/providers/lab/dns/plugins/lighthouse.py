"""The `lighthouse` plugin: Submariner Lighthouse's clusterset.local answers."""

from __future__ import annotations

from collections.abc import Mapping

import dns.message
import dns.name
import dns.rcode

from crossnet.providers.lab.dns.query import Next, Query, address_rrsets, most_specific, response

LIGHTHOUSE_TTL = 5


class LighthousePlugin:
    """Answers from the records' `clusterset` map (the provider computes which names exist and
    their global IPs). Like Lighthouse, a name it does not know is NXDOMAIN without an SOA."""

    def __init__(self, zones: tuple[dns.name.Name, ...], entries: Mapping[dns.name.Name, tuple[str, ...]]) -> None:
        self.zones, self.entries = zones, entries

    async def serve(self, query: Query, next_plugin: Next) -> dns.message.Message:
        if most_specific(self.zones, query.qname) is None:
            return await next_plugin(query)
        if query.qname not in self.entries:
            return response(query, dns.rcode.NXDOMAIN, authoritative=True)
        reply = response(query, authoritative=True)
        reply.answer.extend(address_rrsets(query.qname, LIGHTHOUSE_TTL, self.entries[query.qname], query.qtype))
        return reply
