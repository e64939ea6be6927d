"""What crossnet asks of one existing cluster, over one narrow REST seam.

`KubeApi` is the whole seam: `request(method, path, query, body)` -> decoded JSON, and `exec` for
the opt-in node evidence. `client.ClientKubeApi` implements it on the kubernetes client from a
kubeconfig context; the tests implement it as an in-memory API server that enforces exactly the
RBAC `crossnet rbac` prints (tests/fake_kube.py). Everything else — the `KubeCluster` methods
kube_agents uses, and the reads discovery and preflight need — is `ExistingKube`, built on that
seam, so the paths, verbs and bodies sent are the ones the tests see.

Every value read from the API is validated before use: names as DNS-1123, addresses and CIDRs
parsed (IPv4; others are left out), ports in range. `write_configmap_key` and `label_node` refuse:
on clusters crossnet did not make it changes nothing outside its own namespace.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from crossnet.providers.base import SAFE_NAME, ProviderError
from crossnet.providers.kind.kube import KubeNode, KubePod, KubeService, conflict_error, describe

__all__ = [
    "CONTROL_PLANE_LABELS",
    "GATEWAY_LABEL",
    "REQUEST_TIMEOUT",
    "ApiError",
    "ExistingKube",
    "KubeApi",
    "NodeInfo",
    "api_path",
    "checked_cidr",
    "checked_ip",
    "checked_name",
]

REQUEST_TIMEOUT = 30.0
GATEWAY_LABEL = "submariner.io/gateway"
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
_PLURALS = {"NetworkPolicy": "networkpolicies", "ServiceExport": "serviceexports"}


class ApiError(ProviderError):
    """The API server answered with an error status (`status` 403, 404, 409, 422, ...)."""

    def __init__(self, context: str, what: str, status: int, reason: str, message: str = "") -> None:
        self.status, self.reason, self.api_message = status, reason, message
        detail = f": {message[:400]}" if message else ""
        super().__init__(f"{context}: {what}: the API server said {status} {reason}{detail}")


class KubeApi(Protocol):
    """One kubeconfig context's API server, as REST."""

    context: str

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
        raw: bool = False,
    ) -> Any:
        """The decoded JSON answer (`raw`: the text); ApiError on an error status, ProviderError
        when the server cannot be reached."""
        ...

    def exec(self, namespace: str, pod: str, argv: list[str], timeout: float) -> tuple[int, str, str]: ...


def checked_name(value: Any, what: str) -> str:
    """`value` when it is a DNS-1123 name (what node, namespace and pod names are), else an error."""
    if not isinstance(value, str) or not SAFE_NAME.match(value):
        raise ProviderError(f"the API server gave {what} {str(value)[:80]!r}, which is not a DNS-1123 name")
    return value


def checked_ip(value: Any) -> str | None:
    """`value` as a canonical IPv4 address, or None when it is not one."""
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        return None
    return str(address) if isinstance(value, str) and address.version == 4 else None


def checked_cidr(value: Any) -> str | None:
    """`value` as a canonical IPv4 network, or None when it is not one."""
    try:
        network = ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        return None
    return str(network) if isinstance(value, str) and network.version == 4 else None


def api_path(api_version: str, plural: str, namespace: str | None = None, name: str = "") -> str:
    """`/api/v1/...` for the core group, `/apis/<group>/<version>/...` otherwise."""
    base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    where = f"/namespaces/{quote(namespace)}" if namespace else ""
    return f"{base}{where}/{plural}" + (f"/{quote(name, safe=':')}" if name else "")


def _plural(kind: str) -> str:
    return _PLURALS.get(kind, kind.lower() + "s")


def manifest_path(manifest: Mapping[str, Any], with_name: bool = False) -> str:
    meta = manifest["metadata"]
    return api_path(
        manifest["apiVersion"], _plural(manifest["kind"]), meta.get("namespace"), meta["name"] if with_name else ""
    )


def _items(data: Any) -> list[dict[str, Any]]:
    items = data.get("items") if isinstance(data, dict) else None
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _strings(value: Any) -> dict[str, str]:
    """A label or annotation map, keeping only string pairs."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


@dataclass(frozen=True)
class NodeInfo:
    """A node as discovery uses it (validated)."""

    name: str
    internal_ip: str  # "" when it has no IPv4 InternalIP (it then gets no agents)
    pod_cidrs: tuple[str, ...]  # spec.podCIDRs, IPv4 only; empty under Calico IPAM
    ready: bool
    control_plane: bool
    gateway: bool  # labelled submariner.io/gateway=true
    unschedulable: bool
    labels: tuple[tuple[str, str], ...] = ()

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


class ExistingKube:
    """`KubeCluster` (what kube_agents asks) on a `KubeApi`, plus the reads of discovery and preflight."""

    def __init__(self, name: str, api: KubeApi) -> None:
        self.name, self.api = name, api

    # ------------------------------------------------------------------ generic reads

    def get(self, path: str, what: str = "") -> dict[str, Any] | None:
        """The object at `path`, None when it does not exist (404)."""
        try:
            data = self.api.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return data if isinstance(data, dict) else None

    def list_objects(self, path: str, selector: str = "") -> list[dict[str, Any]]:
        return _items(self.api.request("GET", path, query=[("labelSelector", selector)] if selector else []))

    def version(self) -> str:
        data = self.api.request("GET", "/version")
        version = data.get("gitVersion") if isinstance(data, dict) else None
        return version if isinstance(version, str) and len(version) < 64 else "unknown"

    # ------------------------------------------------------------------ nodes

    def node_infos(self) -> list[NodeInfo]:
        result = []
        for node in self.list_objects("/api/v1/nodes"):
            meta, spec, status = _meta(node), node.get("spec") or {}, node.get("status") or {}
            labels = _strings(meta.get("labels"))
            addresses = [a for a in status.get("addresses") or [] if isinstance(a, dict)]
            ips = [checked_ip(a.get("address")) for a in addresses if a.get("type") == "InternalIP"]
            cidrs = [checked_cidr(c) for c in spec.get("podCIDRs") or [spec.get("podCIDR")] if c]
            conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
            result.append(
                NodeInfo(
                    name=checked_name(meta.get("name"), "a node named"),
                    internal_ip=next((ip for ip in ips if ip), ""),
                    pod_cidrs=tuple(dict.fromkeys(c for c in cidrs if c)),
                    ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions),
                    control_plane=any(k in labels for k in CONTROL_PLANE_LABELS),
                    gateway=labels.get(GATEWAY_LABEL) == "true",
                    unschedulable=spec.get("unschedulable") is True,
                    labels=tuple(sorted(labels.items())),
                )
            )
        return sorted(result, key=lambda n: n.name)

    def nodes(self) -> list[KubeNode]:
        return [
            KubeNode(n.name, n.internal_ip, (n.pod_cidrs or ("",))[0], n.ready, n.control_plane)
            for n in self.node_infos()
        ]

    def node_labels(self, name: str) -> dict[str, str]:
        node = self.get(api_path("v1", "nodes", name=name)) or {}
        return _strings(_meta(node).get("labels"))

    def label_node(self, name: str, labels: dict[str, str | None]) -> None:
        raise ProviderError(f"{self.name}: crossnet never labels nodes of a cluster it did not make")

    # ------------------------------------------------------------------ namespaced reads

    def pods(self, namespace: str, selector: str) -> list[KubePod]:
        result = []
        for pod in self.list_objects(api_path("v1", "pods", namespace), selector):
            meta, spec, status = _meta(pod), pod.get("spec") or {}, pod.get("status") or {}
            conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
            waiting = [
                str(((s.get("state") or {}).get("waiting") or {}).get("reason") or "")[:60]
                for s in status.get("containerStatuses") or []
                if isinstance(s, dict)
            ]
            node = spec.get("nodeName")
            result.append(
                KubePod(
                    checked_name(meta.get("name"), "a pod named"),
                    checked_name(node, "a node named") if node else "",
                    checked_ip(status.get("podIP")) or "",
                    any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions),
                    str(status.get("phase") or "")[:40],
                    ", ".join(w for w in waiting if w),
                )
            )
        return result

    def services(self, namespace: str) -> list[KubeService]:
        result = []
        for svc in self.list_objects(api_path("v1", "services", namespace)):
            meta, spec = _meta(svc), svc.get("spec") or {}
            ip = checked_ip(spec.get("clusterIP"))
            kind = str(spec.get("type") or "ClusterIP")
            if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
                continue
            if kind == "ClusterIP" and spec.get("clusterIP") == "None":
                kind = "Headless"
            ports = [p.get("nodePort") for p in spec.get("ports") or [] if isinstance(p, dict)]
            node_port = next((p for p in ports if type(p) is int and 0 < p < 65536), None)
            external = spec.get("externalName")
            result.append(
                KubeService(
                    checked_name(meta.get("name"), "a Service named"),
                    kind,
                    ip,
                    node_port,
                    external if isinstance(external, str) and SAFE_NAME.match(external.rstrip(".")) else None,
                )
            )
        return result

    def read_configmap(self, namespace: str, name: str) -> dict[str, str]:
        found = self.get(api_path("v1", "configmaps", namespace, name))
        if found is None:
            raise ApiError(self.api.context, f"read ConfigMap {namespace}/{name}", 404, "Not Found")
        return _strings(found.get("data"))

    def write_configmap_key(self, namespace: str, name: str, key: str, value: str) -> None:
        raise ProviderError(
            f"{self.name}: crossnet never writes ConfigMap {namespace}/{name} of a cluster it did not make"
        )

    def custom_objects(self, group: str, version: str, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        return self.list_objects(api_path(f"{group}/{version}", plural, namespace))

    def pod_log(self, namespace: str, pod: str, tail: int = 20) -> str:
        text = self.api.request(
            "GET", api_path("v1", "pods", namespace, pod) + "/log", query=[("tailLines", str(tail))], raw=True
        )
        return str(text)[:20000]

    # ------------------------------------------------------------------ namespaces

    def namespace(self, name: str) -> dict[str, Any] | None:
        return self.get(api_path("v1", "namespaces", name=name))

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        found = self.namespace(name)
        return None if found is None else _strings(_meta(found).get("labels"))

    def namespaces(self, selector: str) -> list[tuple[str, dict[str, str], dict[str, str]]]:
        """(name, labels, annotations) of the namespaces `selector` selects."""
        return [
            (
                checked_name(_meta(ns).get("name"), "a namespace named"),
                _strings(_meta(ns).get("labels")),
                _strings(_meta(ns).get("annotations")),
            )
            for ns in self.list_objects("/api/v1/namespaces", selector)
        ]

    def delete_namespace(self, name: str) -> None:
        try:
            self.api.request("DELETE", api_path("v1", "namespaces", name=name))
        except ApiError as exc:
            if exc.status != 404:
                raise

    def delete(self, manifest: Mapping[str, Any]) -> None:
        """Delete the object `manifest` names (404: already gone)."""
        try:
            self.api.request("DELETE", manifest_path(manifest, with_name=True))
        except ApiError as exc:
            if exc.status != 404:
                raise

    def delete_collection(self, api_version: str, plural: str, namespace: str, selector: str) -> None:
        """Delete the objects `selector` selects in `namespace` (a namespace crossnet did not make)."""
        if not selector:
            raise ProviderError("crossnet deletes a collection only by its own labels")
        self.api.request("DELETE", api_path(api_version, plural, namespace), query=[("labelSelector", selector)])

    # ------------------------------------------------------------------ writes (the run's own namespace only)

    def apply(self, manifests: list[dict[str, Any]]) -> None:
        """Create each object; a same-named one (409) is fine only when it is this run's own."""
        for manifest in manifests:
            try:
                self.api.request("POST", manifest_path(manifest), body=manifest)
            except ApiError as exc:
                if exc.status != 409:
                    raise ApiError(
                        self.api.context, f"create {describe(manifest)}", exc.status, exc.reason, exc.api_message
                    ) from None
                found = self.get(manifest_path(manifest, with_name=True)) or {}
                conflict = conflict_error(self.name, manifest, _strings(_meta(found).get("labels")))
                if conflict is not None:
                    raise conflict from None

    def dry_run_error(self, manifest: Mapping[str, Any]) -> ApiError | None:
        """Why the API server (RBAC, admission, quota) would refuse to create `manifest`, None when it
        would create it: a server-side dry run (`dryRun=All`), nothing is stored."""
        try:
            self.api.request("POST", manifest_path(manifest), query=[("dryRun", "All")], body=dict(manifest))
        except ApiError as exc:
            return exc
        return None

    def may(
        self, verb: str, group: str, resource: str, namespace: str = "", subresource: str = "", name: str = ""
    ) -> tuple[bool, str]:
        """(allowed, reason) from a SelfSubjectAccessReview (every authenticated user may create one)."""
        attributes = {"verb": verb, "group": group, "resource": resource}
        for key, value in (("namespace", namespace), ("subresource", subresource), ("name", name)):
            if value:
                attributes[key] = value
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        data = self.api.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review)
        status = data.get("status") if isinstance(data, dict) else None
        status = status if isinstance(status, dict) else {}
        return status.get("allowed") is True, str(status.get("reason") or "")[:200]

    # ------------------------------------------------------------------ agents

    def proxy_post(
        self,
        namespace: str,
        pod: str,
        port: int,
        path: str,
        body: dict[str, Any],
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        data = self.api.request(
            "POST",
            f"{api_path('v1', 'pods', namespace, f'{pod}:{port}')}/proxy/{path.lstrip('/')}",
            body=body,
            headers=headers,
            timeout=timeout,
        )
        if isinstance(data, str):  # a proxy answers whatever the pod answered
            data = json.loads(data)
        if not isinstance(data, dict):
            raise ProviderError(f"{self.name}: agent {namespace}/{pod} answered no JSON object")
        return data

    def exec_in_pod(self, namespace: str, pod: str, argv: list[str], timeout: float) -> tuple[int, str, str]:
        return self.api.exec(namespace, pod, argv, timeout)
