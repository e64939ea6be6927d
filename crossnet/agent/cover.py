"""A Service cell's connections (ClusterIP, NodePort, clusterset): connect again and again until
every endpoint has answered. A 4 x 8 matrix makes ~100,000 of them, so they run in a worker thread
with plain blocking sockets -- the kernel waits, not the event loop: measured on loopback, a
connection costs the probing side ~30 us of Python this way against ~260 us through asyncio's
sock_* calls (a future, a selector registration and a loop turn per wait). The exchanges mirror
crossnet.agent.core's asyncio probes and read replies with the same helpers (crossnet.agent.reply);
tests run both against the same faults."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from crossnet.agent.icmp import IP_RECVERR, icmp_origin, open_probe_socket
from crossnet.agent.reply import (
    MAX_REPLY,
    check_reply,
    overlong,
    payload,
    tcp_failure,
    tcp_outcome,
    tcp_timeout,
    udp_timeout,
)
from crossnet.agent.results import ms_since, result
from crossnet.agent.results import os_error as _os_error

__all__ = ["COVER_THREADS", "cover", "cover_bound", "cover_waves", "run_cover", "tcp_exchange", "udp_exchange"]

# Service cells one agent covers at once (more wait for a thread; the runner sends at most a
# chunk's third, 8, to an agent at a time). Threads start when first needed.
COVER_THREADS = 8
_POOL: ThreadPoolExecutor | None = None


def _left(deadline: float) -> float:
    """Seconds until `deadline`; a deadline already passed is a timeout now."""
    left = deadline - time.perf_counter()
    if left <= 0:
        raise TimeoutError
    return left


def tcp_exchange(probe: dict[str, Any], timeout: float) -> dict[str, Any]:
    """crossnet.agent.core._probe_tcp with blocking calls under one deadline (for a worker thread)."""
    started = time.perf_counter()
    deadline = started + timeout
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    connected = False
    try:
        sock.setsockopt(socket.SOL_IP, IP_RECVERR, 1)  # to tell a REJECT on the way from a closed port
        sock.settimeout(timeout)
        sock.connect((probe["dst"], int(probe["port"])))
        connected = True
        sock.settimeout(_left(deadline))
        sock.sendall(payload(probe))
        line = b""
        while b"\n" not in line:
            sock.settimeout(_left(deadline))
            chunk = sock.recv(MAX_REPLY + 1 - len(line))
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


def udp_exchange(probe: dict[str, Any], timeout: float) -> dict[str, Any]:
    """crossnet.agent.core._probe_udp with blocking calls (for a worker thread)."""
    started = time.perf_counter()
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
        sock.settimeout(timeout)
        return check_reply(sock.recv(65535), probe, started)
    except TimeoutError:
        return udp_timeout(started, timeout)
    except OSError as exc:
        return _os_error(exc, started, probe, icmp_origin(sock))
    finally:
        sock.close()


EXCHANGES: dict[str, Callable[[dict[str, Any], float], dict[str, Any]]] = {"tcp": tcp_exchange, "udp": udp_exchange}


# A healthy Service of N endpoints leaves one of them unseen in k random connections with
# probability <= N (1 - 1/N)^k: k is chosen so that this false alarm stays below COVER_FALSE_ALARM
# per cell (0 expected in 10^5 cells). It costs nothing on a healthy Service (the loop ends once
# every endpoint answered: N ln N connections on average) and little on a broken one: a dead
# endpoint fails the connections sent to it, and two failures with one endpoint unseen end the cell.
COVER_FALSE_ALARM = 1e-6
COVER_FAILURES = 6  # failed connections that end a Service cell (the first waits the timeout, the rest a quarter)
COVER_BUDGET = 3  # a Service cell may take this many probe timeouts; beyond it the agent, not the path, is slow


def cover_waves(endpoints: int, protocol: str = "tcp") -> int:
    """How many probe timeouts `cover` may take at most: its budget without failures, or one
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


def cover(probe: dict[str, Any], timeout: float, endpoints: list[str]) -> dict[str, Any]:
    """A Service cell: connect again and again, one connection at a time (parallel connections
    through NAT can collide in conntrack and fail on their own), until every endpoint has answered
    or cover_bound() connections were made. Reached only when every endpoint answered; a
    never-answering endpoint is named (a dead endpoint of three is caught with >= 99.9 %). Failed
    connections end it early: two, when every endpoint but one has answered (that one is dead);
    COVER_FAILURES in all otherwise, twice that once some endpoint answered (the re-probe of a
    failed cell asks again)."""
    prober = EXCHANGES[str(probe.get("protocol"))]
    started = time.perf_counter()
    bound, made = cover_bound(len(endpoints), str(probe.get("protocol"))), 0
    seen: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    deadline = started + COVER_BUDGET * timeout
    # With some endpoints seen, a dead one among several unseen must not hide a live one: allow
    # twice the failures (a live unseen endpoint of three escapes 12 failures with p ~ 2^-12).
    while made < bound and len(failures) < (2 * COVER_FAILURES if seen else COVER_FAILURES):
        if time.perf_counter() > deadline and not failures:  # slow answers, none lost: the harness is slow
            return result(
                False,
                "slow",
                latency_ms=ms_since(started),
                detail=f"{len(seen)} of {len(endpoints)} endpoints answered in {made} connections before the "
                f"{COVER_BUDGET * timeout:.0f} s budget ran out, none failed: the machine is too slow",
            )
        unseen = set(endpoints) - set(seen)
        if not unseen or (len(unseen) == 1 and len(failures) >= 2):  # all seen, or the one silent is dead
            break
        # After a first failure a live endpoint still answers in milliseconds: later attempts need
        # not wait the full timeout to tell a dead one.
        one = prober(probe, min(timeout, max(0.5, timeout / 4)) if failures else timeout)
        made += 1
        if one.get("reached") and one.get("responder") in endpoints:
            seen.setdefault(str(one["responder"]), one)
        elif not one.get("reached"):
            failures.append(one)
        elif not seen:  # reached, but answered by something that is not an endpoint: say so at once
            return {**one, "latency_ms": ms_since(started)}
    missing = [e for e in endpoints if e not in seen]
    if not missing:
        first = seen[endpoints[0]]
        note = f"every endpoint answered ({len(endpoints)}) in {made} connections"
        note += f"; {len(failures)} failed on the way ({failures[0].get('error')})" if failures else ""
        return {**first, "latency_ms": ms_since(started), "detail": note}
    # Some endpoints answered, others never did: a dead endpoint behind a working Service.
    error = "endpoint-missing" if seen else (failures[0].get("error") or "timeout") if failures else "wrong-answer"
    names = ", ".join(missing)
    return result(
        False,
        error,
        latency_ms=ms_since(started),
        source_ip=next(iter(seen.values())).get("source_ip") if seen else None,
        detail=f"endpoint {names} never answered in {made} connections"
        + (f" ({len(failures)} failed: {failures[0].get('detail') or failures[0].get('error')})" if failures else ""),
    )


async def run_cover(probe: dict[str, Any], timeout: float, endpoints: list[str]) -> dict[str, Any]:
    """cover() in one of this agent's worker threads; the event loop stays free for the echo."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=COVER_THREADS, thread_name_prefix="crossnet-cover")
    return await asyncio.get_running_loop().run_in_executor(_POOL, cover, probe, timeout, endpoints)
