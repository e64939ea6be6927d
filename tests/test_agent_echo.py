"""The agent's echo (crossnet/agent/echo.py): what every reachable TCP/UDP cell's verdict rests on.
Each test drives a real EchoServers on 127.0.0.1 with plain client sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from crossnet.agent import echo
from crossnet.agent.results import HELLO


def _free_port() -> int:
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = int(tcp.getsockname()[1])
        udp.bind(("127.0.0.1", port))  # free for both: the echo serves TCP and UDP on one port
        return port


@pytest.fixture
def echo_port() -> Iterator[int]:
    """An EchoServers named 'agent-x' in a loop of its own thread, for the test's blocking clients."""
    loop = asyncio.new_event_loop()
    port = _free_port()
    servers = echo.EchoServers("agent-x", "127.0.0.1", port)
    loop.run_until_complete(servers.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    loop.call_soon_threadsafe(servers.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def _ask(port: int, *parts: bytes, shut: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        for part in parts:
            conn.sendall(part)
        if shut:
            conn.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
        return reply


def test_a_hello_gets_one_line_naming_the_agent_the_source_and_the_payload_size(echo_port: int) -> None:
    reply = _ask(echo_port, HELLO + b"x" * 1400 + b"\n")
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1
    assert json.loads(reply) == {"agent": "agent-x", "seen": "127.0.0.1", "len": 1400}


def test_a_line_in_pieces_is_answered_once_it_is_complete(echo_port: int) -> None:
    reply = _ask(echo_port, HELLO, b"abc", b"\n")
    assert json.loads(reply)["len"] == 3


def test_only_the_first_line_is_answered_and_the_connection_closed(echo_port: int) -> None:
    reply = _ask(echo_port, HELLO + b"\n" + HELLO + b"zz\n")
    assert reply.count(b"\n") == 1 and json.loads(reply)["len"] == 0


def test_a_peer_that_ends_without_a_newline_is_answered_what_it_sent(echo_port: int) -> None:
    assert json.loads(_ask(echo_port, HELLO + b"ab", shut=True))["len"] == 2
    assert json.loads(_ask(echo_port, b"hello?", shut=True))["len"] == -1  # not a hello: -1


def test_an_http_get_gets_json_over_http(echo_port: int) -> None:
    reply = _ask(echo_port, b"GET / HTTP/1.0\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK") and json.loads(body) == {"agent": "agent-x", "seen": "127.0.0.1"}


def test_an_endless_line_and_an_idle_connection_get_no_answer(echo_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _ask(echo_port, b"y" * (echo.MAX_LINE * 2 + 10)) == b""
    monkeypatch.setattr(echo, "LINE_DEADLINE_S", 0.2)  # read when the next connection is registered
    with socket.create_connection(("127.0.0.1", echo_port), timeout=5) as conn:
        conn.sendall(HELLO)  # never finished
        assert conn.recv(100) == b""  # closed by the deadline, without a reply


def test_hundreds_of_connections_at_once_are_each_answered(echo_port: int) -> None:
    conns = [socket.create_connection(("127.0.0.1", echo_port), timeout=5) for _ in range(300)]
    try:
        for conn in conns:
            conn.sendall(HELLO + b"\n")
        replies = [conn.recv(1000) for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    assert all(json.loads(r)["agent"] == "agent-x" for r in replies)


def test_udp_is_echoed_with_the_source_and_size(echo_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(HELLO + b"x" * 100 + b"\n", ("127.0.0.1", echo_port))
        assert json.loads(sock.recv(1000)) == {"agent": "agent-x", "seen": "127.0.0.1", "len": 100}


def test_out_of_descriptors_pauses_accepting_instead_of_spinning() -> None:
    """accept() failing with EMFILE leaves the listener readable: the echo pauses accepting for
    ACCEPT_PAUSE_S (as asyncio's servers do) rather than calling accept() in a busy loop."""
    import errno
    import os

    class Exhausted:
        def __init__(self) -> None:
            self.read_end, self.write_end = os.pipe()
            os.write(self.write_end, b"x")  # always readable, like a listener with a queued connection
            self.calls = 0

        def fileno(self) -> int:
            return self.read_end

        def accept(self) -> tuple[socket.socket, tuple[str, int]]:
            self.calls += 1
            raise OSError(errno.EMFILE, "Too many open files")

        def close(self) -> None:
            os.close(self.read_end)
            os.close(self.write_end)
            self.read_end = -1

    async def scenario(listener: Exhausted) -> None:
        server = echo._TcpEcho("agent-x", listener, asyncio.get_running_loop())  # type: ignore[arg-type]
        await asyncio.sleep(0.3)
        server.close()

    listener = Exhausted()
    asyncio.run(scenario(listener))
    assert listener.calls == 1


def _time_waits(port: int) -> int:
    """TIME_WAIT TCP sockets of this namespace with `port` at either end (from /proc/net/tcp)."""
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state == "06" and f":{port:04X}" in (local[-5:], remote[-5:]):
                count += 1
    return count


def test_a_tcp_probe_ends_its_connection_with_a_reset_after_the_reply(echo_port: int) -> None:
    """A Service cell makes tens of connections and a large matrix ~100,000: once the reply is read
    the probe resets the connection, so neither end keeps a TIME_WAIT (nor conntrack its 120 s
    entry). With a normal close each probe would leave one TIME_WAIT behind on the echo's side."""
    from crossnet.agent.core import run_probe

    async def probes() -> list[dict[str, object]]:
        return [await run_probe({"protocol": "tcp", "dst": "127.0.0.1", "port": echo_port, "timeout": 2})
                for _ in range(20)]

    results = asyncio.run(probes())
    assert all(r["reached"] and r["responder"] == "agent-x" for r in results), results
    assert _time_waits(echo_port) == 0
    _ask(echo_port, HELLO + b"\n")  # the check sees a normal close: the echo's side keeps its TIME_WAIT
    assert _time_waits(echo_port) == 1
