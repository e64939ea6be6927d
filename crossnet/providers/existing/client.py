"""`KubeApi` on the official kubernetes client, from one kubeconfig context.

One ApiClient per context (`new_client_from_config`, never the global default), and a separate
one for each exec (kubernetes.stream swaps the client's request function while it runs). Works
with both generations of the client: the one whose `call_api` takes a resource path (up to 34)
and the one that serialises first (`param_serialize`, 35 on).

Errors are one line naming the fix, and never carry the kubeconfig's secrets: a kubeconfig that
cannot be loaded is reported by its path, the context and the exception's class only (a parser's
message may quote the file); an unreachable server by the context and the failure's class.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crossnet.providers.base import InputError, ProviderError
from crossnet.providers.existing.kube import REQUEST_TIMEOUT, ApiError
from crossnet.providers.kind.kube import exec_result

__all__ = ["ClientKubeApi", "default_kubeconfig", "kubeconfig_contexts", "load_client"]


def default_kubeconfig(explicit: str | None = None) -> str:
    """--kubeconfig, else $KUBECONFIG (a list separated by the OS path separator), else ~/.kube/config."""
    return explicit or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


def _fix(kubeconfig: str) -> str:
    return f"check it with `kubectl --kubeconfig {kubeconfig} config get-contexts`"


def _require_client() -> None:
    try:
        import kubernetes  # noqa: F401 - only whether it is there
    except ImportError:
        raise InputError(
            "the existing provider needs the kubernetes client: pip install 'crossnet[kind]' (or kubernetes)"
        ) from None


def kubeconfig_contexts(kubeconfig: str) -> list[str]:
    """The context names of a kubeconfig (no secrets are read out); one context name in two files
    of a KUBECONFIG list is an error (the merge would silently hide the second)."""
    _require_client()
    paths = [p for p in kubeconfig.split(os.pathsep) if p]
    if not any(Path(p).is_file() for p in paths):
        raise InputError(
            f"kubeconfig {kubeconfig} not found; pass --kubeconfig PATH or set KUBECONFIG to the file of your clusters"
        )
    seen: dict[str, str] = {}
    for path in [p for p in paths if Path(p).is_file()]:
        for name in _names(path):
            if name in seen:
                raise InputError(
                    f"context {name!r} is in both {seen[name]} and {path} (KUBECONFIG merges them and keeps only "
                    "the first): rename one (`kubectl config rename-context`), or give each cluster its own "
                    "`kubeconfig:` in a cluster-set file"
                )
            seen[name] = path
    return list(seen)


def _names(path: str) -> list[str]:
    from kubernetes import config

    try:
        contexts, _ = config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call,unused-ignore]
    except Exception as exc:  # noqa: BLE001 - the parser's message may quote the file: say the class only
        raise InputError(f"kubeconfig {path} cannot be read ({exc.__class__.__name__}); {_fix(path)}") from None
    return [str(c.get("name")) for c in contexts or [] if isinstance(c, dict) and c.get("name")]


def load_client(kubeconfig: str, context: str) -> Any:
    """An ApiClient for `context` of `kubeconfig`; a missing context names the ones there are."""
    from kubernetes import config

    names = kubeconfig_contexts(kubeconfig)
    if context not in names:
        raise InputError(
            f"context {context!r} is not in kubeconfig {kubeconfig} (it has: {', '.join(names) or 'none'}); "
            "pass --context NAME=CONTEXT with one of those, or --kubeconfig with the file that has it"
        )
    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call,unused-ignore]
    except Exception as exc:  # noqa: BLE001 - an exec plugin or a certificate may fail: say the class only
        raise InputError(
            f"context {context!r} of kubeconfig {kubeconfig} cannot be used ({exc.__class__.__name__}: its "
            f"credentials or certificates could not be loaded); {_fix(kubeconfig)}"
        ) from None


def _message(data: Any) -> str:
    try:
        body = json.loads(data) if isinstance(data, bytes | str) and data else {}
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else ""


class ClientKubeApi:
    """`KubeApi` through the kubernetes client (the nightly vendor job drives a real API server;
    tests/test_existing_provider.py drives it against the fake API server over HTTP)."""

    def __init__(self, kubeconfig: str, context: str, api: Any | None = None) -> None:
        self.context, self._kubeconfig = context, kubeconfig
        self._api = api if api is not None else load_client(kubeconfig, context)

    def _unreachable(self, exc: BaseException) -> ProviderError:
        return ProviderError(
            f"{self.context}: the API server cannot be reached ({exc.__class__.__name__}); check that the cluster "
            f"runs and its server is reachable from here: `kubectl --context {self.context} version`"
        )

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
        import urllib3
        from kubernetes.client.exceptions import ApiException

        header_params = {"Accept": "application/json, */*", **(headers or {})}
        if body is not None:
            header_params["Content-Type"] = "application/json"
        try:
            status, reason, data = self._send(method, path, list(query), header_params, body, timeout)
        except ApiException as exc:
            if not exc.status:  # TLS failures come back as status 0
                raise self._unreachable(exc) from None
            status, reason, data = int(exc.status), str(exc.reason or ""), exc.body
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise self._unreachable(exc) from None
        if not 200 <= status < 300:
            if status == 401:
                raise ApiError(
                    self.context,
                    f"{method} {path}",
                    401,
                    "Unauthorized",
                    f"the credentials of context {self.context} were refused; refresh them (log in again)",
                )
            raise ApiError(self.context, f"{method} {path}", status, reason, _message(data))
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data or "")
        if raw:
            return text
        try:
            return json.loads(text) if text else {}
        except ValueError:
            return text

    def _send(
        self, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str], body: Any, timeout: float
    ) -> tuple[int, str, Any]:
        api = self._api
        if hasattr(api, "param_serialize"):  # kubernetes >= 35
            serialized = api.param_serialize(
                method, path, query_params=query, header_params=headers, body=body, auth_settings=["BearerToken"]
            )
            response = api.call_api(*serialized, _request_timeout=timeout)
            response.read()
            return int(response.status), str(response.reason or ""), response.data
        response = api.call_api(  # the older generation raises ApiException on an error status
            path,
            method,
            query_params=query,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        response = response[0] if isinstance(response, tuple) else response
        return int(response.status), str(getattr(response, "reason", "") or ""), response.data

    def exec(self, namespace: str, pod: str, argv: list[str], timeout: float) -> tuple[int, str, str]:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream

        api = client.CoreV1Api(load_client(self._kubeconfig, self.context))  # its own client (see above)
        try:
            resp = stream(
                api.connect_get_namespaced_pod_exec,
                pod,
                namespace,
                command=["timeout", str(max(1, int(timeout))), *argv],
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
                _preload_content=False,
            )
        except ApiException as exc:
            raise ApiError(self.context, f"exec in {namespace}/{pod}", int(exc.status or 0), str(exc.reason)) from None
        except OSError as exc:
            raise self._unreachable(exc) from None
        return exec_result(resp, timeout)
