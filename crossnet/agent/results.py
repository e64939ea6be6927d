"""What a probe reports when it fails: an errno turned into a class and a text that says what it
means for the path (stdlib only; the agent runs alone as a zipapp)."""

from __future__ import annotations

import errno
import time
from typing import Any

from crossnet.agent.icmp import ICMP_HEADER, IP_HEADER, MARK

__all__ = ["HELLO", "SMALL_PACKET", "ms_since", "os_error", "packet_bytes", "result"]

HELLO = b"CROSSNET "  # the first bytes of every echo payload
SMALL_PACKET = 1000  # bytes: no link MTU in use is below this, so ENOBUFS for such a packet is not the MTU
ERRNO_CLASS = {
    errno.ECONNREFUSED: "refused",
    errno.EHOSTUNREACH: "no-route",
    errno.ENETUNREACH: "no-route",
    errno.EHOSTDOWN: "no-route",
    errno.ETIMEDOUT: "timeout",
}


def result(reached: bool, error: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"reached": reached, "error": error, **fields}


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


def packet_bytes(probe: dict[str, Any]) -> int:
    """The IP packet a udp or icmp probe sends (tcp: segments are the kernel's business)."""
    body = int(probe.get("payload") or 0)
    if probe.get("protocol") == "icmp":
        return IP_HEADER + ICMP_HEADER + len(MARK) + body
    return IP_HEADER + 8 + len(HELLO) + body + 1


def os_error(
    exc: OSError, started: float, probe: dict[str, Any] | None = None, origin: tuple[str, str] | None = None
) -> dict[str, Any]:
    """An errno as a class and a text that says what it means for the path, not what libc calls
    it; `origin` (crossnet.agent.icmp.icmp_origin) tells who sent the ICMP error behind it."""
    number = exc.errno or 0
    size = packet_bytes(probe) if probe and probe.get("protocol") in ("udp", "icmp") else 0
    dst = str((probe or {}).get("dst") or "")
    took = ms_since(started)
    if origin is not None and number != errno.EMSGSIZE:
        offender, said = origin
        if "prohibited" in said or (offender != dst and said == "port unreachable"):
            text = f"rejected by {offender} on the way (ICMP {said}): a filter's REJECT, not the target"
            return result(False, "rejected", latency_ms=took, detail=text)
        if said == "port unreachable":
            text = f"nothing listens on {dst} port {(probe or {}).get('port')} (ICMP port unreachable from the target)"
            return result(False, "refused", latency_ms=took, detail=text)
        return result(False, "no-route", latency_ms=took, detail=f"{offender} answered ICMP {said}: no way on to {dst}")
    if number == errno.EMSGSIZE:
        text = f"the {size}-byte packet is larger than the path MTU (fragmentation needed came back)"
        return result(False, "mtu", latency_ms=took, detail=text)
    if number == errno.ENOBUFS and size > SMALL_PACKET:
        # A veth or bridge port drops a frame larger than its MTU, and the sender sees ENOBUFS.
        text = f"the {size}-byte packet was dropped on a link whose MTU is smaller (ENOBUFS)"
        return result(False, "mtu", latency_ms=took, detail=text)
    if number == errno.ENOBUFS:
        text = (
            "the sending host ran out of buffers (ENOBUFS): a limit of the machine, not the path "
            "(e.g. its neighbour table: dmesg says 'neighbor table overflow')"
        )
        return result(False, "no-buffer", latency_ms=took, detail=text)
    if number == errno.ECONNREFUSED:
        text = "connection refused: the target answered with a reset (nothing listens on that port)"
        return result(False, "refused", latency_ms=took, detail=text)
    if number in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
        text = f"no route to the destination ({exc.strerror or exc}: an ICMP unreachable or no local route)"
        return result(False, "no-route", latency_ms=took, detail=text)
    return result(False, ERRNO_CLASS.get(number, "error"), latency_ms=took, detail=f"{exc.strerror or exc}")
