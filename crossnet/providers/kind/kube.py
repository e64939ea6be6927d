"""The kubernetes side of the kind provider behind one small seam, `KubeCluster`, so the
provider's logic is tested with an in-memory fake and only this adapter needs a real API
server (the nightly run).

kubernetes-client: one ApiClient per cluster (never the global default), never shared between
`stream()` exec and REST calls, `_request_timeout` on every call, and the pod proxy read with
`_preload_content=False` (else JSON comes back as a Python repr).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Protocol

from crossnet.providers.base import ProviderError

__all__ = [
    "MANAGED_BY",
    "REQUEST_TIMEOUT",
    "RUN_LABEL",
    "ApiKubeCluster",
    "KubeCluster",
    "KubeNode",
    "KubePod",
    "KubeService",
    "call_raw",
    "configmap_binary",
    "conflict_error",
    "describe",
    "is_ours",
]

REQUEST_TIMEOUT = 30.0
MANAGED_BY = {"app.kubernetes.io/managed-by": "crossnet"}
RUN_LABEL = "crossnet.io/run"  # the run that made an object: teardown deletes only what carries its own run id
_PLURALS = {"NetworkPolicy": "networkpolicies"}  # the rest is kind.lower() + "s"


def describe(manifest: dict[str, Any]) -> str:
    """`Kind namespace/name` (or `Kind name` when cluster-scoped), as errors name an object."""
    meta = manifest["metadata"]
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{manifest['kind']} {where}{meta['name']}"


def is_ours(labels: dict[str, str] | None, run_id: str) -> bool:
    """True when `labels` say crossnet made the object, in the run `run_id`."""
    labels = labels or {}
    return bool(run_id) and all(labels.get(k) == v for k, v in MANAGED_BY.items()) and labels.get(RUN_LABEL) == run_id


def conflict_error(cluster: str, manifest: dict[str, Any], existing: dict[str, str] | None) -> ProviderError | None:
    """What creating `manifest` over a same-named object (HTTP 409) means: None when that object
    is this run's own (a re-apply), else the error to raise — crossnet never adopts, nor later
    deletes, an object it did not make."""
    run_id = (manifest["metadata"].get("labels") or {}).get(RUN_LABEL, "")
    if is_ours(existing, run_id):
        return None
    kind, meta = manifest["kind"], manifest["metadata"]
    where = f" -n {meta['namespace']}" if meta.get("namespace") else ""
    return ProviderError(
        f"{cluster}: {describe(manifest)} already exists and is not this run's (its labels {existing or {}} lack "
        f"{RUN_LABEL}={run_id}); crossnet does not adopt objects it did not make: delete it if it is a leftover "
        f"(`kubectl --context kind-{cluster} delete {kind.lower()}{where} {meta['name']}`) or run with another run id"
    )


def exec_result(resp: Any, timeout: float) -> tuple[int, str, str]:
    """Wait for a `kubernetes.stream` exec and return (exit code, stdout, stderr): the code is in
    the error channel's status ("Success", or an ExitCode cause)."""
    resp.run_forever(timeout=timeout + 5)
    out, err = resp.read_stdout() or "", resp.read_stderr() or ""
    status = resp.read_channel(3)
    code = 0
    if status:
        details = json.loads(status)
        if details.get("status") != "Success":
            causes = (details.get("details") or {}).get("causes") or []
            code = int(next((c["message"] for c in causes if c.get("reason") == "ExitCode"), 1))
    return code, str(out), str(err)


def call_raw(
    api: Any, method: str, path: str, headers: dict[str, str], body: Any = None, timeout: float | None = None
) -> tuple[int, str, Any]:
    """One raw request through a kubernetes ApiClient: (status, reason, body bytes). Both client
    generations: >= 35 serializes first and never raises on a status; older ones take the path
    and raise ApiException on an error status (returned here as its status instead)."""
    if hasattr(api, "param_serialize"):
        serialized = api.param_serialize(method, path, header_params=headers, body=body, auth_settings=["BearerToken"])
        response = api.call_api(*serialized, _request_timeout=timeout)
        response.read()
        return int(response.status), str(response.reason or ""), response.data
    from kubernetes.client.exceptions import ApiException

    try:
        response = api.call_api(
            path,
            method,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
    except ApiException as exc:
        return int(exc.status or 0), str(exc.reason or ""), exc.body
    response = response[0] if isinstance(response, tuple) else response
    return int(response.status), str(getattr(response, "reason", "") or ""), response.data


@dataclass(frozen=True)
class KubeNode:
    name: str
    internal_ip: str
    pod_cidr: str
    ready: bool
    control_plane: bool


@dataclass(frozen=True)
class KubePod:
    name: str
    node: str
    ip: str
    ready: bool
    phase: str
    reason: str = ""  # why it is not running (ErrImagePull, ...)


@dataclass(frozen=True)
class KubeService:
    name: str
    type: str  # ClusterIP | NodePort | ExternalName | Headless (clusterIP None)
    cluster_ip: str | None
    node_port: int | None
    external_name: str | None


class KubeCluster(Protocol):
    """What the kind provider asks of one cluster's API server."""

    name: str

    def nodes(self) -> list[KubeNode]: ...
    def pods(self, namespace: str, selector: str) -> list[KubePod]: ...
    def services(self, namespace: str) -> list[KubeService]: ...
    def read_configmap(self, namespace: str, name: str) -> dict[str, str]: ...
    def write_configmap_key(self, namespace: str, name: str, key: str, value: str) -> None: ...
    def apply(self, manifests: list[dict[str, Any]]) -> None: ...
    def delete_namespace(self, name: str) -> None: ...
    def namespace_labels(self, name: str) -> dict[str, str] | None: ...
    def proxy_post(
        self,
        namespace: str,
        pod: str,
        port: int,
        path: str,
        body: dict[str, Any],
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]: ...
    def exec_in_pod(self, namespace: str, pod: str, argv: list[str], timeout: float) -> tuple[int, str, str]: ...
    def label_node(self, name: str, labels: dict[str, str | None]) -> None: ...  # None removes the label
    def node_labels(self, name: str) -> dict[str, str]: ...
    def custom_objects(self, group: str, version: str, plural: str, namespace: str | None) -> list[dict[str, Any]]: ...


class ApiKubeCluster:
    """`KubeCluster` on the official kubernetes client (exercised by the nightly kind run)."""

    def __init__(self, name: str, kubeconfig: str, context: str | None = None, api: Any | None = None) -> None:
        """On the kubeconfig's `context`, or on `api`, an ApiClient made elsewhere (or a test double of one);
        exec_in_pod still makes its own client from the kubeconfig."""
        from kubernetes import client, config

        self.name = name
        self._kubeconfig, self._context = kubeconfig, context
        if api is not None:
            self._api = api
        else:
            try:
                self._api = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call,unused-ignore]
            except Exception as exc:  # noqa: BLE001 - the kubeconfig's own error, said once, without secrets
                raise ProviderError(
                    f"{name}: cannot load kubeconfig {kubeconfig} (context {context or 'current'}): "
                    f"{exc.__class__.__name__}"
                ) from None
        self._core = client.CoreV1Api(self._api)
        self._client = client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            raise ProviderError(f"{self.name}: {what}: API server said {exc.status} {exc.reason}") from None
        except OSError as exc:
            raise ProviderError(
                f"{self.name}: {what}: API server unreachable ({exc.__class__.__name__}); "
                "is the cluster running? `kind get clusters`"
            ) from None

    def nodes(self) -> list[KubeNode]:
        result = []
        for node in self._call("list nodes", self._core.list_node).items:
            ip = next((a.address for a in node.status.addresses or [] if a.type == "InternalIP"), "")
            ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
            labels = node.metadata.labels or {}
            result.append(
                KubeNode(
                    node.metadata.name,
                    ip,
                    node.spec.pod_cidr or "",
                    ready,
                    "node-role.kubernetes.io/control-plane" in labels,
                )
            )
        return result

    def pods(self, namespace: str, selector: str) -> list[KubePod]:
        result = []
        for pod in self._call(
            f"list pods {selector}", self._core.list_namespaced_pod, namespace, label_selector=selector
        ).items:
            ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            waiting = [
                s.state.waiting.reason
                for s in pod.status.container_statuses or []
                if s.state and s.state.waiting and s.state.waiting.reason
            ]
            result.append(
                KubePod(
                    pod.metadata.name,
                    pod.spec.node_name or "",
                    pod.status.pod_ip or "",
                    ready,
                    pod.status.phase or "",
                    ", ".join(waiting),
                )
            )
        return result

    def services(self, namespace: str) -> list[KubeService]:
        result = []
        for svc in self._call(f"list services in {namespace}", self._core.list_namespaced_service, namespace).items:
            ip = svc.spec.cluster_ip if svc.spec.cluster_ip not in (None, "None") else None
            kind = "Headless" if svc.spec.type == "ClusterIP" and ip is None else svc.spec.type
            node_port = next((p.node_port for p in svc.spec.ports or [] if p.node_port), None)
            result.append(KubeService(svc.metadata.name, kind, ip, node_port, svc.spec.external_name))
        return result

    def label_node(self, name: str, labels: dict[str, str | None]) -> None:
        self._call(f"label node {name}", self._core.patch_node, name, {"metadata": {"labels": labels}})

    def node_labels(self, name: str) -> dict[str, str]:
        node = self._call(f"read node {name}", self._core.read_node, name)
        return dict((node.metadata.labels if node.metadata else None) or {})

    def custom_objects(self, group: str, version: str, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        api = self._client.CustomObjectsApi(self._api)
        if namespace is None:  # cluster-scoped, or namespaced objects in every namespace
            data = self._call(f"list {plural}", api.list_cluster_custom_object, group, version, plural)
        else:
            data = self._call(
                f"list {plural} in {namespace}", api.list_namespaced_custom_object, group, version, namespace, plural
            )
        items: list[dict[str, Any]] = data.get("items", [])
        return items

    def read_configmap(self, namespace: str, name: str) -> dict[str, str]:
        cm = self._call(f"read configmap {namespace}/{name}", self._core.read_namespaced_config_map, name, namespace)
        return dict(cm.data or {})

    def write_configmap_key(self, namespace: str, name: str, key: str, value: str) -> None:
        self._call(
            f"patch configmap {namespace}/{name}",
            self._core.patch_namespaced_config_map,
            name,
            namespace,
            {"data": {key: value}},
        )

    def apply(self, manifests: list[dict[str, Any]]) -> None:
        from kubernetes import utils

        for manifest in manifests:
            try:
                utils.create_from_dict(self._api, manifest)  # type: ignore[no-untyped-call,unused-ignore]
            except utils.FailToCreateError as exc:
                statuses = {getattr(e, "status", None) for e in exc.api_exceptions}
                if statuses != {409}:
                    raise ProviderError(f"{self.name}: create {describe(manifest)}: {statuses}") from None
                conflict = conflict_error(self.name, manifest, self._labels_of(manifest))  # 409: a same-named one
                if conflict is not None:
                    raise conflict from None

    def _labels_of(self, manifest: dict[str, Any]) -> dict[str, str]:
        """The labels of the object already stored under `manifest`'s kind, namespace and name."""
        version, kind, meta = manifest["apiVersion"], manifest["kind"], manifest["metadata"]
        base = f"/apis/{version}" if "/" in version else f"/api/{version}"
        plural = _PLURALS.get(kind, kind.lower() + "s")
        where = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
        path = f"{base}{where}/{plural}/{meta['name']}"
        try:
            status, reason, raw = call_raw(
                self._api, "GET", path, {"Accept": "application/json"}, None, REQUEST_TIMEOUT
            )
        except OSError as exc:
            raise ProviderError(f"{self.name}: read {describe(manifest)}: API server unreachable ({exc})") from None
        if status >= 400:
            raise ProviderError(f"{self.name}: read {describe(manifest)}: {status} {reason}")
        labels: dict[str, str] = (json.loads(raw).get("metadata") or {}).get("labels") or {}
        return labels

    def delete_namespace(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._core.delete_namespace(name, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise ProviderError(f"{self.name}: delete namespace {name}: {exc.status} {exc.reason}") from None

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            ns = self._core.read_namespace(name, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ProviderError(f"{self.name}: read namespace {name}: {exc.status} {exc.reason}") from None
        return dict((ns.metadata.labels if ns.metadata else None) or {})

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
        # The generated POST proxy method takes no body: call_api directly (kubernetes-client #2158).
        status, reason, raw = call_raw(
            self._api,
            "POST",
            f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path.lstrip('/')}",
            {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})},
            body,
            timeout,
        )
        if status >= 400:
            raise ProviderError(f"{self.name}: POST {path} on pod {pod}: {status} {reason}")
        data: dict[str, Any] = json.loads(raw)
        return data

    def exec_in_pod(self, namespace: str, pod: str, argv: list[str], timeout: float) -> tuple[int, str, str]:
        from kubernetes import client, config
        from kubernetes.stream import stream

        # stream() swaps the ApiClient's request function: give it a client of its own.
        api = client.CoreV1Api(
            config.new_client_from_config(  # type: ignore[no-untyped-call,unused-ignore]
                config_file=self._kubeconfig, context=self._context
            )
        )
        command = ["timeout", str(int(timeout)), *argv]
        resp = stream(
            api.connect_get_namespaced_pod_exec,
            pod,
            namespace,
            command=command,
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
            _preload_content=False,
        )
        return exec_result(resp, timeout)


def configmap_binary(name: str, namespace: str, key: str, data: bytes, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "binaryData": {key: base64.b64encode(data).decode()},
    }
