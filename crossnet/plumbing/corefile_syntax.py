"""The Corefile's syntax: CoreDNS's Caddyfile dialect parsed into server blocks and directives.

`#` comments (at the start of a word), double-quoted words (`\\"` escapes a quote), server blocks
opened by one or more keys (`.:53`, `cluster-2.com:53`, `cluster-1.com in-addr.arpa`,
`a.org, b.org`, `dns://x:53`, `10.0.0.0/24`), directives with arguments, and nested blocks at any
depth, also on one line (`health { lameduck 5s }`). Errors name the line and the fix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "DEFAULT_PORTS",
    "Corefile",
    "CorefileError",
    "Directive",
    "ServerBlock",
    "normalize_zone",
    "parse_corefile",
    "single_zone",
]

DEFAULT_PORTS: Mapping[str, int] = {"dns": 53, "tls": 853, "quic": 853, "grpc": 443, "https": 443}
"""Port a server block listens on when its key names none, by transport scheme."""


class CorefileError(ValueError):
    """A Corefile, or a request to patch one, that cannot be used.

    The message names the file and line (`Corefile:12: ...`) and says how to fix it."""


# --------------------------------------------------------------------------- the parsed form


@dataclass(frozen=True)
class Directive:
    """One plugin line (`forward . 10.0.0.1`), or one line inside a plugin's block."""

    name: str
    args: tuple[str, ...] = ()
    block: tuple[Directive, ...] = ()
    line: int = 0

    def options(self, name: str) -> tuple[Directive, ...]:
        """The lines of this directive's block called `name`, in order."""
        return tuple(d for d in self.block if d.name == name)


@dataclass(frozen=True)
class ServerBlock:
    """A server block: the zones it serves (lowercase, absolute, `.` for the root), its port
    and its directives in the order written. `transport` is the key's scheme (`dns` unless
    written as `tls://...` and the like)."""

    zones: tuple[str, ...]
    port: int
    directives: tuple[Directive, ...]
    line: int
    transport: str = "dns"

    def plugins(self, name: str) -> tuple[Directive, ...]:
        """The directives of this block called `name`, in order."""
        return tuple(d for d in self.directives if d.name == name)


@dataclass(frozen=True)
class Corefile:
    servers: tuple[ServerBlock, ...]

    def server_for_zone(self, zone: str) -> ServerBlock | None:
        """The server block whose keys name `zone` (any port), if there is one."""
        wanted = single_zone(zone)
        for server in self.servers:
            if wanted in server.zones:
                return server
        return None


# --------------------------------------------------------------------------- zones


def normalize_zone(text: str) -> tuple[str, ...]:
    """The absolute lowercase zone(s) a zone as written in a Corefile stands for.

    `Cluster-1.COM` -> (`cluster-1.com.`,); `.` -> (`.`,); a CIDR becomes its reverse zone(s),
    as CoreDNS does: `10.0.0.0/24` -> (`0.0.10.in-addr.arpa.`,). Raises ValueError with the
    problem and its fix (without a location: callers add file and line)."""
    if not text:
        raise ValueError("empty zone; write '.' for the root zone or a domain such as cluster-2.com")
    if "/" in text:
        return _reverse_zones(text)
    if text == ".":
        return (".",)
    name = text.lower()
    name = name if name.endswith(".") else name + "."
    labels = name[:-1].split(".")
    if any(not label for label in labels):
        raise ValueError(f"zone {text!r} has an empty label; remove the doubled or leading dot")
    if len(name) > 254 or any(len(label) > 63 for label in labels):
        raise ValueError(f"zone {text!r} is longer than DNS allows; shorten it")
    if any(ch.isspace() for ch in name):
        raise ValueError(f"zone {text!r} contains white space; remove it")
    return (name,)


def single_zone(text: str) -> str:
    zones = normalize_zone(text)
    if len(zones) != 1:
        raise ValueError(f"{text!r} stands for {len(zones)} reverse zones; name one zone")
    return zones[0]


def _reverse_zones(cidr: str) -> tuple[str, ...]:
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as err:
        raise ValueError(f"{cidr!r} is not a valid CIDR ({err}); write it as network/prefix") from None
    if isinstance(network, ipaddress.IPv4Network):
        step, suffix = 8, "in-addr.arpa."
    else:
        step, suffix = 4, "ip6.arpa."
    aligned = -(-network.prefixlen // step) * step
    subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(network.subnets(new_prefix=aligned))
    return tuple(_reverse_zone_of(subnet, step, suffix) for subnet in subnets)


def _reverse_zone_of(network: ipaddress.IPv4Network | ipaddress.IPv6Network, step: int, suffix: str) -> str:
    if step == 8:
        digits = str(network.network_address).split(".")
    else:
        digits = list(network.network_address.exploded.replace(":", ""))
    kept = digits[: network.prefixlen // step]
    return ".".join([*reversed(kept), suffix]) if kept else suffix


# --------------------------------------------------------------------------- lexer


@dataclass(frozen=True)
class _Token:
    text: str
    line: int  # where the word starts
    end_line: int  # where it ends (a quoted word may span lines)
    quoted: bool

    @property
    def opens(self) -> bool:
        return not self.quoted and self.text == "{"

    @property
    def closes(self) -> bool:
        return not self.quoted and self.text == "}"


def _tokenize(text: str, source: str) -> list[_Token]:
    tokens: list[_Token] = []
    index, line = 0, 1
    while index < len(text):
        char = text[index]
        if char == "\n":
            line += 1
            index += 1
        elif char.isspace():
            index += 1
        elif char == "#":
            newline = text.find("\n", index)
            index = len(text) if newline < 0 else newline
        else:
            token, index = _read_word(text, index, line, source)
            tokens.append(token)
            line = token.end_line
    return tokens


def _read_word(text: str, index: int, line: int, source: str) -> tuple[_Token, int]:
    start_line, chars, quoted, in_quote = line, [], False, False
    while index < len(text):
        char = text[index]
        if char == "\\" and text.startswith('"', index + 1):
            chars.append('"')
            index += 2
            continue
        if char == '"':
            in_quote, quoted = not in_quote, True
        elif in_quote or not char.isspace():
            line += char == "\n"
            chars.append(char)
        else:
            break
        index += 1
    if in_quote:
        raise CorefileError(f"{source}:{start_line}: quoted string is never closed; add the missing '\"'")
    return _Token("".join(chars), start_line, line, quoted), index


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, tokens: list[_Token], source: str) -> None:
        self.tokens = tokens
        self.source = source
        self.position = 0

    def error(self, line: int, problem: str, fix: str) -> CorefileError:
        return CorefileError(f"{self.source}:{line}: {problem}; {fix}")

    def peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def corefile(self) -> Corefile:
        servers: list[ServerBlock] = []
        while self.peek() is not None:
            servers.append(self.server_block())
        _check_unique_zones(servers, self.source)
        return Corefile(tuple(servers))

    def server_block(self) -> ServerBlock:
        keys, opener = self.server_keys()
        transport, zones, port = self.address(keys)
        directives = self.block_body(opener)
        return ServerBlock(zones, port, directives, keys[0].line, transport)

    def server_keys(self) -> tuple[list[_Token], _Token]:
        keys: list[_Token] = []
        while True:
            token = self.peek()
            if token is None or (keys and not self.key_continues(keys[-1], token)):
                last = keys[-1] if keys else self.tokens[-1]
                raise self.error(
                    last.line,
                    "server block keys are not followed by '{'",
                    "open the block with '{' at the end of the line that names its zones",
                )
            self.take()
            if token.closes:
                raise self.error(token.line, "'}' closes no block", "remove it or add the missing '{'")
            if token.opens:
                if not keys:
                    raise self.error(
                        token.line,
                        "server block has no keys",
                        "start it with the zone it serves, e.g. '.:53 {' or 'cluster-2.com:53 {'",
                    )
                return keys, token
            if not token.quoted and token.text.endswith("{") and len(token.text) > 1:
                keys.append(_Token(token.text[:-1], token.line, token.end_line, False))
                return keys, token
            keys.append(token)

    @staticmethod
    def key_continues(previous: _Token, token: _Token) -> bool:
        return token.line == previous.end_line or previous.text.endswith(",")

    def address(self, keys: list[_Token]) -> tuple[str, tuple[str, ...], int]:
        parsed: list[tuple[str, tuple[str, ...], int, int]] = []
        for token in keys:
            parts = token.text.split(",")
            if len(parts) > 1 and parts[-1] == "":
                parts.pop()  # "a.org," continues the keys on the next word
            for part in parts:
                if not part:
                    raise self.error(
                        token.line,
                        f"empty server block key in {token.text!r}",
                        "remove the extra comma or write the zone, e.g. '.:53'",
                    )
                parsed.append((*self.key(part, token.line), token.line))
        return self.same_address(parsed)

    def key(self, text: str, line: int) -> tuple[str, tuple[str, ...], int]:
        transport, rest = "dns", text
        if "://" in text:
            transport, rest = text.split("://", 1)
            if transport not in DEFAULT_PORTS:
                known = ", ".join(f"{scheme}://" for scheme in DEFAULT_PORTS)
                problem = f"unknown transport {transport + '://'!r} in key {text!r}"
                raise self.error(line, problem, f"use one of {known}")
        host, port_text = _split_key_port(rest)
        try:
            zones = normalize_zone(host)
        except ValueError as err:
            raise self.error(line, f"bad server block key {text!r}: {err}", "fix the key") from None
        return transport, zones, self.port(port_text, transport, text, line)

    def port(self, port_text: str | None, transport: str, key: str, line: int) -> int:
        if port_text is None:
            return DEFAULT_PORTS[transport]
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            problem = f"port {port_text!r} in key {key!r} is not a port number"
            raise self.error(line, problem, "write a number from 1 to 65535")
        return int(port_text)

    def same_address(self, parsed: list[tuple[str, tuple[str, ...], int, int]]) -> tuple[str, tuple[str, ...], int]:
        transports = {transport for transport, _, _, _ in parsed}
        ports = {port for _, _, port, _ in parsed}
        line = parsed[0][3]
        if len(transports) > 1 or len(ports) > 1:
            raise self.error(
                line,
                "the keys of one server block use different ports or transports",
                "split them into one server block per port",
            )
        zones = tuple(zone for _, key_zones, _, _ in parsed for zone in key_zones)
        return parsed[0][0], zones, parsed[0][2]

    def block_body(self, opener: _Token) -> tuple[Directive, ...]:
        directives: list[Directive] = []
        while True:
            token = self.peek()
            if token is None:
                raise self.error(opener.line, "'{' opened here is never closed", "add the missing '}'")
            if token.closes:
                self.take()
                return tuple(directives)
            if token.opens:
                raise self.error(
                    token.line,
                    "'{' does not follow a directive on its line",
                    "put '{' at the end of the line of the directive it opens",
                )
            directives.append(self.directive())

    def directive(self) -> Directive:
        name = self.take()
        args: list[str] = []
        line = name.end_line
        while (token := self.peek()) is not None and token.line == line and not token.closes:
            self.take()
            if token.opens:
                return Directive(name.text, tuple(args), self.block_body(token), name.line)
            args.append(token.text)
            line = token.end_line
        return Directive(name.text, tuple(args), (), name.line)


def _split_key_port(key: str) -> tuple[str, str | None]:
    """`cluster-2.com:53` -> (`cluster-2.com`, `53`); IPv6 CIDRs keep their colons."""
    if key.startswith("[") and "]" in key:
        host, _, rest = key[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if ":" not in key:
        return key, None
    host, port = key.rsplit(":", 1)
    if ":" in host and "/" not in host:
        return key, None
    if ":" in host and not port.isdigit():
        return key, None
    return host, port


def _check_unique_zones(servers: list[ServerBlock], source: str) -> None:
    seen: dict[tuple[str, str, int], ServerBlock] = {}
    for server in servers:
        for zone in server.zones:
            key = (server.transport, zone, server.port)
            first = seen.setdefault(key, server)
            if first is not server or server.zones.count(zone) > 1:
                raise CorefileError(
                    f"{source}:{server.line}: zone {zone} on port {server.port} is already served "
                    f"by the block at line {first.line}; merge the two blocks or remove one"
                )


def parse_corefile(text: str, source: str = "Corefile") -> Corefile:
    """Parse Corefile text. `source` names the text in errors (a path, or `configmap
    kube-system/coredns`). Raises CorefileError naming `source:line` and the fix."""
    return _Parser(_tokenize(text, source), source).corefile()


# --------------------------------------------------------------------------- patch and restore
