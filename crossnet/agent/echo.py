"""The agent's echo: TCP and UDP on one port, the reply names the agent and the source address
it saw (what the SNAT cells judge) and the payload size of the hello (what the MTU cells judge).

The TCP echo answers from plain non-blocking socket calls on the event loop: the listening socket
is read with `add_reader`, every pending connection is accepted at once and answered as soon as
its line is there -- usually at accept time, without registering the connection at all. A Service
cell makes tens of connections and a large matrix hundreds of thousands: asyncio's per-connection
transport and protocol objects were most of an agent's CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import socket
from typing import Any, cast

from crossnet.agent.results import HELLO

__all__ = ["EchoServers", "echo_line"]

MAX_LINE = 65536  # a TCP line longer than twice this is dropped without an answer
LINE_DEADLINE_S = 5.0  # a connection whose line is not complete by then is closed without an answer
ACCEPTS_PER_WAKEUP = 256
ACCEPT_PAUSE_S = 1.0  # out of descriptors or memory: accepting resumes after this
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def echo_line(agent_id: str, seen: str, data: bytes) -> bytes:
    """crossnet's echo reply to `data` (a hello line: its payload size; anything else: -1)."""
    line = data[:-1] if data.endswith(b"\n") else data  # a peer may end without the newline
    size = len(line) - len(HELLO) if line.startswith(HELLO) else -1
    return json.dumps({"agent": agent_id, "seen": seen, "len": size}).encode() + b"\n"


def _http_reply(agent_id: str, seen: str) -> bytes:
    """A plain HTTP client (curl, a browser, a load balancer's check) gets the same facts as JSON."""
    body = json.dumps({"agent": agent_id, "seen": seen}).encode()
    header = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
    return header + b"\r\n\r\n" + body


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.transport is not None:
            self.transport.sendto(echo_line(self.agent_id, addr[0], data), addr)


class _Pending:
    """A connection whose line had not fully arrived at accept time: read when readable."""

    __slots__ = ("buffer", "conn", "peer", "timer")

    def __init__(self, conn: socket.socket, peer: str) -> None:
        self.conn, self.peer, self.buffer = conn, peer, b""
        self.timer: asyncio.TimerHandle | None = None


class _TcpEcho:
    """Read one line, answer, close. A line not finished within LINE_DEADLINE_S, or longer than
    2 × MAX_LINE, is dropped without an answer; a peer that ends without a newline gets the answer
    to what it sent (as readline() would)."""

    def __init__(self, agent_id: str, listener: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.agent_id, self.listener, self.loop = agent_id, listener, loop
        self.pending: dict[int, _Pending] = {}
        self.paused = False
        loop.add_reader(listener.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # that connection is gone; the next may be there
                continue
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:  # out of descriptors or memory: the listener stays
                    self._pause()  # readable, so pause accepting (as asyncio's servers do) instead of spinning
                return
            conn.setblocking(False)
            self._read(_Pending(conn, str(addr[0])), registered=False)

    def _pause(self) -> None:
        fd = self.listener.fileno()
        if fd >= 0 and not self.paused:
            self.paused = True
            self.loop.remove_reader(fd)
            self.loop.call_later(ACCEPT_PAUSE_S, self._resume)

    def _resume(self) -> None:
        self.paused = False
        if self.listener.fileno() >= 0:
            self.loop.add_reader(self.listener.fileno(), self._accept)

    def _read(self, waiting: _Pending, registered: bool) -> None:
        try:
            chunk = waiting.conn.recv(MAX_LINE)
        except (BlockingIOError, InterruptedError):
            if not registered:
                self._register(waiting)
            return
        except OSError:
            self._close(waiting)
            return
        if not chunk:  # the peer finished: answer what came, if anything
            if waiting.buffer:
                self._answer(waiting, waiting.buffer)
            self._close(waiting)
            return
        waiting.buffer += chunk
        if b"\n" in waiting.buffer:
            self._answer(waiting, waiting.buffer[: waiting.buffer.index(b"\n") + 1])
            self._close(waiting)
        elif len(waiting.buffer) > MAX_LINE * 2:
            self._close(waiting)
        elif not registered:
            self._register(waiting)

    def _register(self, waiting: _Pending) -> None:
        fd = waiting.conn.fileno()
        self.pending[fd] = waiting
        self.loop.add_reader(fd, self._read, waiting, True)
        waiting.timer = self.loop.call_later(LINE_DEADLINE_S, self._close, waiting)

    def _answer(self, waiting: _Pending, line: bytes) -> None:
        reply = _http_reply(self.agent_id, waiting.peer) if line.startswith(b"GET ") else None
        reply = reply or echo_line(self.agent_id, waiting.peer, line)
        with contextlib.suppress(OSError):  # the peer is gone: nothing to answer
            waiting.conn.send(reply)  # a few hundred bytes into an empty send buffer: sent whole

    def _close(self, waiting: _Pending) -> None:
        fd = waiting.conn.fileno()
        if fd >= 0 and self.pending.pop(fd, None) is not None:
            self.loop.remove_reader(fd)
        if waiting.timer is not None:
            waiting.timer.cancel()
        waiting.conn.close()  # the kernel still sends what was queued before the FIN

    def close(self) -> None:
        if not self.paused:
            self.loop.remove_reader(self.listener.fileno())
        self.paused = True  # a pending resume finds the listener closed
        for waiting in list(self.pending.values()):
            self._close(waiting)
        self.listener.close()


class EchoServers:
    """TCP and UDP echo on one port: the reply names the agent and the source address it saw."""

    def __init__(self, agent_id: str, host: str, port: int) -> None:
        self.agent_id, self.host, self.port = agent_id, host, port
        self._tcp: _TcpEcho | None = None
        self._udp: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(1024)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._tcp = _TcpEcho(self.agent_id, listener, loop)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpEcho(self.agent_id), local_addr=(self.host, self.port)
        )
        self._udp = transport

    def close(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
        if self._udp is not None:
            self._udp.close()
