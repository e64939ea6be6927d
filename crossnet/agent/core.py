"""Probes and echo services of the agent (asyncio, stdlib; dnspython only for DNS probes)."""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from typing import Any

from crossnet.agent.cover import run_cover
from crossnet.agent.icmp import IP_HEADER, IP_RECVERR, icmp_origin, open_probe_socket, path_mtu, probe_icmp
from crossnet.agent.lookup import probe_dns
from crossnet.agent.reply import (
    AGENT_ID,
    MAX_REPLY,
    check_reply,
    overlong,
    payload,
    tcp_failure,
    tcp_outcome,
    tcp_timeout,
    udp_timeout,
)
from crossnet.agent.results import SMALL_PACKET
from crossnet.agent.results import ms_since as _ms
from crossnet.agent.results import os_error as _os_error
from crossnet.agent.results import packet_bytes as _packet_bytes
from crossnet.agent.results import result as _result

__all__ = ["AGENT_ID", "PROBE_PROTOCOLS", "run_probe", "run_probes"]

PROBE_PROTOCOLS = ("tcp", "udp", "icmp", "dns-udp", "dns-tcp")
MAX_CONCURRENT = 256  # probes of one request in flight at once (sockets: stay far below RLIMIT_NOFILE)


async def _probe_tcp(probe: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Connect, send the hello, read crossnet's one-line echo reply (plain non-blocking socket
    calls under one deadline: no stream objects or extra tasks per connection). A Service cell's
    many connections take crossnet.agent.cover's blocking twin of this in a worker thread."""
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
            await loop.sock_sendall(sock, payload(probe))
            line = b""
            while b"\n" not in line:
                chunk = await loop.sock_recv(sock, MAX_REPLY + 1 - len(line))
                if not chunk:
                    break
                line += chunk
                if (too_long := overlong(line, started)) is not None:
                    return too_long
        return tcp_outcome(sock, line, probe, started)
    except TimeoutError:
        return tcp_timeout(connected, started, timeout)
    except OSError as exc:
        return tcp_failure(exc, connected, sock, probe, started)
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
        sock.send(payload(probe))
        async with asyncio.timeout(timeout):
            data = await loop.sock_recv(sock, 65535)
        return check_reply(data, probe, started)
    except TimeoutError:
        return udp_timeout(started, timeout)
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
            result = await run_cover(probe, timeout, endpoints)
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


async def run_probes(probes: list[dict[str, Any]], concurrency: int = MAX_CONCURRENT) -> list[dict[str, Any]]:
    """Run a batch, at most `concurrency` probes at once; the results in the order of `probes`."""
    gate = asyncio.Semaphore(concurrency)

    async def gated(probe: dict[str, Any]) -> dict[str, Any]:
        async with gate:
            return await run_probe(probe)

    return list(await asyncio.gather(*(gated(p) for p in probes)))
