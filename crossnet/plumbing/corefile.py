"""Patch and restore a CoreDNS Corefile: text in, text out, byte-exact restore (the syntax is
crossnet.plumbing.corefile_syntax, whose names are re-exported here).

The patcher never edits a byte of the original: it appends one fenced section

    # crossnet begin <run-id>
    cluster-2.com:53 {
        errors
        cache 30
        forward . 10.20.0.3 10.20.1.4
    }
    # crossnet end <run-id>

and `strip_crossnet_fences` removes exactly what was appended. When the original does not end
with a newline, the patched text does not either (the separating newline goes before the
fence), which is how the strip knows which newline was ours.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crossnet.plumbing.corefile_syntax import (
    Corefile,
    CorefileError,
    Directive,
    ServerBlock,
    normalize_zone,
    parse_corefile,
    single_zone,
)

__all__ = [
    "Corefile",
    "CorefileError",
    "CorefilePatch",
    "Directive",
    "ServerBlock",
    "normalize_zone",
    "parse_corefile",
    "plan_forward_patch",
    "strip_crossnet_fences",
]

_FENCE_BEGIN = "# crossnet begin"
_FENCE_END = "# crossnet end"
_ANY_FENCE = re.compile(r"^# crossnet (?:begin|end)\b.*$", re.MULTILINE)
_BEGIN_LINE = re.compile(r"^# crossnet begin (?P<run_id>\S+)[ \t]*$", re.MULTILINE)
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class CorefilePatch:
    """A planned Corefile change: the original text, the patched text, and the run it is for."""

    original: str
    patched: str
    run_id: str

    def restore(self) -> str:
        """The original text, byte for byte."""
        return self.original


def plan_forward_patch(
    original: str,
    run_id: str,
    forwards: Mapping[str, Sequence[str]],
    source: str = "Corefile",
    extra_blocks: Sequence[Sequence[str]] = (),
) -> CorefilePatch:
    """Plan appending one fenced section to `original` with a server block per peer domain
    (sorted by domain) that forwards it to the given targets (`ip` or `ip:port`).

    Refuses (CorefileError) when the original already holds a crossnet section, already has a
    server block for a peer zone, serves a peer domain with its own kubernetes plugin, or when
    the run id, a domain or a target is malformed."""
    _check_run_id(run_id)
    if not forwards:
        raise CorefileError("no peer domains to forward; pass at least one domain with its DNS server IPs")
    _refuse_existing_fence(original, source)
    corefile = parse_corefile(original, source)
    blocks = [_peer_block(corefile, domain, targets, source) for domain, targets in forwards.items()]
    _refuse_duplicate_domains(blocks)
    lines = [f"{_FENCE_BEGIN} {run_id}"]
    for _, text in sorted(blocks):
        lines.extend(text)
    for extra in extra_blocks:  # whole server blocks (the MCS clusterset.local block), checked by the parse below
        _refuse_served_zone(corefile, single_zone(extra[0].split(":")[0].split()[0]), source)
        lines.extend(extra)
    lines.append(f"{_FENCE_END} {run_id}")
    section = "\n".join(lines)
    # A newline-less original stays newline-less: the separating newline goes before the fence.
    ends_clean = original == "" or original.endswith("\n")
    patched = original + section + "\n" if ends_clean else original + "\n" + section
    parse_corefile(patched, source)
    return CorefilePatch(original=original, patched=patched, run_id=run_id)


def _check_run_id(run_id: str) -> None:
    if not _RUN_ID.match(run_id):
        raise CorefileError(
            f"run id {run_id!r} cannot go in a Corefile comment; use letters, digits, '.', '_' "
            "and '-' only, e.g. 20250101-a1b2"
        )


def _refuse_existing_fence(original: str, source: str) -> None:
    found = _ANY_FENCE.search(original)
    if found:
        line = original.count("\n", 0, found.start()) + 1
        raise CorefileError(
            f"{source}:{line}: the Corefile already contains a crossnet section ({found.group(0).strip()!r}); "
            "run `crossnet down` to restore the original, or strip it with strip_crossnet_fences, then patch again"
        )


def _peer_block(corefile: Corefile, domain: str, targets: Sequence[str], source: str) -> tuple[str, list[str]]:
    try:
        zone = single_zone(domain)
    except ValueError as err:
        raise CorefileError(f"peer domain {domain!r}: {err}") from None
    if zone == ".":
        raise CorefileError("peer domain '.' is the root zone, not a cluster domain; pass the peer's dnsDomain")
    _refuse_served_zone(corefile, zone, source)
    if isinstance(targets, str) or not targets:
        raise CorefileError(
            f"peer domain {domain!r} needs a list of forward targets (the peer DNS pod IPs), got {targets!r}"
        )
    for target in targets:
        _check_forward_target(target, domain)
    name = zone.rstrip(".")
    text = [f"{name}:53 {{", "    errors", "    cache 30", f"    forward . {' '.join(targets)}", "}"]
    return zone, text


def _refuse_served_zone(corefile: Corefile, zone: str, source: str) -> None:
    existing = corefile.server_for_zone(zone)
    if existing is not None:
        raise CorefileError(
            f"{source}:{existing.line}: a server block for {zone} already exists and crossnet did not "
            f"make it; remove that block or leave {zone.rstrip('.')} out of the peers, then patch again"
        )
    for server in corefile.servers:
        for plugin in server.plugins("kubernetes"):
            if zone in _zones_of_args(plugin.args):
                raise CorefileError(
                    f"{source}:{plugin.line}: {zone} is this cluster's own domain (its kubernetes plugin "
                    "serves it); forward only peer domains"
                )


def _zones_of_args(args: Sequence[str]) -> set[str]:
    zones: set[str] = set()
    for arg in args:
        try:
            zones.update(normalize_zone(arg))
        except ValueError:
            continue
    return zones


def _refuse_duplicate_domains(blocks: list[tuple[str, list[str]]]) -> None:
    zones = [zone for zone, _ in blocks]
    doubled = sorted({zone for zone in zones if zones.count(zone) > 1})
    if doubled:
        raise CorefileError(f"peer domain(s) {', '.join(doubled)} given more than once; pass each domain once")


def _check_forward_target(target: str, domain: str) -> None:
    host, port = target, None
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else (rest or None)
    elif target.count(":") == 1:
        host, port = target.split(":")
    try:
        ipaddress.ip_address(host)
        valid_port = port is None or (port.isdigit() and 1 <= int(port) <= 65535)
    except ValueError:
        valid_port = False
    if not valid_port:
        raise CorefileError(
            f"forward target {target!r} for {domain} is not an IP or IP:port; give the peer DNS "
            "server pod IPs, e.g. 10.20.0.3 or 10.20.0.3:53"
        )


def strip_crossnet_fences(text: str, source: str = "Corefile") -> str:
    """Remove every `# crossnet begin <id>` ... `# crossnet end <id>` section exactly as
    plan_forward_patch appended it, so strip(patch.patched) == patch.original byte for byte."""
    while (begin := _BEGIN_LINE.search(text)) is not None:
        run_id = begin.group("run_id")
        end = re.compile(rf"^{re.escape(_FENCE_END)} {re.escape(run_id)}[ \t]*$", re.MULTILINE)
        found = end.search(text, begin.end())
        if found is None:
            line = text.count("\n", 0, begin.start()) + 1
            raise CorefileError(
                f"{source}:{line}: '{_FENCE_BEGIN} {run_id}' has no matching '{_FENCE_END} {run_id}'; "
                "remove the crossnet section by hand or restore the original Corefile"
            )
        start, stop = begin.start(), found.end()
        if text.startswith("\n", stop):
            stop += 1
        elif start > 0 and text[start - 1] == "\n":
            start -= 1
        text = text[:start] + text[stop:]
    orphan = _ANY_FENCE.search(text)
    if orphan is not None:
        line = text.count("\n", 0, orphan.start()) + 1
        raise CorefileError(
            f"{source}:{line}: {orphan.group(0).strip()!r} has no matching begin line; remove it by hand"
        )
    return text
