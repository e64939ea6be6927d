"""What a control request may ask of the agent: the bounds of a batch and of each probe in it.

The agent runs as root next to other services, so a request is checked whole before any probe
starts; the first bad field is named (`probes[3].timeout: ...`) and nothing runs.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any

from crossnet.agent.core import AGENT_ID, PROBE_PROTOCOLS

__all__ = [
    "MAX_PAYLOAD",
    "MAX_PROBES",
    "MAX_TIMEOUT",
    "QTYPES",
    "BadRequest",
    "TooLarge",
    "validate_batch",
    "validate_probe",
]

MAX_PROBES = 2000  # probes in one request
MAX_TIMEOUT = 30.0  # seconds, one probe
DEFAULT_TIMEOUT = 2.0
MAX_PAYLOAD = 65000  # bytes of echo payload (MTU probes use ~1400) or of EDNS padding
MAX_ID = 512  # characters of a probe id (it comes back in the result)
MAX_LIST = 256  # entries of `search` and `expect_agents`
MAX_NAME = 253  # characters of a DNS name
QTYPES = ("A", "SRV")  # what a dns probe may ask
LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class BadRequest(ValueError):
    """A request the agent will not run (HTTP 400)."""


class TooLarge(BadRequest):
    """A request over a size bound (HTTP 413)."""


def _int(where: str, value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{where}: must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise BadRequest(f"{where}: {value} is not in {low}..{high}")
    return value


def _ip(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: must be an IP address string, not {type(value).__name__}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise BadRequest(f"{where}: not an IP address") from None


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: must be a DNS name string, not {type(value).__name__}")
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    if len(value) > MAX_NAME + 1 or not all(LABEL.fullmatch(label) for label in labels):
        raise BadRequest(
            f"{where}: not a DNS name (letters, digits, '-', '_' in dot-separated labels of at most "
            f"63, {MAX_NAME} in all)"
        )
    return value


def _strings(where: str, value: Any, check: Callable[[str, Any], str]) -> list[str]:
    if not isinstance(value, list):
        raise BadRequest(f"{where}: must be a list, not {type(value).__name__}")
    if len(value) > MAX_LIST:
        raise BadRequest(f"{where}: {len(value)} entries, at most {MAX_LIST}")
    return [check(f"{where}[{i}]", item) for i, item in enumerate(value)]


def _agent_id(where: str, value: Any) -> str:
    if not isinstance(value, str) or not AGENT_ID.fullmatch(value):
        raise BadRequest(f"{where}: not an agent id (like cluster-1/worker/agent)")
    return value


def _timeout(where: str, value: Any) -> float:
    if value is None:
        return DEFAULT_TIMEOUT
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadRequest(f"{where}: must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_TIMEOUT:
        raise BadRequest(f"{where}: {value!r} is not a number of seconds in (0, {MAX_TIMEOUT:g}]")
    return seconds


def validate_probe(spec: Any, where: str = "probe") -> dict[str, Any]:
    """A probe spec checked field by field: only known fields, each within its bounds. Raises BadRequest."""
    if not isinstance(spec, dict):
        raise BadRequest(f"{where}: must be an object, not {type(spec).__name__}")
    probe_id = spec.get("id")
    if probe_id is not None and not (
        (isinstance(probe_id, str) and len(probe_id) <= MAX_ID)
        or (isinstance(probe_id, int) and not isinstance(probe_id, bool))
    ):
        raise BadRequest(f"{where}.id: must be a string of at most {MAX_ID} characters, or an integer")
    protocol = spec.get("protocol")
    if protocol not in PROBE_PROTOCOLS:
        raise BadRequest(f"{where}.protocol: must be one of {', '.join(PROBE_PROTOCOLS)}")
    probe: dict[str, Any] = {
        "id": probe_id,
        "protocol": protocol,
        "timeout": _timeout(f"{where}.timeout", spec.get("timeout")),
        "payload": _int(f"{where}.payload", spec.get("payload") or 0, 0, MAX_PAYLOAD),
    }
    if spec.get("dst") is not None:
        probe["dst"] = _ip(f"{where}.dst", spec["dst"])
    if spec.get("port") is not None:
        probe["port"] = _int(f"{where}.port", spec["port"], 1, 65535)
    if spec.get("qname") is not None:
        probe["qname"] = _name(f"{where}.qname", spec["qname"])
    if spec.get("server") is not None:
        probe["server"] = _ip(f"{where}.server", spec["server"])
    if spec.get("search") is not None:
        probe["search"] = _strings(f"{where}.search", spec["search"], _name)
    if spec.get("dns_port") is not None:
        probe["dns_port"] = _int(f"{where}.dns_port", spec["dns_port"], 1, 65535)
    if spec.get("qtype") is not None:
        qtype = spec["qtype"]
        if not isinstance(qtype, str) or qtype.upper() not in QTYPES:
            raise BadRequest(f"{where}.qtype: must be one of {', '.join(QTYPES)}, not {str(qtype)[:20]!r}")
        if not protocol.startswith("dns") and qtype.upper() != "A":
            raise BadRequest(f"{where}.qtype: {protocol} to a name resolves A records; SRV is for dns-udp/dns-tcp")
        probe["qtype"] = qtype.upper()
    if spec.get("ndots") is not None:
        probe["ndots"] = _int(f"{where}.ndots", spec["ndots"], 0, 15)
    for flag in ("cover", "measure_mtu"):
        if spec.get(flag) is not None:
            if not isinstance(spec[flag], bool):
                raise BadRequest(f"{where}.{flag}: must be true or false")
            probe[flag] = spec[flag]
    if spec.get("expect_agents") is not None:
        probe["expect_agents"] = _strings(f"{where}.expect_agents", spec["expect_agents"], _agent_id)
    # What each protocol needs: an address to reach, or a name and the server that resolves it.
    by_name = "qname" in probe
    if protocol.startswith("dns") or (protocol in ("tcp", "udp") and by_name):
        for field in ("qname", "server"):
            if field not in probe:
                raise BadRequest(
                    f"{where}.{field}: required for {protocol}" + ("" if protocol.startswith("dns") else " to a name")
                )
    elif "dst" not in probe:
        raise BadRequest(f"{where}.dst: required for {protocol} (an IP address)")
    if protocol in ("tcp", "udp") and "port" not in probe:
        raise BadRequest(f"{where}.port: required for {protocol}")
    return probe


def validate_batch(request: Any) -> list[dict[str, Any]]:
    """The body of `POST /probe`: `{"probes": [spec, ...]}`, at most MAX_PROBES specs."""
    if not isinstance(request, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(request).__name__}")
    probes = request.get("probes")
    if not isinstance(probes, list):
        raise BadRequest('the body must have "probes": a list of probe specs')
    if len(probes) > MAX_PROBES:
        raise TooLarge(f"too many probes: {len(probes)} in one request, at most {MAX_PROBES}")
    return [validate_probe(spec, f"probes[{i}]") for i, spec in enumerate(probes)]
