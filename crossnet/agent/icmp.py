"""ICMP echo for the agent: the `icmp` probe and the path-MTU ladder (stdlib only).

Every socket here sends with Don't Fragment at the interface's MTU and ignores the path MTU the
kernel learned from earlier packets (IP_PMTUDISC_PROBE): a black hole found by one probe cannot be
"healed" for the next by a cached smaller MTU, and the ladder measures the path as it is now.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import time
from typing import Any

__all__ = [
    "ICMP_HEADER",
    "IP_HEADER",
    "LADDER_SECONDS",
    "icmp_origin",
    "open_probe_socket",
    "path_mtu",
    "probe_icmp",
]

IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_PROBE = getattr(socket, "IP_PMTUDISC_PROBE", 3)
IP_MTU = getattr(socket, "IP_MTU", 14)
IP_HEADER, ICMP_HEADER = 20, 8
MARK = b"crossnet"
MTU_FLOOR = 576  # every IPv4 path carries this (RFC 791); below it the ladder stops
LADDER_STEP_TIMEOUT = 0.5  # seconds one rung waits for its echo reply (a live path answers in ms)
# The longest a ladder takes: the ceiling and the floor asked 2 and 3 times, then a bisection of
# [576, 1500) (10 rungs) asked twice each, every ask waiting out its step.
LADDER_SECONDS = (2 + 3 + 2 * 10) * LADDER_STEP_TIMEOUT


def open_probe_socket(kind: int, proto: int) -> socket.socket:
    """A non-blocking socket that reports every ICMP error (IP_RECVERR: without it Linux keeps
    "network unreachable" from a connected UDP socket, and an unrouted target waits for the
    timeout) and sends with DF at the interface MTU, ignoring any learned path MTU."""
    sock = socket.socket(socket.AF_INET, kind, proto)
    try:
        sock.setsockopt(socket.SOL_IP, IP_RECVERR, 1)
        sock.setsockopt(socket.SOL_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


UNREACHABLE_CODES = {
    0: "net unreachable",
    1: "host unreachable",
    3: "port unreachable",
    4: "fragmentation needed",
    9: "net prohibited",
    10: "host prohibited",
    13: "administratively prohibited",
}
SO_EE_ORIGIN_ICMP = 2


def icmp_origin(sock: socket.socket) -> tuple[str, str] | None:
    """Who sent the ICMP error behind a failed connect/send on an IP_RECVERR socket, and what it
    said: (offender address, "port unreachable" ...), or None when no ICMP came (a TCP reset)."""
    try:
        _, ancillary, _, _ = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
    except OSError:
        return None
    for level, kind, data in ancillary:
        if level != socket.SOL_IP or kind != IP_RECVERR or len(data) < 24:
            continue
        _, origin, icmp_type, code = struct.unpack("=IBBB", data[:7])
        if origin != SO_EE_ORIGIN_ICMP or icmp_type != 3:
            continue
        offender = socket.inet_ntoa(data[16 + 4 : 16 + 8])  # the sockaddr_in after the 16-byte header
        return offender, UNREACHABLE_CODES.get(code, f"unreachable code {code}")
    return None


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def _echo_socket() -> socket.socket:
    try:  # an unprivileged ping socket (the lab and kind nodes allow it via ping_group_range)
        return open_probe_socket(socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    except OSError:
        return open_probe_socket(socket.SOCK_RAW, socket.IPPROTO_ICMP)


async def _echo(sock: socket.socket, body_bytes: int, timeout: float) -> float:
    """Send one echo request with `body_bytes` of data on a connected socket and wait for its
    reply: the seconds it took. Raises TimeoutError, or OSError (e.g. EMSGSIZE) from the path."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    ident = os.getpid() & 0xFFFF
    seq = int(time.monotonic_ns() & 0x7FFF)
    body = MARK + b"x" * max(0, body_bytes - len(MARK))
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    await loop.sock_sendall(sock, struct.pack("!BBHHH", 8, 0, _checksum(header + body), ident, seq) + body)
    deadline = started + timeout
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError
        data = await asyncio.wait_for(loop.sock_recv(sock, 65535), remaining)
        if sock.type == socket.SOCK_RAW:
            data = data[(data[0] & 0x0F) * 4 :]
        if len(data) >= ICMP_HEADER and data[0] == 0 and struct.unpack("!H", data[6:8])[0] == seq:
            return time.perf_counter() - started


async def probe_icmp(probe: dict[str, Any], timeout: float) -> tuple[float | None, OSError | None]:
    """One echo to probe["dst"] with `payload` bytes after the mark: (seconds, None) when answered,
    (None, None) on timeout, (None, error) when the kernel reported one."""
    sock = _echo_socket()
    try:
        sock.connect((probe["dst"], 0))
        return await _echo(sock, len(MARK) + int(probe.get("payload") or 0), timeout), None
    except TimeoutError:
        return None, None
    except OSError as exc:
        return None, exc
    finally:
        sock.close()


async def _rung(dst: str, packet: int, timeout: float, tries: int = 2) -> bool:
    """Does an echo of `packet` bytes (IP total length, DF set) get through to dst and back?
    A lost reply is asked again (one loss is not an MTU); "message too long" is final."""
    for _ in range(tries):
        sock = _echo_socket()
        try:
            sock.connect((dst, 0))
            await _echo(sock, packet - IP_HEADER - ICMP_HEADER, timeout)
            return True
        except TimeoutError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EMSGSIZE, errno.ENOBUFS):
                return False
            raise
        finally:
            sock.close()
    return False


def _interface_mtu(dst: str) -> int:
    """The MTU the route to dst leaves by (a connected UDP socket's IP_MTU), at least 1500."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        sock.connect((dst, 9))
        return max(1500, int(sock.getsockopt(socket.SOL_IP, IP_MTU)))


async def path_mtu(dst: str, timeout: float) -> dict[str, Any]:
    """The largest IP packet (bytes, DF set) that reaches dst and comes back, by a ladder of ICMP
    echoes: the interface MTU first (one echo on a healthy path), then a bisection down to
    MTU_FLOOR. {"path_mtu": N} or {"path_mtu": None, "detail": why}."""
    step = min(LADDER_STEP_TIMEOUT, timeout)
    try:
        ceiling = _interface_mtu(dst)
        if await _rung(dst, ceiling, step):
            return {"path_mtu": ceiling}
        if not await _rung(dst, MTU_FLOOR, step, tries=3):
            return {"path_mtu": None, "detail": f"no echo reply from {dst} even at {MTU_FLOOR} bytes"}
        low, high = MTU_FLOOR, ceiling - 1  # low gets through, ceiling does not
        while low < high:
            middle = (low + high + 1) // 2
            if await _rung(dst, middle, step):
                low = middle
            else:
                high = middle - 1
        return {"path_mtu": low}
    except OSError as exc:
        return {"path_mtu": None, "detail": f"{exc.strerror or exc}"}
