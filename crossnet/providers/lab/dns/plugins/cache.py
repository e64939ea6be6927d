"""The `cache` plugin: positive and negative cache; `disable success|denial ZONES` honoured."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from crossnet.providers.lab.dns.query import Next, Query, most_specific

CACHE_CAPACITY = 10_000


@dataclass(frozen=True)
class _CacheEntry:
    wire: bytes
    stored: float
    expires: float


_CacheKey = tuple[dns.name.Name, int, int, bool, bool]


class CachePlugin:
    def __init__(
        self,
        zones: tuple[dns.name.Name, ...],
        success_ttl: int,
        denial_ttl: int,
        no_success: tuple[dns.name.Name, ...] | None,
        no_denial: tuple[dns.name.Name, ...] | None,
    ) -> None:
        self.zones, self.success_ttl, self.denial_ttl = zones, success_ttl, denial_ttl
        self.no_success, self.no_denial = no_success, no_denial
        self.entries: dict[_CacheKey, _CacheEntry] = {}

    async def serve(self, query: Query, next_plugin: Next) -> dns.message.Message:
        if most_specific(self.zones, query.qname) is None:
            return await next_plugin(query)
        request = query.request
        key: _CacheKey = (
            query.qname,
            query.qtype,
            request.question[0].rdclass,
            bool(request.ednsflags & dns.flags.DO),
            bool(request.flags & dns.flags.CD),
        )
        now = time.monotonic()
        entry = self.entries.get(key)
        if entry is not None and entry.expires > now:
            query.varies.append("cache")
            return _from_cache(request, entry, now)
        reply = await next_plugin(query)
        if self._store(key, reply, now):  # the next answer comes from here, its TTLs counting down
            query.varies.append("cache")
        return reply

    def _store(self, key: _CacheKey, reply: dns.message.Message, now: float) -> bool:
        ttl = self._ttl(key[0], reply)
        if ttl <= 0:
            return False
        try:
            wire = reply.to_wire()
        except dns.exception.TooBig:
            return False
        if len(self.entries) >= CACHE_CAPACITY:
            self.entries.pop(next(iter(self.entries)))
        self.entries[key] = _CacheEntry(wire, now, now + ttl)
        return True

    def _ttl(self, name: dns.name.Name, reply: dns.message.Message) -> int:
        if reply.flags & dns.flags.TC:
            return 0
        rcode = reply.rcode()
        if rcode == dns.rcode.NOERROR and reply.answer:
            if _disabled(self.no_success, name):
                return 0
            return min([self.success_ttl, *(rrset.ttl for rrset in reply.answer)])
        if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) and not _disabled(self.no_denial, name):
            soa = [r for r in reply.authority if r.rdtype == dns.rdatatype.SOA]
            if soa:
                return min(self.denial_ttl, soa[0].ttl, int(cast(Any, soa[0][0]).minimum))
        return 0


def _disabled(zones: tuple[dns.name.Name, ...] | None, name: dns.name.Name) -> bool:
    return zones is not None and (not zones or most_specific(zones, name) is not None)


def _from_cache(request: dns.message.Message, entry: _CacheEntry, now: float) -> dns.message.Message:
    reply = dns.message.from_wire(entry.wire)
    reply.id = request.id
    reply.question = list(request.question)
    reply.flags = (reply.flags & ~int(dns.flags.RD)) | (request.flags & int(dns.flags.RD))
    elapsed = int(now - entry.stored)
    for rrset in (*reply.answer, *reply.authority, *reply.additional):
        rrset.ttl = max(0, rrset.ttl - elapsed)
    return reply
