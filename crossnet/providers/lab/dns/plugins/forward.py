"""The `forward` plugin: the client's own query (EDNS and all) to IP upstreams, over the client's
transport, through dnspython. A dead upstream costs the forward timeout, then the next one is
tried, then SERVFAIL; a truncated (TC) UDP answer goes back to the client, which retries over TCP."""

from __future__ import annotations

import ipaddress
import random
import socket
from dataclasses import dataclass

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.rcode

from crossnet.providers.lab.dns.query import Next, Query, Transport, most_specific, response, servfail
from crossnet.providers.lab.dns.records import is_ip

FORWARD_TIMEOUT = 2.0
"""Seconds to wait for one upstream before trying the next (then SERVFAIL)."""

_ASYNCIO = dns.asyncbackend.get_backend("asyncio")  # imported now, so the zygote's children need not


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Upstream | None:
        """IP, IP:port or [IPv6]:port; None if `text` is none of those."""
        host, port = text, "53"
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else (rest or "53")
        elif text.count(":") == 1:
            host, port = text.split(":")
        if not is_ip(host) or not port.isdigit() or not 0 < int(port) < 65536:
            return None
        return cls(str(ipaddress.ip_address(host)), int(port))


class ForwardPlugin:
    def __init__(
        self,
        from_zone: dns.name.Name,
        upstreams: tuple[Upstream, ...],
        unread_files: tuple[str, ...],
        timeout: float,
        excepted: tuple[dns.name.Name, ...] = (),
        transport: Transport | None = None,
        policy: str = "random",
    ) -> None:
        self.from_zone, self.upstreams, self.unread_files = from_zone, upstreams, unread_files
        self.timeout, self.excepted, self.transport, self.policy = timeout, excepted, transport, policy
        self.turn = 0

    async def serve(self, query: Query, next_plugin: Next) -> dns.message.Message:
        if not query.qname.is_subdomain(self.from_zone) or most_specific(self.excepted, query.qname) is not None:
            return await next_plugin(query)
        if not self.upstreams:
            files = " ".join(self.unread_files)
            return servfail(
                query,
                f"forward: no upstream for {query.qname}: the lab never reads {files} (traffic stays inside the lab)",
            )
        transport = self.transport or query.transport
        query.varies.append("forward")
        for upstream in self._in_policy_order():
            reply = await self._ask(query, upstream, transport)
            if reply is not None:
                return reply
        return response(query, dns.rcode.SERVFAIL)

    def _in_policy_order(self) -> list[Upstream]:
        upstreams = list(self.upstreams)
        if self.policy == "random":
            random.shuffle(upstreams)
        elif self.policy == "round_robin":
            self.turn = (self.turn + 1) % len(upstreams)
            upstreams = upstreams[self.turn :] + upstreams[: self.turn]
        return upstreams

    async def _ask(self, query: Query, upstream: Upstream, transport: Transport) -> dns.message.Message | None:
        try:
            if transport == "tcp":
                return await self._tcp(query.request, upstream)
            reply = await self._udp(query.request, upstream)
            if reply.flags & dns.flags.TC and not query.from_client:  # a client retries over TCP itself
                reply = await self._tcp(query.request, upstream)
            return reply
        except dns.exception.Timeout:
            query.errors.append(f"forward: {upstream}/{transport}: no answer within {self.timeout:g}s")
        except (OSError, EOFError, dns.exception.DNSException) as err:
            query.errors.append(f"forward: {upstream}/{transport}: {err or type(err).__name__}")
        return None

    async def _udp(self, request: dns.message.Message, upstream: Upstream) -> dns.message.Message:
        # A connected socket, as CoreDNS uses: an upstream with nothing listening fails at once
        # (ICMP port unreachable) instead of after the timeout.
        family = dns.inet.af_for_address(upstream.host)
        destination = (upstream.host, upstream.port)
        sock = await _ASYNCIO.make_socket(family, socket.SOCK_DGRAM, 0, None, destination)  # type: ignore[no-untyped-call]
        async with sock:
            return await dns.asyncquery.udp(request, upstream.host, self.timeout, upstream.port, sock=sock)

    async def _tcp(self, request: dns.message.Message, upstream: Upstream) -> dns.message.Message:
        return await dns.asyncquery.tcp(request, upstream.host, self.timeout, upstream.port, backend=_ASYNCIO)
