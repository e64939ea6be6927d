"""Serving: UDP and TCP on one port, truncation to the client's UDP size, the `errors` log, and
reloading the Corefile and records file when they change."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype

from crossnet.providers.lab.dns.corefile import load_runtime
from crossnet.providers.lab.dns.plugins.forward import FORWARD_TIMEOUT
from crossnet.providers.lab.dns.query import EDNS_PAYLOAD, Chain, Query, Transport, log, response
from crossnet.providers.lab.dns.records import LabDnsConfigError

__all__ = ["RELOAD_CHECK_INTERVAL", "LabDnsServer"]

RELOAD_CHECK_INTERVAL = 0.1
"""At most this often (seconds, on a query) the Corefile and records file are checked."""

TCP_IDLE_TIMEOUT = 10.0
ANSWER_MEMO_SIZE = 20_000  # answers kept (bytes each); emptied when full and on every reload


class LabDnsServer:
    """One cluster's DNS server, in process. `port=None` serves the Corefile's port; `port=0`
    an ephemeral one (UDP and TCP on the same number). Raises LabDnsConfigError at once when
    the Corefile or records file cannot be served."""

    def __init__(
        self,
        corefile_path: str | Path,
        records_path: str | Path,
        listen: str = "127.0.0.1",
        port: int | None = None,
        forward_timeout: float = FORWARD_TIMEOUT,
    ) -> None:
        self.corefile_path, self.records_path = Path(corefile_path), Path(records_path)
        self.listen, self.requested_port, self.forward_timeout = listen, port, forward_timeout
        self._watcher = _FileWatcher((self.corefile_path, self.records_path))
        self._runtime = load_runtime(self.corefile_path, self.records_path, forward_timeout)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._answers: dict[tuple[Transport, bytes], bytes] = {}  # question bytes -> reply bytes after the ID
        self.port: int | None = None
        """The port bound by start() (UDP and TCP)."""

    @property
    def configured_port(self) -> int:
        """The port start() binds: --port / `port` if given, else the Corefile's."""
        return self._runtime.port if self.requested_port is None else self.requested_port

    async def start(self) -> int:
        """Bind UDP and TCP; returns the port (the same for both)."""
        wanted = self.configured_port
        attempts = 20 if wanted == 0 else 1
        loop = asyncio.get_running_loop()
        for attempt in range(attempts):
            udp, _ = await loop.create_datagram_endpoint(lambda: _UdpService(self), local_addr=(self.listen, wanted))
            port = int(udp.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.listen, port)
            except OSError:
                udp.close()
                if attempt == attempts - 1:
                    raise
                continue
            self._udp, self.port = udp, port
            return port
        raise AssertionError("unreachable")

    async def stop(self) -> None:
        """Stop listening, close client connections and finish in-flight queries."""
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()
        self._udp = self._tcp = None

    def spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def answer_wire(self, wire: bytes, transport: Transport) -> bytes | None:
        """Answer a query's bytes with the reply's bytes (truncated with TC to fit UDP). An answer
        made from the records alone (nothing forwarded, no cache hit, no error logged) is kept
        and sent again, with the new query's ID, for the same question bytes until the Corefile
        or the records change: CoreDNS answers from an in-memory index in microseconds, and the
        lab's DNS must not be what a large matrix waits for."""
        self._reload_if_changed()
        key = (transport, wire[2:])
        known = self._answers.get(key)
        if known is not None:
            return wire[:2] + known
        try:
            request = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError, IndexError):  # malformed: FORMERR if it has a header
            return _format_error(wire)
        if request.flags & dns.flags.QR:
            return None
        query = Query(request, transport, self._resolve)
        answer = _render(request, await self._answer_request(query), transport)
        if not query.varies and not query.errors:
            if len(self._answers) >= ANSWER_MEMO_SIZE:
                self._answers.clear()
            self._answers[key] = answer[2:]
        return answer

    async def _answer_request(self, query: Query) -> dns.message.Message:
        request = query.request
        if request.opcode() != dns.opcode.QUERY:
            return response(query, dns.rcode.NOTIMP)
        if len(request.question) != 1:
            return response(query, dns.rcode.FORMERR)
        try:
            return await self._resolve(query)
        except Exception:  # noqa: BLE001 -- a bug in a plugin must cost one SERVFAIL, not the server
            log(f"[ERROR] {query.qname} {dns.rdatatype.to_text(query.qtype)}: {traceback.format_exc()}")
            query.varies.append("plugin error")  # logged each time, as CoreDNS would
            return response(query, dns.rcode.SERVFAIL)

    async def _resolve(self, query: Query) -> dns.message.Message:
        block = self._runtime.block_for(query.qname)
        if block is None:
            return response(query, dns.rcode.REFUSED)
        reply = await Chain(block.plugins)(query)
        if block.log_errors:  # the `errors` plugin
            rcode = dns.rcode.to_text(reply.rcode())
            for error in query.errors:
                log(f"[ERROR] plugin/errors: {rcode} {query.qname} {dns.rdatatype.to_text(query.qtype)}: {error}")
        return reply

    def _reload_if_changed(self) -> None:
        if not self._watcher.changed():
            return
        try:
            runtime = load_runtime(self.corefile_path, self.records_path, self.forward_timeout)
        except LabDnsConfigError as err:
            log(f"[ERROR] plugin/reload: {err} (keeping the previous configuration)")
            return
        if self.requested_port is None and self.port is not None and runtime.port != self.port:
            log(
                f"[WARNING] plugin/reload: the Corefile now asks for port {runtime.port}; still serving "
                f"port {self.port} until the lab DNS is restarted"
            )
        self._runtime = runtime
        self._answers.clear()
        log("[INFO] plugin/reload: reloaded the Corefile and records")

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    length = int.from_bytes(await reader.readexactly(2), "big")
                    wire = await reader.readexactly(length)
                answer = await self.answer_wire(wire, "tcp")
                if answer is not None:
                    writer.write(len(answer).to_bytes(2, "big") + answer)
                    await writer.drain()
        except (EOFError, OSError, TimeoutError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


class _UdpService(asyncio.DatagramProtocol):
    def __init__(self, server: LabDnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.server.spawn(self.reply(data, addr))

    async def reply(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        answer = await self.server.answer_wire(data, "udp")
        if answer is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(answer, addr)


class _FileWatcher:
    """Says when any of some files changed (mtime, size or inode), looking at most every
    RELOAD_CHECK_INTERVAL seconds."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = paths
        self.stamps = self._stamps()
        self.checked = time.monotonic()

    def _stamps(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self.paths:
            try:
                status = path.stat()
            except OSError:
                stamps.append(None)
                continue
            stamps.append((status.st_mtime_ns, status.st_size, status.st_ino))
        return tuple(stamps)

    def changed(self) -> bool:
        now = time.monotonic()
        if now - self.checked < RELOAD_CHECK_INTERVAL:
            return False
        self.checked = now
        stamps = self._stamps()
        if stamps == self.stamps:
            return False
        self.stamps = stamps
        return True


def _render(request: dns.message.Message, reply: dns.message.Message, transport: Transport) -> bytes:
    if request.edns < 0 and reply.edns >= 0:
        reply.use_edns(False)
    elif request.edns >= 0 and reply.edns < 0:
        reply.use_edns(0, payload=EDNS_PAYLOAD)
    limit = 65535 if transport == "tcp" else (max(512, request.payload) if request.edns >= 0 else 512)
    return reply.to_wire(max_size=limit, prefer_truncation=True)


def _format_error(wire: bytes) -> bytes | None:
    if len(wire) < 12 or wire[2] & 0x80:
        return None
    # QR, the opcode and RD of the query (as miekg/dns's SetReply); no RA, as CoreDNS sends none.
    flags = bytes([0x80 | (wire[2] & 0x79), int(dns.rcode.FORMERR)])
    return wire[:2] + flags + bytes(8)
