"""The lab's cluster DNS server: a small CoreDNS that consumes a real Corefile.

Each emulated cluster runs one of these inside a network namespace, where a kind cluster runs
its CoreDNS pod. It reads the *same* Corefile text the kind provider patches into the CoreDNS
ConfigMap (parsed by `crossnet.plumbing.corefile`), so the Corefile plumbing is exercised for
real, and answers from a records file the lab writes (what the Kubernetes API holds on kind).

    python -m crossnet.providers.lab.dns --corefile PATH --records PATH [--ready PATH]
                                         [--listen ADDR] [--port N] [--forward-timeout S]

Records file (JSON)::

    {"services": [{"name": "echo", "namespace": "crossnet",
                   "type": "ClusterIP" | "Headless" | "ExternalName",
                   "cluster_ip": "10.40.0.100" | null,
                   "external_name": "echo.crossnet.svc.cluster-1.com" | null,
                   "ports": [["tcp", 8080], ["udp", 8080]],
                   "endpoints": [{"ip": "10.10.1.2", "hostname": "agent-worker"}]}],
     "pods": [{"ip": "10.10.1.2", "namespace": "crossnet"}]}

The subset of CoreDNS it implements (plugins run in CoreDNS's own order, not Corefile order):
server block selection by the most specific zone (no block: REFUSED); `errors`; `cache`;
`hosts`; `kubernetes`; `forward` over the client's transport with the client's own query
bytes; and `health ready prometheus loop reload loadbalance log` as known no-ops. Any other
plugin is an error naming it, the file and the line. `forward . /etc/resolv.conf` never reads
the host's resolv.conf: traffic stays inside the lab, so such names get SERVFAIL at once.
The Corefile and the records file are re-read when they change (checked at most every 100 ms,
when a query arrives); a bad new Corefile is logged and the previous one kept.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from crossnet.model import CROSSNET_NAMESPACE, LiveCluster
from crossnet.plumbing.corefile import (
    CorefileError,
    Directive,
    ServerBlock,
    normalize_zone,
    parse_corefile,
)

__all__ = [
    "FORWARD_TIMEOUT",
    "ClusterRecords",
    "EndpointRecord",
    "LabDnsConfigError",
    "LabDnsServer",
    "PodRecord",
    "ServiceRecord",
    "load_records",
    "main",
    "records_from_live_cluster",
]

FORWARD_TIMEOUT = 2.0
"""Seconds to wait for one upstream before trying the next (then SERVFAIL)."""

RELOAD_CHECK_INTERVAL = 0.1
"""At most this often (seconds, on a query) the Corefile and records file are checked."""

DEFAULT_KUBERNETES_TTL = 5
EDNS_PAYLOAD = 1232
MAX_CHASE_DEPTH = 8
TCP_IDLE_TIMEOUT = 10.0
CACHE_CAPACITY = 10_000

LIGHTHOUSE_TTL = 5
NO_OP_PLUGINS = frozenset({"health", "ready", "prometheus", "loop", "reload", "loadbalance", "log"})
_PLUGIN_ORDER = ("cache", "hosts", "kubernetes", "lighthouse", "forward")  # as in CoreDNS's plugin.cfg
KNOWN_PLUGINS = frozenset({"errors", *NO_OP_PLUGINS, *_PLUGIN_ORDER})

_KUBERNETES_IGNORED = frozenset(
    {"endpoint", "tls", "kubeconfig", "labels", "namespace_labels", "endpoint_pod_names",
     "noendpoints", "ignore", "startup_timeout", "multicluster", "apiserver_qps",
     "apiserver_burst", "apiserver_max_inflight"}
)
_FORWARD_IGNORED = frozenset(
    {"tls", "tls_servername", "expire", "max_fails", "health_check", "max_concurrent", "next",
     "failfast_all_unhealthy_upstreams", "max_age", "max_idle_conns"}
)
_CACHE_IGNORED = frozenset({"prefetch", "serve_stale", "servfail", "keepttl"})
_ALWAYS_PRESENT_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})

Transport = Literal["udp", "tcp"]
ServiceType = Literal["ClusterIP", "Headless", "ExternalName"]
_SERVICE_TYPES: tuple[ServiceType, ...] = ("ClusterIP", "Headless", "ExternalName")


class LabDnsConfigError(ValueError):
    """A Corefile or records file the lab DNS cannot serve. The message names the file, the
    line (or the JSON field) and the fix."""


def _config_error(source: str | Path, line: int, problem: str, fix: str) -> LabDnsConfigError:
    return LabDnsConfigError(f"{source}:{line}: {problem}; {fix}")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class EndpointRecord:
    ip: str
    hostname: str | None = None

    @property
    def label(self) -> str:
        """The endpoint's name under its service: its hostname, or its IP with dashes."""
        return self.hostname or _dashed(self.ip)


@dataclass(frozen=True)
class ServiceRecord:
    name: str
    namespace: str
    type: ServiceType
    cluster_ip: str | None = None
    external_name: str | None = None
    ports: tuple[tuple[str, int], ...] = ()
    endpoints: tuple[EndpointRecord, ...] = ()


@dataclass(frozen=True)
class PodRecord:
    ip: str
    namespace: str


@dataclass(frozen=True)
class ClusterRecords:
    """What the kubernetes plugin answers from (what the API server holds on kind)."""

    services: tuple[ServiceRecord, ...] = ()
    pods: tuple[PodRecord, ...] = ()
    # For the lighthouse plugin: clusterset.local names -> global IPs, as Lighthouse would answer.
    clusterset: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "services": [
                {
                    "name": s.name,
                    "namespace": s.namespace,
                    "type": s.type,
                    "cluster_ip": s.cluster_ip,
                    "external_name": s.external_name,
                    "ports": [list(port) for port in s.ports],
                    "endpoints": [{"ip": e.ip, "hostname": e.hostname} for e in s.endpoints],
                }
                for s in self.services
            ],
            "pods": [{"ip": p.ip, "namespace": p.namespace} for p in self.pods],
            "clusterset": {name: list(addresses) for name, addresses in self.clusterset},
        }

    @classmethod
    def from_json(cls, data: object, source: str = "records") -> ClusterRecords:
        """Validate and read the records JSON; raises LabDnsConfigError naming the field."""
        reader = _RecordsReader(source)
        document = reader.mapping(data, "top level")
        services = reader.items(document, "services")
        pods = reader.items(document, "pods")
        clusterset = document.get("clusterset") or {}
        if not isinstance(clusterset, dict):
            raise reader.error("clusterset", "must map names to lists of IP addresses")
        entries = []
        for name, addresses in sorted(clusterset.items()):
            if not isinstance(addresses, list) or not all(isinstance(a, str) and _is_ip(a) for a in addresses):
                raise reader.error(f"clusterset[{name!r}]", "must be a list of IP addresses")
            entries.append((str(name).lower().rstrip(".") + ".", tuple(addresses)))
        return cls(
            services=tuple(reader.service(item, f"services[{i}]") for i, item in enumerate(services)),
            pods=tuple(reader.pod(item, f"pods[{i}]") for i, item in enumerate(pods)),
            clusterset=tuple(entries),
        )


class _RecordsReader:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, where: str, problem: str) -> LabDnsConfigError:
        return LabDnsConfigError(
            f"{self.source}: {where}: {problem}; fix the records file (format: python -m "
            "crossnet.providers.lab.dns --help)"
        )

    def mapping(self, value: object, where: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"expected a JSON object, got {type(value).__name__}")
        return cast(Mapping[str, Any], value)

    def items(self, document: Mapping[str, Any], key: str) -> list[Any]:
        value = document.get(key, [])
        if not isinstance(value, list):
            raise self.error(key, "expected a JSON list")
        return value

    def text(self, item: Mapping[str, Any], key: str, where: str, optional: bool = False) -> str | None:
        value = item.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(f"{where}.{key}", f"expected a non-empty string, got {value!r}")
        return value

    def ip(self, item: Mapping[str, Any], key: str, where: str, optional: bool = False) -> str | None:
        value = self.text(item, key, where, optional)
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise self.error(f"{where}.{key}", f"{value!r} is not an IP address") from None
        return value

    def dns_name(self, item: Mapping[str, Any], key: str, where: str, optional: bool = False) -> str | None:
        value = self.text(item, key, where, optional)
        if value is not None:
            try:
                dns.name.from_text(value)
            except dns.exception.DNSException as err:
                raise self.error(f"{where}.{key}", f"{value!r} is not a DNS name ({err})") from None
        return value

    def service(self, value: object, where: str) -> ServiceRecord:
        item = self.mapping(value, where)
        kind = item.get("type")
        if kind not in _SERVICE_TYPES:
            raise self.error(f"{where}.type", f"{kind!r} is not one of {', '.join(_SERVICE_TYPES)}")
        service = ServiceRecord(
            name=cast(str, self.text(item, "name", where)),
            namespace=cast(str, self.text(item, "namespace", where)),
            type=cast(ServiceType, kind),
            cluster_ip=self.ip(item, "cluster_ip", where, optional=kind != "ClusterIP"),
            external_name=self.dns_name(item, "external_name", where, optional=kind != "ExternalName"),
            ports=self.ports(item.get("ports", []), f"{where}.ports"),
            endpoints=self.endpoints(item.get("endpoints", []), f"{where}.endpoints"),
        )
        return service

    def ports(self, value: object, where: str) -> tuple[tuple[str, int], ...]:
        if not isinstance(value, list):
            raise self.error(where, "expected a list of [protocol, port] pairs")
        ports = []
        for i, pair in enumerate(value):
            if (
                not isinstance(pair, list | tuple)
                or len(pair) != 2
                or str(pair[0]).lower() not in ("tcp", "udp", "sctp")
                or not isinstance(pair[1], int)
            ):
                raise self.error(f"{where}[{i}]", f"expected [\"tcp\"|\"udp\"|\"sctp\", port], got {pair!r}")
            ports.append((str(pair[0]).lower(), int(pair[1])))
        return tuple(ports)

    def endpoints(self, value: object, where: str) -> tuple[EndpointRecord, ...]:
        if not isinstance(value, list):
            raise self.error(where, "expected a list of {\"ip\": ..., \"hostname\": ...} objects")
        endpoints = []
        for i, entry in enumerate(value):
            item = {"ip": entry} if isinstance(entry, str) else self.mapping(entry, f"{where}[{i}]")
            ip = cast(str, self.ip(item, "ip", f"{where}[{i}]"))
            endpoints.append(EndpointRecord(ip, self.text(item, "hostname", f"{where}[{i}]", optional=True)))
        return tuple(endpoints)

    def pod(self, value: object, where: str) -> PodRecord:
        item = self.mapping(value, where)
        return PodRecord(cast(str, self.ip(item, "ip", where)), cast(str, self.text(item, "namespace", where)))


def load_records(path: str | Path) -> ClusterRecords:
    """Read and validate a records file; raises LabDnsConfigError naming the file and field."""
    text = _read_text(Path(path), "records file", "pass --records with the file the lab wrote")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise _config_error(path, err.lineno, f"invalid JSON ({err.msg})", "fix the records file") from None
    return ClusterRecords.from_json(data, str(path))


def records_from_live_cluster(cluster: LiveCluster, hostnames: Mapping[str, str] | None = None) -> ClusterRecords:
    """The records a lab cluster's DNS serves, from what the provider brought up. `hostnames`
    maps endpoint IPs to the hostname their headless per-pod name uses (default: dashed IP)."""
    names = hostnames or {}
    services = tuple(
        ServiceRecord(
            name=s.name,
            namespace=s.namespace,
            type="ClusterIP" if s.type == "NodePort" else s.type,  # a NodePort Service resolves like ClusterIP
            cluster_ip=s.cluster_ip,
            external_name=s.external_name,
            ports=s.ports,
            endpoints=tuple(EndpointRecord(ip, names.get(ip) or host or None)
                            for ip, host in zip(s.endpoints, s.hostnames or ("",) * len(s.endpoints), strict=True)),
        )
        for s in cluster.services
    )
    pods = tuple(PodRecord(pod.ip, CROSSNET_NAMESPACE) for pod in cluster.pods)
    return ClusterRecords(services, pods)


def _read_text(path: Path, what: str, fix: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise LabDnsConfigError(f"{path}: cannot read the {what} ({err.strerror}); {fix}") from None


def _dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


def _undashed(label: str) -> str | None:
    for candidate in (label.replace("-", "."), label.replace("-", ":")):
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


# --------------------------------------------------------------------------- queries and answers


@dataclass
class _Query:
    """One question on its way through a server block's plugins."""

    request: dns.message.Message
    wire: bytes | None  # the client's own bytes; None for a query the server made itself
    transport: Transport
    resolver: Callable[[_Query], Awaitable[dns.message.Message]]
    depth: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def qname(self) -> dns.name.Name:
        return self.request.question[0].name

    @property
    def qtype(self) -> dns.rdatatype.RdataType:
        return self.request.question[0].rdtype

    async def chase(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.message.Message | None:
        """Resolve `name` through this same server (as CoreDNS's upstream lookups do)."""
        if self.depth >= MAX_CHASE_DEPTH:
            self.errors.append(f"CNAME chain longer than {MAX_CHASE_DEPTH} at {name}")
            return None
        request = dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
        return await self.resolver(_Query(request, None, self.transport, self.resolver, self.depth + 1))


_Next = Callable[[_Query], Awaitable[dns.message.Message]]


class _Plugin(Protocol):
    async def serve(self, query: _Query, next_plugin: _Next) -> dns.message.Message: ...


@dataclass(frozen=True)
class _Chain:
    """Calls the plugins of a server block in order; each gets the rest as `next_plugin`."""

    plugins: tuple[_Plugin, ...]
    index: int = 0

    async def __call__(self, query: _Query) -> dns.message.Message:
        if self.index >= len(self.plugins):
            return _servfail(query, "no next plugin found")
        return await self.plugins[self.index].serve(query, _Chain(self.plugins, self.index + 1))


def _response(
    query: _Query, rcode: dns.rcode.Rcode = dns.rcode.NOERROR, authoritative: bool = False
) -> dns.message.Message:
    response = dns.message.make_response(query.request, recursion_available=True, our_payload=EDNS_PAYLOAD)
    response.set_rcode(rcode)
    if authoritative:
        response.flags |= int(dns.flags.AA)
    return response


def _servfail(query: _Query, error: str) -> dns.message.Message:
    query.errors.append(error)
    return _response(query, dns.rcode.SERVFAIL)


def _most_specific(zones: Iterable[dns.name.Name], name: dns.name.Name) -> dns.name.Name | None:
    best: dns.name.Name | None = None
    for zone in zones:
        if name.is_subdomain(zone) and (best is None or len(zone) > len(best)):
            best = zone
    return best


def _address_rrsets(
    owner: dns.name.Name, ttl: int, addresses: Sequence[str], rdtype: dns.rdatatype.RdataType
) -> list[dns.rrset.RRset]:
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    wanted = {dns.rdatatype.A: [("A", v4)], dns.rdatatype.AAAA: [("AAAA", v6)],
              dns.rdatatype.ANY: [("A", v4), ("AAAA", v6)]}.get(rdtype, [])
    return [dns.rrset.from_text(owner, ttl, "IN", kind, *found) for kind, found in wanted if found]


@dataclass(frozen=True)
class _Fallthrough:
    enabled: bool = False
    zones: tuple[dns.name.Name, ...] = ()

    def covers(self, name: dns.name.Name) -> bool:
        return self.enabled and (not self.zones or _most_specific(self.zones, name) is not None)


# --------------------------------------------------------------------------- kubernetes


@dataclass(frozen=True)
class _Node:
    """A name that exists in the cluster zone: its addresses, or a CNAME, or a PTR target."""

    addresses: tuple[str, ...] = ()
    cname: str | None = None
    ptr: str | None = None
    apex: bool = False


class _KubernetesPlugin:
    def __init__(
        self,
        zones: tuple[dns.name.Name, ...],
        records: ClusterRecords,
        ttl: int = DEFAULT_KUBERNETES_TTL,
        pod_mode: str = "disabled",
        fallthrough: _Fallthrough = _Fallthrough(),
        namespaces: frozenset[str] = frozenset(),
        serial: int = 1,
    ) -> None:
        self.zones, self.ttl, self.pod_mode = zones, ttl, pod_mode
        self.fallthrough, self.exposed_only, self.serial = fallthrough, namespaces, serial
        self.services = {(s.name, s.namespace): s for s in records.services}
        self.pods = frozenset((p.ip, p.namespace) for p in records.pods)
        self.namespaces = frozenset(
            {s.namespace for s in records.services} | {p.namespace for p in records.pods} | _ALWAYS_PRESENT_NAMESPACES
        )
        self.reverse = self._reverse_names(records)

    def _reverse_names(self, records: ClusterRecords) -> dict[str, str]:
        forward_zones = [z for z in self.zones if not _is_reverse_zone(z)]
        if not forward_zones:
            return {}
        zone = forward_zones[0].to_text()
        names: dict[str, str] = {}
        for service in records.services:
            base = f"{service.name}.{service.namespace}.svc.{zone}"
            for endpoint in service.endpoints if service.type == "Headless" else ():
                names.setdefault(str(ipaddress.ip_address(endpoint.ip)), f"{endpoint.label}.{base}")
            if service.cluster_ip:
                names.setdefault(str(ipaddress.ip_address(service.cluster_ip)), base)
        return names

    async def serve(self, query: _Query, next_plugin: _Next) -> dns.message.Message:
        zone = _most_specific(self.zones, query.qname)
        if zone is None:
            return await next_plugin(query)
        node = self._reverse_node(query.qname) if _is_reverse_zone(zone) else self._lookup(query.qname, zone)
        if node is None:
            if self.fallthrough.covers(query.qname):
                return await next_plugin(query)
            return self._without_answer(query, zone, dns.rcode.NXDOMAIN)
        response = _response(query, authoritative=True)
        response.answer.extend(await self._answers(query, zone, node))
        if not response.answer:
            return self._without_answer(query, zone, dns.rcode.NOERROR)
        return response

    def _without_answer(self, query: _Query, zone: dns.name.Name, rcode: dns.rcode.Rcode) -> dns.message.Message:
        response = _response(query, rcode, authoritative=True)
        response.authority.append(self._soa(zone))
        return response

    def _soa(self, zone: dns.name.Name) -> dns.rrset.RRset:
        origin = zone.to_text()
        rdata = f"ns.dns.{origin} hostmaster.{origin} {self.serial} 7200 1800 86400 {self.ttl}"
        return dns.rrset.from_text(zone, self.ttl, "IN", "SOA", rdata)

    async def _answers(self, query: _Query, zone: dns.name.Name, node: _Node) -> list[dns.rrset.RRset]:
        owner, qtype = query.qname, query.qtype
        if node.apex:
            if qtype == dns.rdatatype.SOA:
                return [self._soa(zone)]
            if qtype == dns.rdatatype.NS:
                return [dns.rrset.from_text(owner, self.ttl, "IN", "NS", f"ns.dns.{zone.to_text()}")]
            return []
        if node.ptr is not None:
            return [dns.rrset.from_text(owner, self.ttl, "IN", "PTR", node.ptr)] if qtype == dns.rdatatype.PTR else []
        if node.cname is not None:
            return await self._cname_answers(query, node.cname)
        return _address_rrsets(owner, self.ttl, node.addresses, qtype)

    async def _cname_answers(self, query: _Query, target_text: str) -> list[dns.rrset.RRset]:
        target = dns.name.from_text(target_text)
        answers = [dns.rrset.from_text(query.qname, self.ttl, "IN", "CNAME", target.to_text())]
        if query.qtype != dns.rdatatype.CNAME:
            chased = await query.chase(target, query.qtype)
            if chased is not None:
                answers.extend(chased.answer)
        return answers

    def _lookup(self, qname: dns.name.Name, zone: dns.name.Name) -> _Node | None:
        labels = [label.decode("latin-1").lower() for label in reversed(qname.relativize(zone).labels)]
        if not labels:
            return _Node(apex=True)
        if labels[0] == "svc":
            return self._service_node(labels[1:])
        if labels[0] == "pod":
            return self._pod_node(labels[1:])
        return None

    def _exposed(self, namespace: str) -> bool:
        return namespace in self.namespaces and (not self.exposed_only or namespace in self.exposed_only)

    def _service_node(self, labels: list[str]) -> _Node | None:
        if not labels:
            return _Node()
        if not self._exposed(labels[0]):
            return None
        if len(labels) == 1:
            return _Node()
        service = self.services.get((labels[1], labels[0]))
        if service is None or len(labels) > 3:
            return None
        if len(labels) == 3:
            return self._endpoint_node(service, labels[2])
        if service.type == "ExternalName":
            return _Node(cname=service.external_name)
        if service.type == "ClusterIP":
            return _Node(addresses=(cast(str, service.cluster_ip),))
        addresses = tuple(endpoint.ip for endpoint in service.endpoints)
        return _Node(addresses=addresses) if addresses else None

    @staticmethod
    def _endpoint_node(service: ServiceRecord, label: str) -> _Node | None:
        if service.type == "ExternalName":
            return None
        for endpoint in service.endpoints:
            if endpoint.label.lower() == label:
                return _Node(addresses=(endpoint.ip,))
        return None

    def _pod_node(self, labels: list[str]) -> _Node | None:
        if not labels:
            return _Node()
        if self.pod_mode == "disabled" or not self._exposed(labels[0]) or len(labels) > 2:
            return None
        if len(labels) == 1:
            return _Node()
        ip = _undashed(labels[1])
        if ip is None or (self.pod_mode == "verified" and (ip, labels[0]) not in self.pods):
            return None
        return _Node(addresses=(ip,))

    def _reverse_node(self, qname: dns.name.Name) -> _Node | None:
        try:
            ip = str(ipaddress.ip_address(dns.reversename.to_address(qname)))
        except (dns.exception.SyntaxError, ValueError):
            return None
        target = self.reverse.get(ip)
        return None if target is None else _Node(ptr=target)


def _is_reverse_zone(zone: dns.name.Name) -> bool:
    return zone.is_subdomain(dns.reversename.ipv4_reverse_domain) or zone.is_subdomain(
        dns.reversename.ipv6_reverse_domain
    )


# --------------------------------------------------------------------------- hosts


class _HostsPlugin:
    def __init__(
        self,
        zones: tuple[dns.name.Name, ...],
        entries: Mapping[dns.name.Name, tuple[str, ...]],
        ttl: int,
        reverse: bool,
        fallthrough: _Fallthrough,
    ) -> None:
        self.zones, self.entries, self.ttl, self.fallthrough = zones, entries, ttl, fallthrough
        self.ptr: dict[dns.name.Name, list[dns.name.Name]] = {}
        for name, addresses in entries.items() if reverse else ():
            for address in addresses:
                self.ptr.setdefault(dns.reversename.from_address(address), []).append(name)

    async def serve(self, query: _Query, next_plugin: _Next) -> dns.message.Message:
        if _most_specific(self.zones, query.qname) is None:
            return await next_plugin(query)
        answers = self._answers(query)
        if not answers and query.qname not in self.entries and query.qname not in self.ptr:
            if self.fallthrough.covers(query.qname):
                return await next_plugin(query)
            # CoreDNS hosts has no SOA to give, so it answers SERVFAIL rather than NXDOMAIN.
            return _servfail(query, f"hosts: no entry for {query.qname}")
        response = _response(query, authoritative=True)
        response.answer.extend(answers)
        return response

    def _answers(self, query: _Query) -> list[dns.rrset.RRset]:
        if query.qtype == dns.rdatatype.PTR and query.qname in self.ptr:
            targets = [name.to_text() for name in self.ptr[query.qname]]
            return [dns.rrset.from_text(query.qname, self.ttl, "IN", "PTR", *targets)]
        return _address_rrsets(query.qname, self.ttl, self.entries.get(query.qname, ()), query.qtype)


class _LighthousePlugin:
    """Submariner Lighthouse's answers for clusterset.local, from the records' `clusterset` map
    (the provider computes which names exist and their global IPs). Like Lighthouse, a name it
    does not know is NXDOMAIN without an SOA."""

    def __init__(self, zones: tuple[dns.name.Name, ...], entries: Mapping[dns.name.Name, tuple[str, ...]]) -> None:
        self.zones, self.entries = zones, entries

    async def serve(self, query: _Query, next_plugin: _Next) -> dns.message.Message:
        if _most_specific(self.zones, query.qname) is None:
            return await next_plugin(query)
        if query.qname not in self.entries:
            return _response(query, dns.rcode.NXDOMAIN, authoritative=True)
        response = _response(query, authoritative=True)
        response.answer.extend(_address_rrsets(query.qname, LIGHTHOUSE_TTL, self.entries[query.qname], query.qtype))
        return response


# --------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class _CacheEntry:
    wire: bytes
    stored: float
    expires: float


_CacheKey = tuple[dns.name.Name, int, int, bool, bool]


class _CachePlugin:
    """Positive and negative cache; `disable success|denial ZONES` honoured."""

    def __init__(
        self,
        zones: tuple[dns.name.Name, ...],
        success_ttl: int,
        denial_ttl: int,
        no_success: tuple[dns.name.Name, ...] | None,
        no_denial: tuple[dns.name.Name, ...] | None,
    ) -> None:
        self.zones, self.success_ttl, self.denial_ttl = zones, success_ttl, denial_ttl
        self.no_success, self.no_denial = no_success, no_denial
        self.entries: dict[_CacheKey, _CacheEntry] = {}

    async def serve(self, query: _Query, next_plugin: _Next) -> dns.message.Message:
        if _most_specific(self.zones, query.qname) is None:
            return await next_plugin(query)
        request = query.request
        key: _CacheKey = (query.qname, query.qtype, request.question[0].rdclass,
                          bool(request.ednsflags & dns.flags.DO), bool(request.flags & dns.flags.CD))
        now = time.monotonic()
        entry = self.entries.get(key)
        if entry is not None and entry.expires > now:
            return _from_cache(request, entry, now)
        response = await next_plugin(query)
        self._store(key, response, now)
        return response

    def _store(self, key: _CacheKey, response: dns.message.Message, now: float) -> None:
        ttl = self._ttl(key[0], response)
        if ttl <= 0:
            return
        try:
            wire = response.to_wire()
        except dns.exception.TooBig:
            return
        if len(self.entries) >= CACHE_CAPACITY:
            self.entries.pop(next(iter(self.entries)))
        self.entries[key] = _CacheEntry(wire, now, now + ttl)

    def _ttl(self, name: dns.name.Name, response: dns.message.Message) -> int:
        if response.flags & dns.flags.TC:
            return 0
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR and response.answer:
            if _disabled(self.no_success, name):
                return 0
            return min([self.success_ttl, *(rrset.ttl for rrset in response.answer)])
        if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) and not _disabled(self.no_denial, name):
            soa = [r for r in response.authority if r.rdtype == dns.rdatatype.SOA]
            if soa:
                return min(self.denial_ttl, soa[0].ttl, int(cast(Any, soa[0][0]).minimum))
        return 0


def _disabled(zones: tuple[dns.name.Name, ...] | None, name: dns.name.Name) -> bool:
    return zones is not None and (not zones or _most_specific(zones, name) is not None)


def _from_cache(request: dns.message.Message, entry: _CacheEntry, now: float) -> dns.message.Message:
    response = dns.message.from_wire(entry.wire)
    response.id = request.id
    response.question = list(request.question)
    response.flags = (response.flags & ~int(dns.flags.RD)) | (request.flags & int(dns.flags.RD))
    elapsed = int(now - entry.stored)
    for rrset in (*response.answer, *response.authority, *response.additional):
        rrset.ttl = max(0, rrset.ttl - elapsed)
    return response


# --------------------------------------------------------------------------- forward


@dataclass(frozen=True)
class _Upstream:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class _ForwardPlugin:
    def __init__(
        self,
        from_zone: dns.name.Name,
        upstreams: tuple[_Upstream, ...],
        unread_files: tuple[str, ...],
        timeout: float,
        excepted: tuple[dns.name.Name, ...] = (),
        transport: Transport | None = None,
        policy: str = "random",
    ) -> None:
        self.from_zone, self.upstreams, self.unread_files = from_zone, upstreams, unread_files
        self.timeout, self.excepted, self.transport, self.policy = timeout, excepted, transport, policy
        self.turn = 0

    async def serve(self, query: _Query, next_plugin: _Next) -> dns.message.Message:
        if not query.qname.is_subdomain(self.from_zone) or _most_specific(self.excepted, query.qname) is not None:
            return await next_plugin(query)
        if not self.upstreams:
            files = " ".join(self.unread_files)
            return _servfail(query, f"forward: no upstream for {query.qname}: the lab never reads {files} "
                                    "(traffic stays inside the lab)")
        wire = query.wire if query.wire is not None else query.request.to_wire()
        transport = self.transport or query.transport
        for upstream in self._in_policy_order():
            reply = await self._ask(query, upstream, wire, transport)
            if reply is not None:
                return reply
        return _response(query, dns.rcode.SERVFAIL)

    def _in_policy_order(self) -> list[_Upstream]:
        upstreams = list(self.upstreams)
        if self.policy == "random":
            random.shuffle(upstreams)
        elif self.policy == "round_robin":
            self.turn = (self.turn + 1) % len(upstreams)
            upstreams = upstreams[self.turn :] + upstreams[: self.turn]
        return upstreams

    async def _ask(
        self, query: _Query, upstream: _Upstream, wire: bytes, transport: Transport
    ) -> dns.message.Message | None:
        try:
            reply = dns.message.from_wire(await _exchange(wire, upstream, transport, self.timeout))
            if reply.flags & dns.flags.TC and query.wire is None and transport == "udp":
                reply = dns.message.from_wire(await _exchange(wire, upstream, "tcp", self.timeout))
            return reply
        except TimeoutError:
            query.errors.append(f"forward: {upstream}/{transport}: no answer within {self.timeout:g}s")
        except (OSError, EOFError, dns.exception.DNSException) as err:
            query.errors.append(f"forward: {upstream}/{transport}: {err or type(err).__name__}")
        return None


class _UdpReply(asyncio.DatagramProtocol):
    def __init__(self, query_id: bytes, reply: asyncio.Future[bytes]) -> None:
        self.query_id, self.reply = query_id, reply

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if data[:2] == self.query_id and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _exchange(wire: bytes, upstream: _Upstream, transport: Transport, timeout: float) -> bytes:
    async with asyncio.timeout(timeout):
        if transport == "tcp":
            return await _exchange_tcp(wire, upstream)
        return await _exchange_udp(wire, upstream)


async def _exchange_udp(wire: bytes, upstream: _Upstream) -> bytes:
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[bytes] = loop.create_future()
    sender, _ = await loop.create_datagram_endpoint(
        lambda: _UdpReply(wire[:2], reply), remote_addr=(upstream.host, upstream.port)
    )
    try:
        sender.sendto(wire)
        return await reply
    finally:
        sender.close()


async def _exchange_tcp(wire: bytes, upstream: _Upstream) -> bytes:
    reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
    try:
        writer.write(len(wire).to_bytes(2, "big") + wire)
        await writer.drain()
        length = int.from_bytes(await reader.readexactly(2), "big")
        return await reader.readexactly(length)
    finally:
        writer.close()


# --------------------------------------------------------------------------- Corefile -> plugins


@dataclass(frozen=True)
class _Block:
    zones: tuple[dns.name.Name, ...]
    plugins: tuple[_Plugin, ...]
    log_errors: bool


@dataclass(frozen=True)
class _Runtime:
    """One loaded configuration: the server blocks (with fresh caches) and their port."""

    blocks: tuple[_Block, ...]
    port: int

    def block_for(self, qname: dns.name.Name) -> _Block | None:
        best: tuple[int, _Block] | None = None
        for block in self.blocks:
            zone = _most_specific(block.zones, qname)
            if zone is not None and (best is None or len(zone) > best[0]):
                best = (len(zone), block)
        return None if best is None else best[1]


class _BlockBuilder:
    """Turns the parsed Corefile's server blocks into plugin chains, checking every option."""

    def __init__(self, source: Path, records: ClusterRecords, forward_timeout: float) -> None:
        self.source, self.records, self.forward_timeout = source, records, forward_timeout
        self.serial = int(time.time())

    def error(self, line: int, problem: str, fix: str) -> LabDnsConfigError:
        return _config_error(self.source, line, problem, fix)

    def block(self, server: ServerBlock) -> _Block:
        if server.transport != "dns":
            raise self.error(server.line, f"{server.transport}:// server blocks are not served by the lab DNS",
                             "serve the zone over plain DNS (no scheme, or dns://)")
        zones = tuple(dns.name.from_text(zone) for zone in server.zones)
        self._refuse_unknown_and_doubled(server)
        plugins: list[_Plugin] = []
        for name in _PLUGIN_ORDER:
            plugins.extend(self.plugin(zones, d) for d in server.plugins(name))
        return _Block(zones, tuple(plugins), bool(server.plugins("errors")))

    def _refuse_unknown_and_doubled(self, server: ServerBlock) -> None:
        first_line: dict[str, int] = {}
        for directive in server.directives:
            if directive.name not in KNOWN_PLUGINS:
                raise self.error(
                    directive.line,
                    f"unknown plugin {directive.name!r} (the lab DNS knows {', '.join(sorted(KNOWN_PLUGINS))})",
                    "remove it from the Corefile or teach crossnet/providers/lab/dns.py the plugin",
                )
            if directive.name in first_line:
                first = first_line[directive.name]
                raise self.error(directive.line, f"plugin {directive.name!r} is already used at line {first} "
                                 "of this server block", "keep one of the two")
            first_line[directive.name] = directive.line

    def plugin(self, zones: tuple[dns.name.Name, ...], directive: Directive) -> _Plugin:
        if directive.name == "cache":
            return self.cache(zones, directive)
        if directive.name == "hosts":
            return self.hosts(zones, directive)
        if directive.name == "kubernetes":
            return self.kubernetes(zones, directive)
        if directive.name == "lighthouse":
            return _LighthousePlugin(zones, {dns.name.from_text(n): a for n, a in self.records.clusterset})
        return self.forward(directive)

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
            raise self.error(option.line, f"{option.name} needs a number from {low} to {high}, got {text!r}",
                             f"write e.g. '{option.name} {max(low, min(high, 30))}'")
        return int(text)

    def unknown_option(self, plugin: str, option: Directive) -> LabDnsConfigError:
        return self.error(option.line, f"unknown {plugin} option {option.name!r}",
                          f"remove it or check the CoreDNS {plugin} plugin documentation")

    def fallthrough(self, option: Directive) -> _Fallthrough:
        return _Fallthrough(True, self.zones(option.args, option.line))

    def kubernetes(self, server_zones: tuple[dns.name.Name, ...], directive: Directive) -> _KubernetesPlugin:
        zones = self.zones(directive.args, directive.line) if directive.args else server_zones
        ttl, pod_mode, fallthrough, namespaces = DEFAULT_KUBERNETES_TTL, "disabled", _Fallthrough(), frozenset[str]()
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
        return _KubernetesPlugin(zones, self.records, ttl, pod_mode, fallthrough, namespaces, self.serial)

    def choice(self, option: Directive, choices: tuple[str, ...]) -> str:
        if len(option.args) != 1 or option.args[0] not in choices:
            given = " ".join(option.args)
            raise self.error(option.line, f"{option.name} takes one of {', '.join(choices)}, got {given!r}",
                             f"write e.g. '{option.name} {choices[0]}'")
        return option.args[0]

    def cache(self, server_zones: tuple[dns.name.Name, ...], directive: Directive) -> _CachePlugin:
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
        return _CachePlugin(zones, success, denial, no_success, no_denial)

    def hosts(self, server_zones: tuple[dns.name.Name, ...], directive: Directive) -> _HostsPlugin:
        entries: dict[dns.name.Name, tuple[str, ...]] = {}
        if directive.args and directive.args[0] != "/etc/hosts":  # the host's own file is never read
            self.add_hosts_file(entries, directive.args[0], directive.line)
        zones = self.zones(directive.args[1:], directive.line) or server_zones
        ttl, reverse, fallthrough = 3600, True, _Fallthrough()
        for option in directive.block:
            if _is_ip(option.name):
                self.add_host_entry(entries, option.name, option.args, option.line)
            elif option.name == "ttl":
                ttl = self.integer(option, 0, 2**31 - 1)
            elif option.name == "no_reverse":
                reverse = False
            elif option.name == "fallthrough":
                fallthrough = self.fallthrough(option)
            elif option.name != "reload":
                raise self.unknown_option("hosts", option)
        return _HostsPlugin(zones, entries, ttl, reverse, fallthrough)

    def add_hosts_file(self, entries: dict[dns.name.Name, tuple[str, ...]], name: str, line: int) -> None:
        path = self.source.parent / name
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise self.error(line, f"cannot read hosts file {path} ({err.strerror})", "fix the path") from None
        for number, row in enumerate(text.splitlines(), 1):
            words = row.split("#", 1)[0].split()
            if words and _is_ip(words[0]):
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

    def forward(self, directive: Directive) -> _ForwardPlugin:
        if len(directive.args) < 2:
            raise self.error(directive.line, "forward needs a zone and at least one target",
                             "write e.g. 'forward . 10.20.0.3:53'")
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
        return _ForwardPlugin(from_zone, upstreams, files, self.forward_timeout, excepted, transport, policy)

    def forward_targets(self, targets: Sequence[str], line: int) -> tuple[tuple[_Upstream, ...], tuple[str, ...]]:
        upstreams: list[_Upstream] = []
        files: list[str] = []
        for target in targets:
            if target.startswith(("/", "./", "../")):
                files.append(target)  # e.g. /etc/resolv.conf: never read, the lab stays closed
                continue
            upstream = _parse_upstream(target.removeprefix("dns://"))
            if upstream is None:
                raise self.error(line, f"forward target {target!r} is not an IP, IP:port or /etc/resolv.conf",
                                 "the lab DNS forwards over plain DNS to IPs only, e.g. 10.20.0.3:53")
            upstreams.append(upstream)
        return tuple(upstreams), tuple(files)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _parse_upstream(text: str) -> _Upstream | None:
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else (rest or "53")
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not _is_ip(host) or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return _Upstream(str(ipaddress.ip_address(host)), int(port))


def _load_runtime(corefile: Path, records_path: Path, forward_timeout: float) -> _Runtime:
    records = load_records(records_path)
    text = _read_text(corefile, "Corefile", "pass --corefile with the Corefile the lab wrote")
    try:
        parsed = parse_corefile(text, str(corefile))
    except CorefileError as err:
        raise LabDnsConfigError(str(err)) from None
    if not parsed.servers:
        raise LabDnsConfigError(f"{corefile}:1: the Corefile has no server block; add one, e.g. '.:53 {{ ... }}'")
    ports = sorted({server.port for server in parsed.servers})
    if len(ports) > 1:
        raise _config_error(corefile, parsed.servers[0].line, f"server blocks use ports {ports}, but the lab DNS "
                            "serves one", "give every server block the same port (53)")
    builder = _BlockBuilder(corefile, records, forward_timeout)
    return _Runtime(tuple(builder.block(server) for server in parsed.servers), ports[0])


# --------------------------------------------------------------------------- the server


class _FileWatcher:
    """Says when any of some files changed (mtime, size or inode), looking at most every
    RELOAD_CHECK_INTERVAL seconds."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = paths
        self.stamps = self._stamps()
        self.checked = time.monotonic()

    def _stamps(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self.paths:
            try:
                status = path.stat()
            except OSError:
                stamps.append(None)
                continue
            stamps.append((status.st_mtime_ns, status.st_size, status.st_ino))
        return tuple(stamps)

    def changed(self) -> bool:
        now = time.monotonic()
        if now - self.checked < RELOAD_CHECK_INTERVAL:
            return False
        self.checked = now
        stamps = self._stamps()
        if stamps == self.stamps:
            return False
        self.stamps = stamps
        return True


class _UdpService(asyncio.DatagramProtocol):
    def __init__(self, server: LabDnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.server.spawn(self.reply(data, addr))

    async def reply(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        answer = await self.server.answer_wire(data, "udp")
        if answer is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(answer, addr)


class LabDnsServer:
    """One cluster's DNS server, in process. `port=None` serves the Corefile's port; `port=0`
    an ephemeral one (UDP and TCP on the same number). Raises LabDnsConfigError at once when
    the Corefile or records file cannot be served."""

    def __init__(
        self,
        corefile_path: str | Path,
        records_path: str | Path,
        listen: str = "127.0.0.1",
        port: int | None = None,
        forward_timeout: float = FORWARD_TIMEOUT,
    ) -> None:
        self.corefile_path, self.records_path = Path(corefile_path), Path(records_path)
        self.listen, self.requested_port, self.forward_timeout = listen, port, forward_timeout
        self._watcher = _FileWatcher((self.corefile_path, self.records_path))
        self._runtime = _load_runtime(self.corefile_path, self.records_path, forward_timeout)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port: int | None = None
        """The port bound by start() (UDP and TCP)."""

    @property
    def configured_port(self) -> int:
        """The port start() binds: --port / `port` if given, else the Corefile's."""
        return self._runtime.port if self.requested_port is None else self.requested_port

    async def start(self) -> int:
        """Bind UDP and TCP; returns the port (the same for both)."""
        wanted = self.configured_port
        attempts = 20 if wanted == 0 else 1
        for attempt in range(attempts):
            udp = await self._bind_udp(wanted)
            port = int(udp.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.listen, port)
            except OSError:
                udp.close()
                if attempt == attempts - 1:
                    raise
                continue
            self._udp, self.port = udp, port
            return port
        raise AssertionError("unreachable")

    async def _bind_udp(self, port: int) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpService(self), local_addr=(self.listen, port))
        return transport

    async def stop(self) -> None:
        """Stop listening, close client connections and finish in-flight queries."""
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()
        self._udp = self._tcp = None

    async def __aenter__(self) -> LabDnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resolve(self, request: dns.message.Message, transport: Transport = "udp") -> dns.message.Message:
        """Answer a query in process, as a client on `transport` would get it (no truncation)."""
        self._reload_if_changed()
        return await self._answer_request(request, request.to_wire(), transport)

    async def answer_wire(self, wire: bytes, transport: Transport) -> bytes | None:
        """Answer a query's bytes with the reply's bytes (truncated with TC to fit UDP)."""
        self._reload_if_changed()
        try:
            request = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError, IndexError):  # malformed: FORMERR if it has a header
            return _format_error(wire)
        if request.flags & dns.flags.QR:
            return None
        response = await self._answer_request(request, wire, transport)
        return _render(request, response, transport)

    async def _answer_request(
        self, request: dns.message.Message, wire: bytes, transport: Transport
    ) -> dns.message.Message:
        query = _Query(request, wire, transport, self._resolve)
        if request.opcode() != dns.opcode.QUERY:
            return _response(query, dns.rcode.NOTIMP)
        if len(request.question) != 1:
            return _response(query, dns.rcode.FORMERR)
        try:
            return await self._resolve(query)
        except Exception:  # noqa: BLE001 -- a bug in a plugin must cost one SERVFAIL, not the server
            _log(f"[ERROR] {query.qname} {dns.rdatatype.to_text(query.qtype)}: {traceback.format_exc()}")
            return _response(query, dns.rcode.SERVFAIL)

    async def _resolve(self, query: _Query) -> dns.message.Message:
        block = self._runtime.block_for(query.qname)
        if block is None:
            return _response(query, dns.rcode.REFUSED)
        response = await _Chain(block.plugins)(query)
        if block.log_errors:
            rcode = dns.rcode.to_text(response.rcode())
            for error in query.errors:
                _log(f"[ERROR] plugin/errors: {rcode} {query.qname} {dns.rdatatype.to_text(query.qtype)}: {error}")
        return response

    def _reload_if_changed(self) -> None:
        if not self._watcher.changed():
            return
        try:
            runtime = _load_runtime(self.corefile_path, self.records_path, self.forward_timeout)
        except LabDnsConfigError as err:
            _log(f"[ERROR] plugin/reload: {err} (keeping the previous configuration)")
            return
        if self.requested_port is None and self.port is not None and runtime.port != self.port:
            _log(f"[WARNING] plugin/reload: the Corefile now asks for port {runtime.port}; still serving "
                 f"port {self.port} until the lab DNS is restarted")
        self._runtime = runtime
        _log("[INFO] plugin/reload: reloaded the Corefile and records")

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    length = int.from_bytes(await reader.readexactly(2), "big")
                    wire = await reader.readexactly(length)
                answer = await self.answer_wire(wire, "tcp")
                if answer is not None:
                    writer.write(len(answer).to_bytes(2, "big") + answer)
                    await writer.drain()
        except (EOFError, OSError, TimeoutError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def _render(request: dns.message.Message, response: dns.message.Message, transport: Transport) -> bytes:
    if request.edns < 0 and response.edns >= 0:
        response.use_edns(False)
    elif request.edns >= 0 and response.edns < 0:
        response.use_edns(0, payload=EDNS_PAYLOAD)
    limit = 65535 if transport == "tcp" else (max(512, request.payload) if request.edns >= 0 else 512)
    return response.to_wire(max_size=limit, prefer_truncation=True)


def _format_error(wire: bytes) -> bytes | None:
    if len(wire) < 12 or wire[2] & 0x80:
        return None
    flags = bytes([0x80 | (wire[2] & 0x78), 0x80 | int(dns.rcode.FORMERR)])
    return wire[:2] + flags + bytes(8)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- command line


_EPILOG = """\
records file (JSON):
  {"services": [{"name": "echo", "namespace": "crossnet",
                 "type": "ClusterIP" | "Headless" | "ExternalName",
                 "cluster_ip": "10.40.0.100" | null,
                 "external_name": "echo.crossnet.svc.cluster-1.com" | null,
                 "ports": [["tcp", 8080], ["udp", 8080]],
                 "endpoints": [{"ip": "10.10.1.2", "hostname": "agent-worker"}]}],
   "pods": [{"ip": "10.10.1.2", "namespace": "crossnet"}]}

plugins: errors cache hosts kubernetes forward (+ no-ops: health ready prometheus loop reload
loadbalance log); any other plugin is an error. forward never reads /etc/resolv.conf.

exit status: 0 after SIGTERM/SIGINT, 1 if the address cannot be bound, 2 if the Corefile or
the records file cannot be served (the message names the file, the line and the fix).
"""


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m crossnet.providers.lab.dns",
        description="The crossnet lab's cluster DNS server: serves a Corefile (the subset of CoreDNS "
        "kind clusters use) over UDP and TCP, answering the kubernetes plugin from a records file.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--corefile", required=True, type=Path, metavar="PATH", help="the Corefile to serve")
    parser.add_argument("--records", required=True, type=Path, metavar="PATH",
                        help="the records JSON the kubernetes plugin answers from")
    parser.add_argument("--ready", type=Path, metavar="PATH",
                        help="create this file (atomically, JSON with pid/listen/port) once listening; "
                        "removed on exit")
    parser.add_argument("--listen", default="0.0.0.0", metavar="ADDR", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, metavar="N",
                        help="port to bind instead of the Corefile's (0: any free port)")
    parser.add_argument("--forward-timeout", type=float, default=FORWARD_TIMEOUT, metavar="SECONDS",
                        help="per-upstream forward timeout (default: %(default)s)")
    return parser.parse_args(argv)


def _write_ready_file(path: Path, listen: str, port: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"pid": os.getpid(), "listen": listen, "port": port}) + "\n", encoding="utf-8")
    os.rename(temporary, path)


async def _serve_until_signalled(server: LabDnsServer, ready: Path | None) -> int:
    try:
        port = await server.start()
    except OSError as err:
        _log(f"crossnet lab dns: cannot listen on {server.listen} port {server.configured_port}: "
             f"{err.strerror or err}; check that --listen is an address of this host and that the port is "
             "free, or pass --port")
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        _write_ready_file(ready, server.listen, port)
    _log(f"[INFO] crossnet lab dns: serving {server.corefile_path} on {server.listen}:{port} (udp, tcp)")
    try:
        await stop.wait()
    finally:
        await server.stop()
        if ready is not None:
            ready.unlink(missing_ok=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; returns the exit status (see --help)."""
    args = _arguments(argv)
    try:
        server = LabDnsServer(args.corefile, args.records, args.listen, args.port, args.forward_timeout)
    except LabDnsConfigError as err:
        _log(f"crossnet lab dns: {err}")
        return 2
    return asyncio.run(_serve_until_signalled(server, args.ready))


if __name__ == "__main__":
    raise SystemExit(main())
