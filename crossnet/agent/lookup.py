"""DNS probes: resolve like a pod's resolver would (the cluster DNS server, its search list,
ndots:5), one socket per probe. dnspython builds and parses the messages and runs each exchange
(dns.asyncquery); the search-list walk is done here instead of by dns.asyncresolver, whose
per-query socket and bookkeeping cost several times the exchange itself (measured: a by-name
probe took 8-11 ms of CPU through the resolver; the lab's DNS cells are CPU-bound on two cores)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from crossnet.agent.results import ms_since as _ms
from crossnet.agent.results import os_error
from crossnet.agent.results import result as _result

__all__ = ["MAX_ANSWERS", "preload", "probe_dns", "qnames_to_try"]

MAX_ANSWERS = 64  # DNS records reported per probe
UDP_RETRY = 2.0  # seconds before a UDP query is sent again (dnspython's resolver timeout; glibc's is 5)


def preload() -> None:
    """Import what a DNS probe uses (the lab's fork server calls it once, so no agent pays the
    imports on its first probe)."""
    import dns.asyncbackend
    import dns.asyncquery
    import dns.edns
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.rcode
    import dns.rdatatype

    dns.asyncbackend.get_backend("asyncio")


def qnames_to_try(qname: str, search: list[str], ndots: int) -> list[Any]:
    """The names a stub resolver asks, in order: a name with more than `ndots` labels (or ending in
    a dot) absolute first, else the search list first (dnspython's and, for kubelet's ndots:5,
    glibc's order)."""
    import dns.name

    name = dns.name.from_text(qname, None)
    if name.is_absolute():
        return [name]
    absolute = name.concatenate(dns.name.root)
    searched = [name.concatenate(dns.name.from_text(suffix)) for suffix in search]
    return [absolute, *searched] if len(name) > ndots else [*searched, absolute]


class _Channel:
    """One probe's way to its DNS server: one UDP socket, or one TCP connection reused for every
    name of the search list (opened again once if the server closed it); a truncated UDP answer
    is asked again over TCP, as a stub resolver does."""

    def __init__(self, server: str, port: int, tcp: bool, deadline: float) -> None:
        import dns.asyncbackend

        self.server, self.port, self.tcp, self.deadline = server, port, tcp, deadline
        self.backend = dns.asyncbackend.get_backend("asyncio")
        self.family = socket.AF_INET6 if ":" in server else socket.AF_INET
        self.udp: Any = None
        self.stream: Any = None
        self.transport = "tcp" if tcp else "udp"  # the one in use (or being opened) now

    def remaining(self) -> float:
        import dns.exception

        left = self.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise dns.exception.Timeout
        return left

    async def ask(self, query: Any) -> Any:
        import dns.asyncquery
        import dns.flags

        if not self.tcp:
            if self.udp is None:  # connected, as a stub resolver's: an ICMP port unreachable is seen at once
                destination = (self.server, self.port)
                self.udp = await self.backend.make_socket(  # type: ignore[no-untyped-call]
                    self.family, socket.SOCK_DGRAM, 0, None, destination
                )
            self.transport = "udp"
            reply = await self._udp(query)
            if not reply.flags & dns.flags.TC:
                return reply
        self.transport = "tcp"
        for attempt in (1, 2):
            if self.stream is None:
                destination = (self.server, self.port)
                self.stream = await self.backend.make_socket(  # type: ignore[no-untyped-call]
                    self.family, socket.SOCK_STREAM, 0, None, destination, self.remaining()
                )
            try:
                return await dns.asyncquery.tcp(query, self.server, self.remaining(), self.port, sock=self.stream)
            except (EOFError, ConnectionError):
                await self.close_stream()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _udp(self, query: Any) -> Any:
        """Send, and send again every UDP_RETRY seconds until the deadline, as a stub resolver
        does (a datagram lost once must not make a long probe timeout a verdict)."""
        import dns.asyncquery
        import dns.exception

        while True:
            wait = min(self.remaining(), UDP_RETRY)
            try:
                return await dns.asyncquery.udp(
                    query, self.server, wait, self.port, sock=self.udp, ignore_unexpected=True
                )
            except dns.exception.Timeout:
                self.remaining()  # raises once the deadline has passed; else send again

    async def close_stream(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await stream.close()

    async def close(self) -> None:
        await self.close_stream()
        if self.udp is not None:
            await self.udp.close()


async def probe_dns(probe: dict[str, Any], timeout: float) -> dict[str, Any]:
    """`qtype` A (default) or SRV (answers "srv:<priority> <weight> <port> <target>"); NXDOMAIN
    only when every name of the search list was; any other rcode ends the walk as `servfail`
    (as dnspython's resolver without retry_servfail); no server there is `refused`, no way to it
    `no-route` (the errno classes of every probe); `ra` is the RA flag of the last response
    (absent when none came); `ttl` the answer's lowest TTL."""
    import dns.edns
    import dns.exception
    import dns.message
    import dns.rcode
    import dns.rdatatype

    started = time.perf_counter()
    deadline = asyncio.get_running_loop().time() + timeout
    padding = int(probe.get("payload") or 0)
    # An EDNS Padding option (RFC 7830) makes the query itself near-MTU sized.
    options: list[dns.edns.Option] = [dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\0" * padding)]
    channel = _Channel(str(probe["server"]), int(probe.get("dns_port") or 53), probe["protocol"] == "dns-tcp", deadline)
    replies: list[Any] = []
    try:
        qtype = dns.rdatatype.from_text(str(probe.get("qtype") or "A"))
        names = qnames_to_try(str(probe["qname"]), list(probe.get("search") or []), int(probe.get("ndots", 5)))
        for name in names:
            if padding:
                query = dns.message.make_query(name, qtype, use_edns=0, payload=4096, options=options)
            else:
                query = dns.message.make_query(name, qtype)
            reply = await channel.ask(query)
            replies.append(reply)
            rcode = reply.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                continue
            if rcode != dns.rcode.NOERROR:
                text = dns.rcode.to_text(rcode)
                detail = f"the server answered {text} for {name.to_text()}"
                return _result(False, "servfail", latency_ms=_ms(started), rcode=text, detail=detail, **_ra(replies))
            return _answered(reply, name, started)
    except (dns.exception.Timeout, TimeoutError):
        return _result(False, "timeout", latency_ms=_ms(started), detail=f"no DNS answer within {timeout}s")
    except OSError as exc:  # refused, unreachable, no buffer: classified as for any other probe
        failed = os_error(exc, started)
        if failed["error"] == "refused":
            how = "a reset" if channel.transport == "tcp" else "ICMP port unreachable"
            failed["detail"] = f"no DNS server listens on {channel.server} port {channel.port} ({how})"
        else:
            failed["detail"] = f"DNS server {channel.server} port {channel.port}: {failed.get('detail', '')}"[:300]
        return {**failed, **_ra(replies)}
    except (dns.exception.DNSException, EOFError) as exc:
        return _result(False, "error", latency_ms=_ms(started), detail=f"{exc.__class__.__name__}: {exc}"[:300])
    finally:
        await channel.close()
    return _result(False, "nxdomain", latency_ms=_ms(started), rcode="NXDOMAIN", **_ra(replies))


def _answered(reply: Any, name: Any, started: float) -> dict[str, Any]:
    import dns.rdatatype

    records: list[str] = []
    # The lowest TTL of the answer: below what the zone serves, it was a cached answer (a moved
    # target stays hidden until it runs out).
    ttl = min((rrset.ttl for rrset in reply.answer), default=None)
    for rrset in reply.answer:
        for rdata in rrset:
            if rdata.rdtype == dns.rdatatype.CNAME:
                records.append(f"cname:{rdata.target.to_text()}")
            elif rdata.rdtype == dns.rdatatype.A:
                records.append(rdata.address)
            elif rdata.rdtype == dns.rdatatype.SRV:
                records.append(f"srv:{rdata.priority} {rdata.weight} {rdata.port} {rdata.target.to_text()}")
    del records[MAX_ANSWERS:]
    return _result(
        True,
        latency_ms=_ms(started),
        rcode="NOERROR",
        answers=records,
        ttl=ttl,
        **_ra([reply]),
        detail=f"resolved as {name.to_text()}" + (f" (TTL {ttl} s)" if ttl is not None else ""),
    )


def _ra(responses: list[Any]) -> dict[str, Any]:
    """{"ra": the RA (recursion available) flag of the last response}, or {} when none came."""
    import dns.flags

    return {"ra": bool(responses[-1].flags & dns.flags.RA)} if responses else {}
