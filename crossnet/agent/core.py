"""Probes and echo services of the agent (asyncio, stdlib; dnspython only for DNS probes)."""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import math
import re
import socket
import struct
import time
from typing import Any

from crossnet.agent.icmp import IP_HEADER, IP_RECVERR, icmp_origin, open_probe_socket, path_mtu, probe_icmp
from crossnet.agent.lookup import probe_dns
from crossnet.agent.results import HELLO, SMALL_PACKET
from crossnet.agent.results import ms_since as _ms
from crossnet.agent.results import os_error as _os_error
from crossnet.agent.results import packet_bytes as _packet_bytes
from crossnet.agent.results import result as _result

__all__ = ["AGENT_ID", "PROBE_PROTOCOLS", "run_probe", "run_probes"]

PROBE_PROTOCOLS = ("tcp", "udp", "icmp", "dns-udp", "dns-tcp")
NOT_ECHO = "not-crossnet-echo"  # the `peer` of a result whose reply came from something else
MAX_CONCURRENT = 256  # probes of one request in flight at once (sockets: stay far below RLIMIT_NOFILE)

AGENT_ID = re.compile(r"[A-Za-z0-9._-]{1,63}(/[A-Za-z0-9._-]{1,63}){0,7}")  # what an echo reply may name
MAX_REPLY = 4096  # crossnet's echo answers with one short JSON line; anything longer is someone else
# Once the reply is read, the probe's socket is closed with a reset: the connection has said all it
# had to, and a reset spares both ends the FIN exchange and the echo's side its TIME_WAIT (and
# conntrack its 120 s entry). A 4 x 8 matrix makes ~100,000 Service connections.
ABORT_ON_CLOSE = struct.pack("ii", 1, 0)


def _echo_reply(raw: bytes) -> dict[str, Any] | None:
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


def _not_echo(size: int, started: float, why: str = "") -> dict[str, Any]:
    """Something answered, but not crossnet's echo: say so without repeating a byte of it (it may be
    another service's banner). `wrong-answer` keeps the verdict what it was: that target is not reached."""
    return _result(
        False,
        "wrong-answer",
        latency_ms=_ms(started),
        peer=NOT_ECHO,
        reply_bytes=size,
        detail=f"{NOT_ECHO}: the peer answered {why or f'{size} bytes'} that are not crossnet's echo",
    )


def _check_reply(raw: bytes, probe: dict[str, Any], started: float) -> dict[str, Any]:
    reply = _echo_reply(raw)
    if reply is None:
        return _not_echo(len(raw), started)
    responder = reply["agent"]
    expected = probe.get("expect_agents") or []
    if expected and responder not in expected:
        return _result(
            False,
            "wrong-answer",
            latency_ms=_ms(started),
            responder=responder,
            source_ip=reply["seen"],
            detail=f"answered by {responder}, expected {' or '.join(expected)}",
        )
    if reply["len"] != int(probe.get("payload") or 0):
        return _result(
            False,
            "wrong-answer",
            latency_ms=_ms(started),
            responder=responder,
            detail=f"payload of {probe.get('payload')} bytes came back as {reply['len']}",
        )
    return _result(True, latency_ms=_ms(started), source_ip=reply["seen"], responder=responder)


def _payload(probe: dict[str, Any]) -> bytes:
    return HELLO + b"x" * int(probe.get("payload") or 0) + b"\n"


async def _probe_tcp(probe: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Connect, send the hello, read crossnet's one-line echo reply (plain non-blocking socket
    calls under one deadline: no stream objects or extra tasks per connection -- a Service cell
    makes several)."""
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_IP, IP_RECVERR, 1)  # to tell a REJECT on the way from a closed port
    sock.setblocking(False)
    connected = False
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (probe["dst"], int(probe["port"])))
            connected = True
            await loop.sock_sendall(sock, _payload(probe))
            line = b""
            while b"\n" not in line:
                chunk = await loop.sock_recv(sock, MAX_REPLY + 1 - len(line))
                if not chunk:
                    break
                line += chunk
                if len(line) > MAX_REPLY and b"\n" not in line:  # longer than MAX_REPLY: not crossnet's echo
                    return _not_echo(MAX_REPLY, started, f"more than {MAX_REPLY} bytes without a newline")
            if b"\n" in line:  # the first line is the reply (crossnet's echo sends one)
                line = line[: line.index(b"\n") + 1]
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, ABORT_ON_CLOSE)
        if not line:
            return _result(False, "refused", latency_ms=_ms(started), detail="connection closed without a reply")
        return _check_reply(line, probe, started)
    except TimeoutError:
        if not connected:
            return _result(False, "timeout", latency_ms=_ms(started), detail=f"no TCP answer within {timeout}s")
        return _result(False, "timeout", latency_ms=_ms(started), detail="connected, but no reply")
    except OSError as exc:
        return _os_error(exc, started) if connected else _os_error(exc, started, probe, icmp_origin(sock))
    finally:
        sock.close()


async def _probe_udp(probe: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One datagram and its echo on a connected socket (plain socket calls: no transport per
    probe). An ICMP error comes back as the receive's error; its sender stays in the error queue."""
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        sock = open_probe_socket(socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    except OSError as exc:
        return _os_error(exc, started, probe)
    try:
        try:
            sock.connect((probe["dst"], int(probe["port"])))
        except OSError as exc:
            return _os_error(exc, started, probe)
        sock.send(_payload(probe))
        async with asyncio.timeout(timeout):
            data = await loop.sock_recv(sock, 65535)
        return _check_reply(data, probe, started)
    except TimeoutError:
        return _result(False, "timeout", latency_ms=_ms(started), detail=f"no UDP answer within {timeout}s")
    except OSError as exc:
        return _os_error(exc, started, probe, icmp_origin(sock))
    finally:
        sock.close()


async def _probe_icmp(probe: dict[str, Any], timeout: float) -> dict[str, Any]:
    """ICMP echo through an unprivileged ping socket (the lab sets net.ipv4.ping_group_range)."""
    started = time.perf_counter()
    took, error = await probe_icmp(probe, timeout)
    if took is not None:
        return _result(True, latency_ms=_ms(started))
    if error is not None:
        return _os_error(error, started, probe)
    return _result(False, "timeout", latency_ms=_ms(started), detail=f"no echo reply within {timeout}s")


PROBERS = {"tcp": _probe_tcp, "udp": _probe_udp, "icmp": _probe_icmp, "dns-udp": probe_dns, "dns-tcp": probe_dns}


async def _resolve_then(probe: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Resolve `qname` like a pod would, then probe the first address over tcp/udp: how a
    client reaches a headless pod or an ExternalName Service by name."""
    started = time.perf_counter()
    resolved = await probe_dns({**probe, "protocol": "dns-udp", "qtype": "A"}, timeout)
    addresses = [a for a in resolved.get("answers", []) if not a.startswith("cname:")]
    if not resolved["reached"]:
        return {**resolved, "detail": f"resolving {probe['qname']}: {resolved.get('error')}"}
    if not addresses:  # resolved, but to nothing to connect to: not reached
        detail = f"resolving {probe['qname']}: no A record"
        return {**resolved, "reached": False, "error": "no-answer", "detail": detail}
    # The connect gets a timeout of its own, as a client's connect has: a slow answer from a busy
    # DNS server must not leave it milliseconds and turn into "connected, but no reply".
    result = await PROBERS[str(probe["protocol"])]({**probe, "dst": addresses[0]}, timeout)
    result["answers"] = resolved.get("answers", [])
    result["latency_ms"] = _ms(started)
    return result


class LoopLag:
    """How late this agent's event loop runs: a ticker sleeps TICK seconds and records how much
    later it woke. A probe that timed out while the loop was late by a good part of its timeout
    says more about a starved agent than about the network (`loop_lag_ms` in every result).
    The ticker runs while probes are in flight and IDLE_STOP after the last one: an idle agent
    does not wake 50 times a second (a lab of 64 agents spent half a core on it)."""

    TICK = 0.02
    IDLE_STOP = 2.0

    def __init__(self) -> None:
        self.samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=8192)
        self.task: asyncio.Task[None] | None = None
        self.in_flight = 0
        self.last_end = 0.0

    def begin(self) -> float:
        """A probe starts: the ticker runs (again); returns the loop time to measure from."""
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        now = loop.time()
        if self.task is None or self.task.done():
            # The first tick counts from now: a stall before the task first runs is lateness too.
            self.task = loop.create_task(self._tick(now))
        return now

    def end(self, since: float) -> float:
        """A probe that began at `since` ended: the worst lateness (seconds) during it."""
        self.in_flight -= 1
        self.last_end = asyncio.get_running_loop().time()
        return self.worst_since(since)

    async def _tick(self, first: float) -> None:
        loop = asyncio.get_running_loop()
        started = first
        while True:
            await asyncio.sleep(self.TICK)
            now = loop.time()
            self.samples.append((now, max(0.0, now - started - self.TICK)))
            if self.in_flight <= 0 and now - self.last_end >= self.IDLE_STOP:
                return
            started = now

    def worst_since(self, since: float) -> float:
        """The worst lateness (seconds) seen since `since` (loop time), counting a tick overdue now."""
        now = asyncio.get_running_loop().time()
        last = self.samples[-1][0] if self.samples else since
        overdue = max(0.0, now - max(last, since) - self.TICK)
        worst = overdue
        for at, late in reversed(self.samples):  # newest first: only this probe's ticks are read
            if at < since:
                break
            worst = max(worst, late)
        return worst


LOOP_LAG = LoopLag()


async def run_probe(probe: dict[str, Any]) -> dict[str, Any]:
    """Run one probe; every failure comes back as data, never as an exception."""
    started = LOOP_LAG.begin()
    lag = 0.0
    try:
        result = await _run_probe(probe)
    finally:
        lag = LOOP_LAG.end(started)
    result["loop_lag_ms"] = round(lag * 1000, 1)
    return result


async def _run_probe(probe: dict[str, Any]) -> dict[str, Any]:
    timeout = float(probe.get("timeout") or 2.0)
    prober = PROBERS.get(str(probe.get("protocol")))
    if prober is None:
        return _result(False, "agent-error", detail=f"unknown protocol {probe.get('protocol')!r}")
    if probe.get("qname") and probe["protocol"] in ("tcp", "udp"):
        prober = _resolve_then
    try:
        endpoints = list(probe.get("expect_agents") or [])
        if probe.get("cover") and len(endpoints) > 1 and prober in (_probe_tcp, _probe_udp):
            result = await _cover(prober, probe, timeout, endpoints)
        else:
            result = await prober(probe, timeout)
        if probe.get("dst") and (probe.get("measure_mtu") or _large_and_failed(probe, result)):
            result.update(await _with_path_mtu(probe, result, timeout))
    except Exception as exc:  # noqa: BLE001 - a probe reports, it never raises
        result = _result(False, "agent-error", detail=f"{exc.__class__.__name__}: {exc}")
    result["id"] = probe.get("id")
    return result


def _large_and_failed(probe: dict[str, Any], result: dict[str, Any]) -> bool:
    return not result.get("reached") and int(probe.get("payload") or 0) >= SMALL_PACKET


async def _with_path_mtu(probe: dict[str, Any], result: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The path MTU to the probe's destination, measured now by a DF ladder; a failed large
    probe's detail says when the path cannot carry its packet."""
    measured = await path_mtu(str(probe["dst"]), timeout)
    mtu = measured.get("path_mtu")
    if result.get("reached") or probe.get("protocol") not in ("udp", "icmp", "tcp"):
        return {"path_mtu": mtu}
    needed = _packet_bytes(probe) if probe.get("protocol") != "tcp" else IP_HEADER + 20 + int(probe.get("payload") or 0)
    if mtu is None:
        note = f"; path MTU not measured: {measured.get('detail')}"
    elif mtu < needed:  # one cause, one class: a silent drop of the big packet is the MTU too
        note = f"; the path MTU to {probe['dst']} is {mtu} bytes (DF ladder), the probe needs {needed}"
        return {"path_mtu": mtu, "error": "mtu", "detail": f"{result.get('detail') or result.get('error')}{note}"}
    else:
        note = f"; the path MTU to {probe['dst']} is {mtu} bytes (DF ladder): not an MTU problem"
    return {"path_mtu": mtu, "detail": f"{result.get('detail') or result.get('error')}{note}"}


# A healthy Service of N endpoints leaves one of them unseen in k random connections with
# probability <= N (1 - 1/N)^k: k is chosen so that this false alarm stays below COVER_FALSE_ALARM
# per cell (0 expected in 10^5 cells). It costs nothing on a healthy Service (the loop ends once
# every endpoint answered: N ln N connections on average) and little on a broken one: a dead
# endpoint fails the connections sent to it, and two failures with one endpoint unseen end the cell.
COVER_FALSE_ALARM = 1e-6
COVER_FAILURES = 6  # failed connections that end a Service cell (the first waits the timeout, the rest a quarter)
COVER_BUDGET = 3  # a Service cell may take this many probe timeouts; beyond it the agent, not the path, is slow


def cover_waves(endpoints: int, protocol: str = "tcp") -> int:
    """How many probe timeouts `_cover` may take at most: its budget without failures, or one
    timeout plus 2 * COVER_FAILURES - 1 quarter-timeouts with them (under 4 timeouts)."""
    return max(COVER_BUDGET, 4)


def cover_bound(endpoints: int, protocol: str = "tcp") -> int:
    """Connections after which a never-answering endpoint of `endpoints` equally likely ones
    (kube-proxy's random choice) is called missing: a healthy Service misses one this long with
    probability <= COVER_FALSE_ALARM. UDP gets twice as many: a UDP conntrack entry outlives its
    socket, so a reused source port may repeat a choice (measured: a live endpoint unseen in 18
    UDP connections in about 1 of 100 cells)."""
    if endpoints < 2:
        return 1
    bound = max(endpoints, math.ceil(math.log(COVER_FALSE_ALARM / endpoints) / math.log(1 - 1 / endpoints)))
    return 2 * bound if protocol == "udp" else bound


async def _cover(prober: Any, probe: dict[str, Any], timeout: float, endpoints: list[str]) -> dict[str, Any]:
    """A Service cell: connect again and again, one connection at a time (parallel connections
    through NAT can collide in conntrack and fail on their own), until every endpoint has answered
    or cover_bound() connections were made. Reached only when every endpoint answered; a
    never-answering endpoint is named (a dead endpoint of three is caught with >= 99.9 %). Failed
    connections end it early: two, when every endpoint but one has answered (that one is dead);
    COVER_FAILURES in all otherwise, twice that once some endpoint answered (the re-probe of a
    failed cell asks again)."""
    started = time.perf_counter()
    bound, made = cover_bound(len(endpoints), str(probe.get("protocol"))), 0
    seen: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    deadline = started + COVER_BUDGET * timeout
    # With some endpoints seen, a dead one among several unseen must not hide a live one: allow
    # twice the failures (a live unseen endpoint of three escapes 12 failures with p ~ 2^-12).
    while made < bound and len(failures) < (2 * COVER_FAILURES if seen else COVER_FAILURES):
        if time.perf_counter() > deadline and not failures:  # slow answers, none lost: the harness is slow
            return _result(
                False,
                "slow",
                latency_ms=_ms(started),
                detail=f"{len(seen)} of {len(endpoints)} endpoints answered in {made} connections before the "
                f"{COVER_BUDGET * timeout:.0f} s budget ran out, none failed: the machine is too slow",
            )
        unseen = set(endpoints) - set(seen)
        if not unseen or (len(unseen) == 1 and len(failures) >= 2):  # all seen, or the one silent is dead
            break
        # After a first failure a live endpoint still answers in milliseconds: later attempts need
        # not wait the full timeout to tell a dead one.
        one = await prober(probe, min(timeout, max(0.5, timeout / 4)) if failures else timeout)
        made += 1
        if one.get("reached") and one.get("responder") in endpoints:
            seen.setdefault(str(one["responder"]), one)
        elif not one.get("reached"):
            failures.append(one)
        elif not seen:  # reached, but answered by something that is not an endpoint: say so at once
            return {**one, "latency_ms": _ms(started)}
    missing = [e for e in endpoints if e not in seen]
    if not missing:
        first = seen[endpoints[0]]
        note = f"every endpoint answered ({len(endpoints)}) in {made} connections"
        note += f"; {len(failures)} failed on the way ({failures[0].get('error')})" if failures else ""
        return {**first, "latency_ms": _ms(started), "detail": note}
    # Some endpoints answered, others never did: a dead endpoint behind a working Service.
    error = "endpoint-missing" if seen else (failures[0].get("error") or "timeout") if failures else "wrong-answer"
    names = ", ".join(missing)
    return _result(
        False,
        error,
        latency_ms=_ms(started),
        source_ip=next(iter(seen.values())).get("source_ip") if seen else None,
        detail=f"endpoint {names} never answered in {made} connections"
        + (f" ({len(failures)} failed: {failures[0].get('detail') or failures[0].get('error')})" if failures else ""),
    )


async def run_probes(probes: list[dict[str, Any]], concurrency: int = MAX_CONCURRENT) -> list[dict[str, Any]]:
    """Run a batch, at most `concurrency` probes at once; the results in the order of `probes`."""
    gate = asyncio.Semaphore(concurrency)

    async def gated(probe: dict[str, Any]) -> dict[str, Any]:
        async with gate:
            return await run_probe(probe)

    return list(await asyncio.gather(*(gated(p) for p in probes)))
