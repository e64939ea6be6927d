"""Corefile text -> server blocks with plugin chains. Every plugin and option is checked; what
the lab DNS cannot serve is a LabDnsConfigError naming the file, the line and the fix."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name

from crossnet.plumbing.corefile import CorefileError, Directive, ServerBlock, normalize_zone, parse_corefile
from crossnet.providers.lab.dns.plugins import KNOWN_PLUGINS, PLUGIN_ORDER
from crossnet.providers.lab.dns.plugins.cache import CachePlugin
from crossnet.providers.lab.dns.plugins.forward import ForwardPlugin, Upstream
from crossnet.providers.lab.dns.plugins.header import (
    HEADER_ACTIONS,
    HEADER_FLAGS,
    HEADER_SELECTORS,
    HeaderPlugin,
    HeaderRule,
)
from crossnet.providers.lab.dns.plugins.hosts import HostsPlugin
from crossnet.providers.lab.dns.plugins.kubernetes import (
    ALWAYS_PRESENT_NAMESPACES,
    DEFAULT_KUBERNETES_TTL,
    KubernetesPlugin,
)
from crossnet.providers.lab.dns.plugins.lighthouse import LighthousePlugin
from crossnet.providers.lab.dns.plugins.multicluster import MulticlusterPlugin
from crossnet.providers.lab.dns.query import Fallthrough, Plugin, Transport, most_specific
from crossnet.providers.lab.dns.records import (
    ClusterRecords,
    LabDnsConfigError,
    config_error,
    is_ip,
    load_records,
    read_text,
)

# Options CoreDNS has that change nothing the lab DNS answers: accepted and ignored.
_KUBERNETES_IGNORED = frozenset(
    {
        "endpoint",
        "tls",
        "kubeconfig",
        "labels",
        "namespace_labels",
        "endpoint_pod_names",
        "noendpoints",
        "ignore",
        "startup_timeout",
        "multicluster",
        "apiserver_qps",
        "apiserver_burst",
        "apiserver_max_inflight",
    }
)
_FORWARD_IGNORED = frozenset(
    {
        "tls",
        "tls_servername",
        "expire",
        "max_fails",
        "health_check",
        "max_concurrent",
        "next",
        "failfast_all_unhealthy_upstreams",
        "max_age",
        "max_idle_conns",
    }
)
_CACHE_IGNORED = frozenset({"prefetch", "serve_stale", "servfail", "keepttl"})


@dataclass(frozen=True)
class Block:
    zones: tuple[dns.name.Name, ...]
    plugins: tuple[Plugin, ...]
    log_errors: bool


@dataclass(frozen=True)
class Runtime:
    """One loaded configuration: the server blocks (with fresh caches) and their port."""

    blocks: tuple[Block, ...]
    port: int

    def block_for(self, qname: dns.name.Name) -> Block | None:
        best: tuple[int, Block] | None = None
        for block in self.blocks:
            zone = most_specific(block.zones, qname)
            if zone is not None and (best is None or len(zone) > best[0]):
                best = (len(zone), block)
        return None if best is None else best[1]


def load_runtime(corefile: Path, records_path: Path, forward_timeout: float) -> Runtime:
    """Read the records file and the Corefile into a Runtime; raises LabDnsConfigError."""
    records = load_records(records_path)
    text = read_text(corefile, "Corefile", "pass --corefile with the Corefile the lab wrote")
    try:
        parsed = parse_corefile(text, str(corefile))
    except CorefileError as err:
        raise LabDnsConfigError(str(err)) from None
    if not parsed.servers:
        raise LabDnsConfigError(f"{corefile}:1: the Corefile has no server block; add one, e.g. '.:53 {{ ... }}'")
    ports = sorted({server.port for server in parsed.servers})
    if len(ports) > 1:
        raise config_error(
            corefile,
            parsed.servers[0].line,
            f"server blocks use ports {ports}, but the lab DNS serves one",
            "give every server block the same port (53)",
        )
    builder = _BlockBuilder(corefile, records, forward_timeout)
    return Runtime(tuple(builder.block(server) for server in parsed.servers), ports[0])


class _BlockBuilder:
    """Turns the parsed Corefile's server blocks into plugin chains, checking every option."""

    def __init__(self, source: Path, records: ClusterRecords, forward_timeout: float) -> None:
        self.source, self.records, self.forward_timeout = source, records, forward_timeout
        self.serial = int(time.time())

    def error(self, line: int, problem: str, fix: str) -> LabDnsConfigError:
        return config_error(self.source, line, problem, fix)

    def block(self, server: ServerBlock) -> Block:
        if server.transport != "dns":
            raise self.error(
                server.line,
                f"{server.transport}:// server blocks are not served by the lab DNS",
                "serve the zone over plain DNS (no scheme, or dns://)",
            )
        zones = tuple(dns.name.from_text(zone) for zone in server.zones)
        self._refuse_unknown_and_doubled(server)
        plugins: list[Plugin] = []
        for name in PLUGIN_ORDER:
            for directive in server.plugins(name):
                plugin = self.plugin(zones, directive)
                if isinstance(plugin, MulticlusterPlugin):
                    self._refuse_shadowed_multicluster(plugin, directive, plugins)
                plugins.append(plugin)
        return Block(zones, tuple(plugins), bool(server.plugins("errors")))

    def _refuse_shadowed_multicluster(
        self, multicluster: MulticlusterPlugin, directive: Directive, before: list[Plugin]
    ) -> None:
        """A multicluster zone the kubernetes plugin of the same block serves (and does not fall
        through for) is never reached: kubernetes answers first, NXDOMAIN for every import."""
        for kubernetes in (p for p in before if isinstance(p, KubernetesPlugin)):
            for zone in multicluster.zones:
                served = most_specific(kubernetes.zones, zone)
                if served is None or kubernetes.fallthrough.covers(zone):
                    continue
                name, cluster = zone.to_text(omit_final_dot=True), served.to_text(omit_final_dot=True)
                where = f"is inside the kubernetes zone {cluster}"
                where = where if zone != served else "is the kubernetes plugin's zone"
                raise self.error(
                    directive.line,
                    f"multicluster zone {name} {where}: the kubernetes plugin would answer first "
                    "(NXDOMAIN for every ServiceImport)",
                    "use clusterset.local ('multicluster clusterset.local'), the MCS zone",
                )

    def _refuse_unknown_and_doubled(self, server: ServerBlock) -> None:
        first_line: dict[str, int] = {}
        for directive in server.directives:
            if directive.name not in KNOWN_PLUGINS:
                raise self.error(
                    directive.line,
                    f"unknown plugin {directive.name!r} (the lab DNS knows {', '.join(sorted(KNOWN_PLUGINS))})",
                    "remove it from the Corefile or teach crossnet/providers/lab/dns/plugins/ the plugin",
                )
            if directive.name in first_line:
                first = first_line[directive.name]
                raise self.error(
                    directive.line,
                    f"plugin {directive.name!r} is already used at line {first} of this server block",
                    "keep one of the two",
                )
            first_line[directive.name] = directive.line

    def plugin(self, zones: tuple[dns.name.Name, ...], directive: Directive) -> Plugin:
        if directive.name == "cache":
            return self.cache(zones, directive)
        if directive.name == "hosts":
            return self.hosts(zones, directive)
        if directive.name == "kubernetes":
            return self.kubernetes(zones, directive)
        if directive.name == "multicluster":
            return self.multicluster(zones, directive)
        if directive.name == "header":
            return self.header(directive)
        if directive.name == "lighthouse":
            return LighthousePlugin(zones, {dns.name.from_text(n): a for n, a in self.records.clusterset})
        return self.forward(directive)

    # ----------------------------------------------------------------------- option values

    def zones(self, texts: Sequence[str], line: int) -> tuple[dns.name.Name, ...]:
        names: list[dns.name.Name] = []
        for text in texts:
            try:
                names.extend(dns.name.from_text(zone) for zone in normalize_zone(text))
            except (ValueError, dns.exception.DNSException) as err:
                raise self.error(line, f"bad zone {text!r}: {err}", "fix the zone") from None
        return tuple(names)

    def integer(self, option: Directive, low: int, high: int, position: int = 0) -> int:
        text = option.args[position] if len(option.args) > position else ""
        if not text.isdigit() or not low <= int(text) <= high:
            raise self.error(
                option.line,
                f"{option.name} needs a number from {low} to {high}, got {text!r}",
                f"write e.g. '{option.name} {max(low, min(high, 30))}'",
            )
        return int(text)

    def choice(self, option: Directive, choices: tuple[str, ...]) -> str:
        if len(option.args) != 1 or option.args[0] not in choices:
            given = " ".join(option.args)
            raise self.error(
                option.line,
                f"{option.name} takes one of {', '.join(choices)}, got {given!r}",
                f"write e.g. '{option.name} {choices[0]}'",
            )
        return option.args[0]

    def unknown_option(self, plugin: str, option: Directive) -> LabDnsConfigError:
        return self.error(
            option.line,
            f"unknown {plugin} option {option.name!r}",
            f"remove it or check the CoreDNS {plugin} plugin documentation",
        )

    def fallthrough(self, option: Directive) -> Fallthrough:
        return Fallthrough(True, self.zones(option.args, option.line))

    # ----------------------------------------------------------------------- plugins

    def kubernetes(self, server_zones: tuple[dns.name.Name, ...], directive: Directive) -> KubernetesPlugin:
        zones = self.zones(directive.args, directive.line) if directive.args else server_zones
        ttl, pod_mode, fallthrough, namespaces = DEFAULT_KUBERNETES_TTL, "disabled", Fallthrough(), frozenset[str]()
        for option in directive.block:
            if option.name == "ttl":
                ttl = self.integer(option, 0, 3600)
            elif option.name == "pods":
                pod_mode = self.choice(option, ("disabled", "insecure", "verified"))
            elif option.name == "fallthrough":
                fallthrough = self.fallthrough(option)
            elif option.name == "namespaces":
                namespaces = frozenset(option.args)
            elif option.name not in _KUBERNETES_IGNORED:
                raise self.unknown_option("kubernetes", option)
        return KubernetesPlugin(zones, self.records, ttl, pod_mode, fallthrough, namespaces, self.serial)

    def multicluster(self, server_zones: tuple[dns.name.Name, ...], directive: Directive) -> MulticlusterPlugin:
        zones = self.zones(directive.args, directive.line) if directive.args else server_zones
        fallthrough, serve_endpoints = Fallthrough(), True
        for option in directive.block:
            if option.name == "fallthrough":
                fallthrough = self.fallthrough(option)
            elif option.name == "noendpoints":
                serve_endpoints = False
            elif option.name != "kubeconfig":
                raise self.unknown_option("multicluster", option)
        records = self.records
        namespaces = frozenset(
            {s.namespace for s in records.services} | {p.namespace for p in records.pods} | ALWAYS_PRESENT_NAMESPACES
        )
        return MulticlusterPlugin(zones, records.serviceimports, namespaces, fallthrough, serve_endpoints, self.serial)

    def header(self, directive: Directive) -> HeaderPlugin:
        rules: list[HeaderRule] = []
        example = "write e.g. 'response set ra' in the header block"
        for option in directive.block:
            words = [option.name.lower(), *(a.lower() for a in option.args)]
            if words[0] in HEADER_ACTIONS:  # no selector: a response rule, as CoreDNS reads it
                words.insert(0, "response")
            selector, action, flags = words[0], words[1] if len(words) > 1 else "", words[2:]
            if selector not in HEADER_SELECTORS or action not in HEADER_ACTIONS or not flags:
                raise self.error(
                    option.line, f"header rule {' '.join(words)!r} is not 'query|response set|clear FLAGS'", example
                )
            unknown = [flag for flag in flags if flag not in HEADER_FLAGS]
            if unknown:
                raise self.error(
                    option.line, f"header flag {unknown[0]!r} is not one of {', '.join(HEADER_FLAGS)}", example
                )
            mask = 0
            for flag in flags:
                mask |= int(HEADER_FLAGS[flag])
            rules.append(HeaderRule(selector, action, mask))
        if not rules:
            raise self.error(directive.line, "header needs at least one rule", example)
        return HeaderPlugin(tuple(rules))

    def cache(self, server_zones: tuple[dns.name.Name, ...], directive: Directive) -> CachePlugin:
        args = list(directive.args)
        ttl = self.integer(directive, 1, 2**31 - 1) if args and args[0].isdigit() else None
        zones = self.zones(args[1:] if ttl is not None else args, directive.line) or server_zones
        success, denial = ttl or 3600, ttl or 1800
        no_success: tuple[dns.name.Name, ...] | None = None
        no_denial: tuple[dns.name.Name, ...] | None = None
        for option in directive.block:
            if option.name == "disable":
                kind = self.choice(Directive("disable", option.args[:1], (), option.line), ("success", "denial"))
                disabled = self.zones(option.args[1:], option.line)
                no_success, no_denial = (disabled, no_denial) if kind == "success" else (no_success, disabled)
            elif option.name in ("success", "denial"):
                limit = self.integer(option, 1, 2**31 - 1, 1) if len(option.args) > 1 else None
                success, denial = (limit or success, denial) if option.name == "success" else (success, limit or denial)
            elif option.name not in _CACHE_IGNORED:
                raise self.unknown_option("cache", option)
        return CachePlugin(zones, success, denial, no_success, no_denial)

    def hosts(self, server_zones: tuple[dns.name.Name, ...], directive: Directive) -> HostsPlugin:
        entries: dict[dns.name.Name, tuple[str, ...]] = {}
        if directive.args and directive.args[0] != "/etc/hosts":  # the host's own file is never read
            self.add_hosts_file(entries, directive.args[0], directive.line)
        zones = self.zones(directive.args[1:], directive.line) or server_zones
        ttl, reverse, fallthrough = 3600, True, Fallthrough()
        for option in directive.block:
            if is_ip(option.name):
                self.add_host_entry(entries, option.name, option.args, option.line)
            elif option.name == "ttl":
                ttl = self.integer(option, 0, 2**31 - 1)
            elif option.name == "no_reverse":
                reverse = False
            elif option.name == "fallthrough":
                fallthrough = self.fallthrough(option)
            elif option.name != "reload":
                raise self.unknown_option("hosts", option)
        return HostsPlugin(zones, entries, ttl, reverse, fallthrough)

    def add_hosts_file(self, entries: dict[dns.name.Name, tuple[str, ...]], name: str, line: int) -> None:
        path = self.source.parent / name
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise self.error(line, f"cannot read hosts file {path} ({err.strerror})", "fix the path") from None
        for number, row in enumerate(text.splitlines(), 1):
            words = row.split("#", 1)[0].split()
            if words and is_ip(words[0]):
                self.add_host_entry(entries, words[0], words[1:], number)

    def add_host_entry(
        self, entries: dict[dns.name.Name, tuple[str, ...]], ip: str, names: Sequence[str], line: int
    ) -> None:
        if not names:
            raise self.error(line, f"hosts entry {ip} names no host", f"write e.g. '{ip} host.example.org'")
        for name in names:
            try:
                key = dns.name.from_text(name)
            except dns.exception.DNSException as err:
                problem = f"hosts entry {ip}: {name!r} is not a DNS name ({err})"
                raise self.error(line, problem, "fix the name") from None
            entries[key] = (*entries.get(key, ()), str(ipaddress.ip_address(ip)))

    def forward(self, directive: Directive) -> ForwardPlugin:
        if len(directive.args) < 2:
            raise self.error(
                directive.line, "forward needs a zone and at least one target", "write e.g. 'forward . 10.20.0.3:53'"
            )
        from_zone = self.zones(directive.args[:1], directive.line)[0]
        upstreams, files = self.forward_targets(directive.args[1:], directive.line)
        excepted: tuple[dns.name.Name, ...] = ()
        transport: Transport | None = None
        policy = "random"
        for option in directive.block:
            if option.name == "except":
                excepted = self.zones(option.args, option.line)
            elif option.name in ("force_tcp", "prefer_udp"):
                transport = "tcp" if option.name == "force_tcp" else "udp"
            elif option.name == "policy":
                policy = self.choice(option, ("random", "round_robin", "sequential"))
            elif option.name not in _FORWARD_IGNORED:
                raise self.unknown_option("forward", option)
        return ForwardPlugin(from_zone, upstreams, files, self.forward_timeout, excepted, transport, policy)

    def forward_targets(self, targets: Sequence[str], line: int) -> tuple[tuple[Upstream, ...], tuple[str, ...]]:
        upstreams: list[Upstream] = []
        files: list[str] = []
        for target in targets:
            if target.startswith(("/", "./", "../")):
                files.append(target)  # e.g. /etc/resolv.conf: never read, the lab stays closed
                continue
            upstream = Upstream.parse(target.removeprefix("dns://"))
            if upstream is None:
                raise self.error(
                    line,
                    f"forward target {target!r} is not an IP, IP:port or /etc/resolv.conf",
                    "the lab DNS forwards over plain DNS to IPs only, e.g. 10.20.0.3:53",
                )
            upstreams.append(upstream)
        return tuple(upstreams), tuple(files)
