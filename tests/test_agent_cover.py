"""A Service cell's connections (crossnet/agent/cover.py) run in a worker thread with blocking
sockets, beside the event loop's own probes (crossnet/agent/core.py). Both must read every answer
the same way: each case below is asked of both, against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from crossnet.agent import core, cover
from tests.test_agent_echo import _free_port, echo_port  # noqa: F401 - echo_port is a fixture

Serve = Callable[[socket.socket], None]


def _server(serve: Serve) -> Iterator[int]:
    """A TCP listener on 127.0.0.1 whose every connection is handed to `serve` in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield port
    stop.set()
    listener.close()


def _banner(conn: socket.socket) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    conn.close()


def _endless(conn: socket.socket) -> None:
    conn.recv(100)
    conn.sendall(b"x" * 5000)
    conn.close()


def _silent(conn: socket.socket) -> None:
    conn.recv(100)
    threading.Event().wait(2)
    conn.close()


def _hang_up(conn: socket.socket) -> None:
    conn.recv(100)
    conn.close()


SERVERS: dict[str, Serve] = {"banner": _banner, "endless": _endless, "silent": _silent, "hang-up": _hang_up}


def _both(probe: dict[str, Any], timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    looping = core._probe_tcp if probe["protocol"] == "tcp" else core._probe_udp
    looped = asyncio.run(looping(probe, timeout))
    threaded = cover.EXCHANGES[probe["protocol"]](probe, timeout)
    return looped, threaded


def _same(looped: dict[str, Any], threaded: dict[str, Any]) -> dict[str, Any]:
    keys = ("reached", "error", "detail", "responder", "source_ip", "peer")
    assert {k: looped.get(k) for k in keys} == {k: threaded.get(k) for k in keys}, (looped, threaded)
    return threaded


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_an_echo_reply_reads_the_same_both_ways(echo_port: int, protocol: str) -> None:  # noqa: F811
    probe = {"protocol": protocol, "dst": "127.0.0.1", "port": echo_port, "payload": 300}
    result = _same(*_both(probe, 2.0))
    assert result["reached"] and result["responder"] == "agent-x" and result["source_ip"] == "127.0.0.1"
    wrong = _same(*_both({**probe, "expect_agents": ["agent-y"]}, 2.0))
    assert wrong["error"] == "wrong-answer" and "expected agent-y" in wrong["detail"]


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_a_closed_port_is_refused_both_ways(protocol: str) -> None:
    probe = {"protocol": protocol, "dst": "127.0.0.1", "port": _free_port()}
    assert _same(*_both(probe, 2.0))["error"] == "refused"


def test_a_silent_udp_port_times_out_both_ways() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))
        probe = {"protocol": "udp", "dst": "127.0.0.1", "port": quiet.getsockname()[1]}
        result = _same(*_both(probe, 0.3))
    assert result["error"] == "timeout" and "no UDP answer" in result["detail"]


@pytest.mark.parametrize(
    ("server", "error", "words"),
    [
        ("banner", "wrong-answer", "not crossnet's echo"),
        ("endless", "wrong-answer", "more than 4096 bytes without a newline"),
        ("silent", "timeout", "connected, but no reply"),
        ("hang-up", "refused", "connection closed without a reply"),
    ],
)
def test_other_servers_read_the_same_both_ways(server: str, error: str, words: str) -> None:
    for port in _server(SERVERS[server]):
        result = _same(*_both({"protocol": "tcp", "dst": "127.0.0.1", "port": port}, 0.5))
        assert result["error"] == error and words in result["detail"], result


def _endpoints(names: list[str]) -> Serve:
    """A stand-in for a Service: each connection answered by the next of `names` in turn."""
    turn = itertools.cycle(names)
    lock = threading.Lock()

    def serve(conn: socket.socket) -> None:
        line = conn.recv(4096)
        with lock:
            name = next(turn)
        size = len(line.rstrip(b"\n")) - len(b"CROSSNET ")
        conn.sendall(json.dumps({"agent": name, "seen": "127.0.0.1", "len": size}).encode() + b"\n")
        conn.close()

    return serve


def _service_cell(port: int, endpoints: list[str]) -> dict[str, Any]:
    probe = {"protocol": "tcp", "dst": "127.0.0.1", "port": port, "timeout": 1, "cover": True}
    return asyncio.run(core.run_probe({**probe, "expect_agents": endpoints}))


def test_a_service_cell_connects_from_a_worker_thread_until_every_endpoint_answered() -> None:
    for port in _server(_endpoints(["agent-a", "agent-b", "agent-c"])):
        result = _service_cell(port, ["agent-a", "agent-b", "agent-c"])
        assert result["reached"] and result["detail"] == "every endpoint answered (3) in 3 connections", result
        missing = _service_cell(port, ["agent-a", "agent-b", "agent-c", "agent-d"])
    assert not missing["reached"] and missing["error"] == "endpoint-missing", missing
    bound = cover.cover_bound(4)
    assert missing["detail"] == f"endpoint agent-d never answered in {bound} connections", missing
    assert cover._POOL is not None and cover._POOL._max_workers == cover.COVER_THREADS
