"""The records file: what the lab provider writes for a cluster's DNS (what the Kubernetes API
holds on kind), the one definition of its format, and its validating reader."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import dns.exception
import dns.name

__all__ = [
    "RECORDS_FORMAT",
    "ClusterRecords",
    "EndpointRecord",
    "ImportEndpointRecord",
    "ImportPortRecord",
    "LabDnsConfigError",
    "PodRecord",
    "ServiceImportRecord",
    "ServiceRecord",
    "load_records",
]

RECORDS_FORMAT = """\
records file (JSON, written by the lab provider):
  {"services": [{"name": "echo", "namespace": "crossnet",
                 "type": "ClusterIP" | "Headless" | "ExternalName",
                 "cluster_ip": "10.40.0.100" | null,
                 "external_name": "echo.crossnet.svc.cluster-1.com" | null,
                 "endpoints": [{"ip": "10.10.1.2", "hostname": "agent-worker" | null}]}],
   "pods": [{"ip": "10.10.1.2", "namespace": "crossnet"}],
   "clusterset": {"echo.crossnet.svc.clusterset.local": ["242.0.255.253"]},
   "serviceimports": [{"name": "echo", "namespace": "crossnet",
                       "type": "ClusterSetIP" | "Headless",
                       "ips": ["10.41.0.200"],
                       "ports": [["tcp", 8080, "echo"], ["udp", 8080]],
                       "endpoints": [{"ip": "10.10.1.2", "hostname": "agent-worker" | null,
                                      "cluster": "mcs-1"}]}]}
  Every top-level key may be left out. `clusterset` is what the lighthouse plugin answers,
  `serviceimports` what the multicluster plugin answers (a port is [protocol, port] or
  [protocol, port, name]; `ips` is the ClusterSetIP's, `endpoints` a Headless import's pods).
  Other keys (e.g. a service's "ports": the kubernetes plugin serves no SRV records) are ignored.
"""
"""The records file format: the one definition (shown by --help)."""

ServiceType = Literal["ClusterIP", "Headless", "ExternalName"]
_SERVICE_TYPES: tuple[ServiceType, ...] = ("ClusterIP", "Headless", "ExternalName")
ImportType = Literal["ClusterSetIP", "Headless"]
_IMPORT_TYPES: tuple[ImportType, ...] = ("ClusterSetIP", "Headless")
_PROTOCOLS = ("tcp", "udp", "sctp")


class LabDnsConfigError(ValueError):
    """A Corefile or records file the lab DNS cannot serve. The message names the file, the
    line (or the JSON field) and the fix."""


def config_error(source: str | Path, line: int, problem: str, fix: str) -> LabDnsConfigError:
    return LabDnsConfigError(f"{source}:{line}: {problem}; {fix}")


def read_text(path: Path, what: str, fix: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise LabDnsConfigError(f"{path}: cannot read the {what} ({err.strerror}); {fix}") from None


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class EndpointRecord:
    ip: str
    hostname: str | None = None

    @property
    def label(self) -> str:
        """The endpoint's name under its service: its hostname, or its IP with dashes."""
        return self.hostname or self.ip.replace(".", "-").replace(":", "-")


@dataclass(frozen=True)
class ServiceRecord:
    name: str
    namespace: str
    type: ServiceType
    cluster_ip: str | None = None
    external_name: str | None = None
    endpoints: tuple[EndpointRecord, ...] = ()


@dataclass(frozen=True)
class PodRecord:
    ip: str
    namespace: str


@dataclass(frozen=True)
class ImportPortRecord:
    protocol: str  # tcp | udp | sctp
    port: int
    name: str = ""


@dataclass(frozen=True)
class ImportEndpointRecord:
    ip: str
    cluster: str
    hostname: str | None = None

    @property
    def label(self) -> str:
        """The endpoint's name under its cluster: its hostname, or its IP with dashes."""
        return self.hostname or self.ip.replace(".", "-").replace(":", "-")


@dataclass(frozen=True)
class ServiceImportRecord:
    """An MCS ServiceImport (what the multicluster plugin answers from)."""

    name: str
    namespace: str
    type: ImportType
    ips: tuple[str, ...] = ()
    ports: tuple[ImportPortRecord, ...] = ()
    endpoints: tuple[ImportEndpointRecord, ...] = ()


@dataclass(frozen=True)
class ClusterRecords:
    """What the kubernetes plugin answers from (what the API server holds on kind)."""

    services: tuple[ServiceRecord, ...] = ()
    pods: tuple[PodRecord, ...] = ()
    # For the lighthouse plugin: clusterset.local names -> global IPs, as Lighthouse would answer.
    clusterset: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # For the multicluster plugin: the MCS ServiceImports of the cluster set.
    serviceimports: tuple[ServiceImportRecord, ...] = ()

    @classmethod
    def from_json(cls, data: object, source: str = "records") -> ClusterRecords:
        """Validate and read the records JSON; raises LabDnsConfigError naming the field."""
        reader = _RecordsReader(source)
        document = reader.mapping(data, "top level")
        services = reader.items(document, "services")
        pods = reader.items(document, "pods")
        imports = reader.items(document, "serviceimports")
        clusterset = document.get("clusterset") or {}
        if not isinstance(clusterset, dict):
            raise reader.error("clusterset", "must map names to lists of IP addresses")
        entries = []
        for name, addresses in sorted(clusterset.items()):
            if not isinstance(addresses, list) or not all(isinstance(a, str) and is_ip(a) for a in addresses):
                raise reader.error(f"clusterset[{name!r}]", "must be a list of IP addresses")
            entries.append((str(name).lower().rstrip(".") + ".", tuple(addresses)))
        return cls(
            services=tuple(reader.service(item, f"services[{i}]") for i, item in enumerate(services)),
            pods=tuple(reader.pod(item, f"pods[{i}]") for i, item in enumerate(pods)),
            clusterset=tuple(entries),
            serviceimports=tuple(reader.service_import(item, f"serviceimports[{i}]") for i, item in enumerate(imports)),
        )


def load_records(path: str | Path) -> ClusterRecords:
    """Read and validate a records file; raises LabDnsConfigError naming the file and field."""
    text = read_text(Path(path), "records file", "pass --records with the file the lab wrote")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise config_error(path, err.lineno, f"invalid JSON ({err.msg})", "fix the records file") from None
    return ClusterRecords.from_json(data, str(path))


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
        if value is not None and not is_ip(value):
            raise self.error(f"{where}.{key}", f"{value!r} is not an IP address")
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
        return ServiceRecord(
            name=cast(str, self.text(item, "name", where)),
            namespace=cast(str, self.text(item, "namespace", where)),
            type=cast(ServiceType, kind),
            cluster_ip=self.ip(item, "cluster_ip", where, optional=kind != "ClusterIP"),
            external_name=self.dns_name(item, "external_name", where, optional=kind != "ExternalName"),
            endpoints=self.endpoints(item.get("endpoints", []), f"{where}.endpoints"),
        )

    def endpoints(self, value: object, where: str) -> tuple[EndpointRecord, ...]:
        if not isinstance(value, list):
            raise self.error(where, 'expected a list of {"ip": ..., "hostname": ...} objects')
        endpoints = []
        for i, entry in enumerate(value):
            item = self.mapping(entry, f"{where}[{i}]")
            ip = cast(str, self.ip(item, "ip", f"{where}[{i}]"))
            endpoints.append(EndpointRecord(ip, self.text(item, "hostname", f"{where}[{i}]", optional=True)))
        return tuple(endpoints)

    def pod(self, value: object, where: str) -> PodRecord:
        item = self.mapping(value, where)
        return PodRecord(cast(str, self.ip(item, "ip", where)), cast(str, self.text(item, "namespace", where)))

    def service_import(self, value: object, where: str) -> ServiceImportRecord:
        item = self.mapping(value, where)
        kind = item.get("type")
        if kind not in _IMPORT_TYPES:
            raise self.error(f"{where}.type", f"{kind!r} is not one of {', '.join(_IMPORT_TYPES)}")
        ips = item.get("ips") or []
        if not isinstance(ips, list) or not all(isinstance(ip, str) and is_ip(ip) for ip in ips):
            raise self.error(f"{where}.ips", "must be a list of IP addresses")
        if kind == "ClusterSetIP" and not ips:
            raise self.error(f"{where}.ips", "a ClusterSetIP import needs its IP")
        endpoints = item.get("endpoints") or []
        if not isinstance(endpoints, list):
            raise self.error(f"{where}.endpoints", 'expected a list of {"ip", "hostname", "cluster"} objects')
        return ServiceImportRecord(
            name=cast(str, self.text(item, "name", where)),
            namespace=cast(str, self.text(item, "namespace", where)),
            type=cast(ImportType, kind),
            ips=tuple(str(ipaddress.ip_address(ip)) for ip in ips),
            ports=self.ports(item.get("ports") or [], f"{where}.ports"),
            endpoints=tuple(self.import_endpoint(e, f"{where}.endpoints[{i}]") for i, e in enumerate(endpoints)),
        )

    def ports(self, value: object, where: str) -> tuple[ImportPortRecord, ...]:
        if not isinstance(value, list):
            raise self.error(where, "expected a list of [protocol, port] or [protocol, port, name]")
        ports = []
        for i, entry in enumerate(value):
            valid = isinstance(entry, list) and len(entry) in (2, 3) and str(entry[0]).lower() in _PROTOCOLS
            valid = valid and isinstance(entry[1], int) and not isinstance(entry[1], bool) and 0 < entry[1] < 65536
            valid = valid and (len(entry) == 2 or isinstance(entry[2], str))
            if not valid:
                expected = "[tcp|udp|sctp, port] or [tcp|udp|sctp, port, name]"
                raise self.error(f"{where}[{i}]", f"{entry!r} is not {expected}")
            ports.append(ImportPortRecord(str(entry[0]).lower(), entry[1], entry[2] if len(entry) == 3 else ""))
        return tuple(ports)

    def import_endpoint(self, value: object, where: str) -> ImportEndpointRecord:
        item = self.mapping(value, where)
        return ImportEndpointRecord(
            ip=str(ipaddress.ip_address(cast(str, self.ip(item, "ip", where)))),
            cluster=cast(str, self.text(item, "cluster", where)),
            hostname=self.text(item, "hostname", where, optional=True),
        )
