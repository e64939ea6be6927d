"""A query on its way through a server block's plugin chain, and the helpers plugins answer with."""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

EDNS_PAYLOAD = 1232
MAX_CHASE_DEPTH = 8

Transport = Literal["udp", "tcp"]


@dataclass
class Query:
    """One question on its way through a server block's plugins."""

    request: dns.message.Message
    transport: Transport
    resolver: Callable[[Query], Awaitable[dns.message.Message]]
    depth: int = 0  # 0: a client's query; more: one the server made itself, chasing a CNAME
    errors: list[str] = field(default_factory=list)
    # Why this answer may differ next time (a forward, a cache hit whose TTLs count down), shared
    # with the queries made to chase a CNAME; an answer without any is the records' own, and the
    # server may send its bytes again for the same question until the Corefile or records change.
    varies: list[str] = field(default_factory=list)

    @property
    def qname(self) -> dns.name.Name:
        return self.request.question[0].name

    @property
    def qtype(self) -> dns.rdatatype.RdataType:
        return self.request.question[0].rdtype

    @property
    def from_client(self) -> bool:
        return self.depth == 0

    async def chase(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.message.Message | None:
        """Resolve `name` through this same server (as CoreDNS's upstream lookups do)."""
        if self.depth >= MAX_CHASE_DEPTH:
            self.errors.append(f"CNAME chain longer than {MAX_CHASE_DEPTH} at {name}")
            return None
        request = dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
        chased = Query(request, self.transport, self.resolver, self.depth + 1, varies=self.varies)
        reply = await self.resolver(chased)
        if chased.errors:  # logged by the chase's own resolution, each time it happens: never kept
            self.varies.append("an error on the way")
        return reply


Next = Callable[[Query], Awaitable[dns.message.Message]]


class Plugin(Protocol):
    async def serve(self, query: Query, next_plugin: Next) -> dns.message.Message: ...


@dataclass(frozen=True)
class Chain:
    """Calls the plugins of a server block in order; each gets the rest as `next_plugin`."""

    plugins: tuple[Plugin, ...]
    index: int = 0

    async def __call__(self, query: Query) -> dns.message.Message:
        if self.index >= len(self.plugins):
            return servfail(query, "no next plugin found")
        return await self.plugins[self.index].serve(query, Chain(self.plugins, self.index + 1))


def response(
    query: Query, rcode: dns.rcode.Rcode = dns.rcode.NOERROR, authoritative: bool = False
) -> dns.message.Message:
    """A reply as CoreDNS's SetReply makes it: RD copied from the query, RA never set (CoreDNS's own
    answers -- kubernetes, multicluster, hosts, errors -- say no recursion unless the `header` plugin
    sets RA; a forwarded answer is the upstream's own message, flags and all)."""
    reply = dns.message.make_response(query.request, recursion_available=False, our_payload=EDNS_PAYLOAD)
    reply.set_rcode(rcode)
    if authoritative:
        reply.flags |= int(dns.flags.AA)
    return reply


def soa_rrset(zone: dns.name.Name, ttl: int, serial: int) -> dns.rrset.RRset:
    """The SOA CoreDNS's kubernetes-style plugins put in the authority section of a denial (a
    new RRset each time, its rdata parsed once: most of a search list's queries are denials)."""
    return dns.rrset.from_rdata(zone, ttl, _soa_rdata(zone, ttl, serial))


@functools.lru_cache(maxsize=256)
def _soa_rdata(zone: dns.name.Name, ttl: int, serial: int) -> dns.rdata.Rdata:
    origin = zone.to_text()
    text = f"ns.dns.{origin} hostmaster.{origin} {serial} 7200 1800 86400 {ttl}"
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, text)


def servfail(query: Query, error: str) -> dns.message.Message:
    query.errors.append(error)
    return response(query, dns.rcode.SERVFAIL)


def most_specific(zones: Iterable[dns.name.Name], name: dns.name.Name) -> dns.name.Name | None:
    best: dns.name.Name | None = None
    for zone in zones:
        if name.is_subdomain(zone) and (best is None or len(zone) > len(best)):
            best = zone
    return best


def address_rrsets(
    owner: dns.name.Name, ttl: int, addresses: Sequence[str], rdtype: dns.rdatatype.RdataType
) -> list[dns.rrset.RRset]:
    wanted = (dns.rdatatype.A, dns.rdatatype.AAAA) if rdtype == dns.rdatatype.ANY else (rdtype,)
    rrsets = []
    for kind, make in ((dns.rdatatype.A, A), (dns.rdatatype.AAAA, AAAA)):
        found = [a for a in addresses if (":" in a) == (kind == dns.rdatatype.AAAA)] if kind in wanted else []
        if found:
            rrsets.append(dns.rrset.from_rdata_list(owner, ttl, [make(dns.rdataclass.IN, kind, a) for a in found]))
    return rrsets


@dataclass(frozen=True)
class Fallthrough:
    enabled: bool = False
    zones: tuple[dns.name.Name, ...] = ()

    def covers(self, name: dns.name.Name) -> bool:
        return self.enabled and (not self.zones or most_specific(self.zones, name) is not None)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
