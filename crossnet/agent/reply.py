"""What crossnet's echo answers and how a probe reads it: shared by the agent's asyncio probes and
the blocking ones a Service cell's connections run in a worker thread (stdlib only)."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import struct
from typing import Any

from crossnet.agent.icmp import icmp_origin
from crossnet.agent.results import HELLO, ms_since, os_error, result

__all__ = [
    "ABORT_ON_CLOSE",
    "AGENT_ID",
    "MAX_REPLY",
    "NOT_ECHO",
    "check_reply",
    "echo_reply",
    "not_echo",
    "overlong",
    "payload",
    "tcp_failure",
    "tcp_outcome",
    "tcp_timeout",
    "udp_timeout",
]

NOT_ECHO = "not-crossnet-echo"  # the `peer` of a result whose reply came from something else

AGENT_ID = re.compile(r"[A-Za-z0-9._-]{1,63}(/[A-Za-z0-9._-]{1,63}){0,7}")  # what an echo reply may name
MAX_REPLY = 4096  # crossnet's echo answers with one short JSON line; anything longer is someone else
# Once the reply is read, the probe's socket is closed with a reset: the connection has said all it
# had to, and a reset spares both ends the FIN exchange and the echo's side its TIME_WAIT (and
# conntrack its 120 s entry). A 4 x 8 matrix makes ~100,000 Service connections.
ABORT_ON_CLOSE = struct.pack("ii", 1, 0)


def echo_reply(raw: bytes) -> dict[str, Any] | None:
    """The reply of crossnet's own echo (`{"agent": ID, "seen": IP, "len": N}` and a newline,
    nothing else), or None."""
    if len(raw) > MAX_REPLY or not raw.endswith(b"\n"):
        return None
    try:
        reply = json.loads(raw.decode().strip())
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(reply, dict) or set(reply) != {"agent", "seen", "len"}:
        return None
    agent, seen, size = reply.get("agent"), reply.get("seen"), reply.get("len")
    if not isinstance(agent, str) or not AGENT_ID.fullmatch(agent):
        return None
    if not isinstance(size, int) or isinstance(size, bool) or not isinstance(seen, str):
        return None
    try:
        seen = str(ipaddress.ip_address(seen))
    except ValueError:
        return None
    return {"agent": agent, "seen": seen, "len": size}


def not_echo(size: int, started: float, why: str = "") -> dict[str, Any]:
    """Something answered, but not crossnet's echo: say so without repeating a byte of it (it may be
    another service's banner). `wrong-answer` keeps the verdict what it was: that target is not reached."""
    return result(
        False,
        "wrong-answer",
        latency_ms=ms_since(started),
        peer=NOT_ECHO,
        reply_bytes=size,
        detail=f"{NOT_ECHO}: the peer answered {why or f'{size} bytes'} that are not crossnet's echo",
    )


def check_reply(raw: bytes, probe: dict[str, Any], started: float) -> dict[str, Any]:
    reply = echo_reply(raw)
    if reply is None:
        return not_echo(len(raw), started)
    responder = reply["agent"]
    expected = probe.get("expect_agents") or []
    if expected and responder not in expected:
        return result(
            False,
            "wrong-answer",
            latency_ms=ms_since(started),
            responder=responder,
            source_ip=reply["seen"],
            detail=f"answered by {responder}, expected {' or '.join(expected)}",
        )
    if reply["len"] != int(probe.get("payload") or 0):
        return result(
            False,
            "wrong-answer",
            latency_ms=ms_since(started),
            responder=responder,
            detail=f"payload of {probe.get('payload')} bytes came back as {reply['len']}",
        )
    return result(True, latency_ms=ms_since(started), source_ip=reply["seen"], responder=responder)


def payload(probe: dict[str, Any]) -> bytes:
    return HELLO + b"x" * int(probe.get("payload") or 0) + b"\n"


def overlong(line: bytes, started: float) -> dict[str, Any] | None:
    """A reply read so far that is longer than MAX_REPLY without a newline is not crossnet's echo."""
    if len(line) > MAX_REPLY and b"\n" not in line:
        return not_echo(MAX_REPLY, started, f"more than {MAX_REPLY} bytes without a newline")
    return None


def tcp_outcome(sock: socket.socket, line: bytes, probe: dict[str, Any], started: float) -> dict[str, Any]:
    """What a TCP probe's read came to. A whole first line is the reply (crossnet's echo sends one);
    the socket then closes with a reset. Nothing read: the peer closed without answering."""
    if b"\n" in line:
        line = line[: line.index(b"\n") + 1]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, ABORT_ON_CLOSE)
    if not line:
        return result(False, "refused", latency_ms=ms_since(started), detail="connection closed without a reply")
    return check_reply(line, probe, started)


def tcp_failure(
    exc: OSError, connected: bool, sock: socket.socket, probe: dict[str, Any], started: float
) -> dict[str, Any]:
    """A TCP probe's socket error. Before the connection was up it may come from an ICMP error on
    the way (a REJECT, an unreachable): its sender is in the error queue. After, it is the peer's."""
    return os_error(exc, started) if connected else os_error(exc, started, probe, icmp_origin(sock))


def tcp_timeout(connected: bool, started: float, timeout: float) -> dict[str, Any]:
    """A TCP probe's deadline passed: before the connection was up, or while waiting for the reply."""
    if not connected:
        return result(False, "timeout", latency_ms=ms_since(started), detail=f"no TCP answer within {timeout}s")
    return result(False, "timeout", latency_ms=ms_since(started), detail="connected, but no reply")


def udp_timeout(started: float, timeout: float) -> dict[str, Any]:
    return result(False, "timeout", latency_ms=ms_since(started), detail=f"no UDP answer within {timeout}s")
