"""The docker layer of the kind provider: kind's node containers found by kind's labels,
commands run in them (with a timeout: the SDK has none), and node routes applied and undone.

Tested against a real docker daemon (tests/test_kind_nodes_docker.py) and a fake client.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from crossnet.plumbing.routes import RouteChange
from crossnet.providers.base import ProviderError

__all__ = [
    "KIND_CLUSTER_LABEL",
    "KIND_ROLE_LABEL",
    "NodeContainer",
    "NodeContainers",
    "kind_node_name",
    "kind_node_short",
]

KIND_CLUSTER_LABEL = "io.x-k8s.kind.cluster"
KIND_ROLE_LABEL = "io.x-k8s.kind.role"


def kind_node_name(cluster: str, short: str) -> str:
    """kind's name for a node, `<cluster>-<short>`: its container and its Kubernetes node alike."""
    return f"{cluster}-{short}"


def kind_node_short(cluster: str, name: str) -> str:
    """The topology's short name (control-plane, worker2, ...) of the kind node `name`."""
    return name.removeprefix(f"{cluster}-")


@dataclass(frozen=True)
class NodeContainer:
    cluster: str
    short: str  # control-plane, worker, worker2: the container name without "<cluster>-"
    role: str
    name: str
    id: str


def _text(data: bytes | None) -> str:
    return data.decode(errors="replace") if data else ""


class NodeContainers:
    """kind's node containers through a docker SDK client (or anything shaped like one)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def connect(cls, base_url: str | None = None) -> NodeContainers:
        try:
            import docker

            client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
            client.ping()
        except Exception as exc:  # noqa: BLE001 - every way of not reaching docker gets the same advice
            where = base_url or "the default docker socket (DOCKER_HOST or /var/run/docker.sock)"
            raise ProviderError(
                f"no docker daemon answers at {where} ({exc.__class__.__name__}); install and start "
                "docker for --provider kind, or use --provider lab, which needs no docker"
            ) from None
        return cls(client)

    def discover(self, cluster: str) -> list[NodeContainer]:
        found = []
        for container in self.client.containers.list(filters={"label": f"{KIND_CLUSTER_LABEL}={cluster}"}):
            labels = container.labels or {}
            short = kind_node_short(cluster, container.name)
            found.append(NodeContainer(cluster, short, labels.get(KIND_ROLE_LABEL, ""), container.name, container.id))
        return sorted(found, key=lambda n: (n.role != "control-plane", n.name))

    def container_for(self, cluster: str, short: str) -> NodeContainer:
        nodes = self.discover(cluster)
        for node in nodes:
            if node.short == short:
                return node
        known = ", ".join(n.short for n in nodes) or "none (is the cluster running? `kind get clusters`)"
        raise ProviderError(
            f"no kind node container {kind_node_name(cluster, short)}; known nodes of {cluster}: {known}"
        )

    def exec(self, container: NodeContainer | str, argv: Sequence[str], timeout: float = 30.0) -> tuple[int, str, str]:
        """Run argv in the container; rc 124 means it hit `timeout`. Never raises on a non-zero exit."""
        name = container.name if isinstance(container, NodeContainer) else container
        try:
            target = self.client.containers.get(name)
            code, (out, err) = target.exec_run(["timeout", str(max(1, int(timeout))), *argv], demux=True)
        except Exception as exc:  # noqa: BLE001 - the daemon's error, said with the container's name
            raise ProviderError(f"docker exec in {name} failed: {exc.__class__.__name__}: {exc}") from None
        return int(code if code is not None else 1), _text(out), _text(err)

    def _batches(self, changes: Sequence[RouteChange], undo: bool) -> None:
        by_node: dict[str, list[RouteChange]] = {}
        for change in changes:
            by_node.setdefault(kind_node_name(change.cluster, change.node), []).append(change)

        def run(item: tuple[str, list[RouteChange]]) -> None:
            container, node_changes = item
            if undo:  # a route already gone is not an error
                script = "; ".join(shlex.join(c.undo_argv) + " 2>/dev/null || true" for c in node_changes)
            else:
                script = " && ".join(shlex.join(c.apply_argv) for c in node_changes)
            rc, _, err = self.exec(container, ["sh", "-c", script])
            if rc != 0 and not undo:
                labels = ", ".join(c.label for c in node_changes)
                raise ProviderError(f"routes on {container} failed (exit {rc}): {err.strip()[-400:]} [{labels}]")

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(by_node)))) as pool:
            list(pool.map(run, sorted(by_node.items())))

    def apply_routes(self, changes: Sequence[RouteChange]) -> None:
        self._batches(changes, undo=False)

    def undo_routes(self, changes: Sequence[RouteChange]) -> None:
        self._batches(changes, undo=True)

    def ip_routes(self, container: NodeContainer | str) -> list[str]:
        rc, out, err = self.exec(container, ["ip", "route"])
        if rc != 0:
            raise ProviderError(f"ip route in {container}: {err.strip()}")
        return [line.strip() for line in out.splitlines() if line.strip()]
