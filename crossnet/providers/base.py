"""The provider seam: small on purpose (kind's own provider interface is about 8 methods)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from crossnet.model import ClusterSet, Topology
from crossnet.plumbing.routes import RouteChange

__all__ = [
    "PROVIDERS",
    "STATE_SCHEMA",
    "AgentClient",
    "ExecTarget",
    "Provider",
    "ProviderError",
    "StateFile",
    "register",
]

STATE_SCHEMA = "crossnet.state/v1"


class ProviderError(RuntimeError):
    """A provider could not do what was asked; the message names the cause and the fix."""


class AgentClient(Protocol):
    def probe(self, probes: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ExecTarget:
    """`<cluster>/<node>[/<pod>]` as the CLI and repro commands write it."""

    cluster: str
    node: str
    pod: str = ""

    @classmethod
    def parse(cls, text: str) -> ExecTarget:
        parts = text.strip("/").split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ProviderError(f"{text!r} is not <cluster>/<node>[/<pod>] (e.g. cluster-1/worker or "
                                "cluster-1/worker/agent)")
        return cls(*parts)

    def __str__(self) -> str:
        return "/".join(p for p in (self.cluster, self.node, self.pod) if p)


class Provider(Protocol):
    """What every provider does. Every change it makes is recorded in its state file with
    what undoes it; `down` ends only what it created."""

    name: str
    state_dir: Path
    state: StateFile
    timings: dict[str, float]
    converge_timeout: float  # how long a Corefile change may take to be served

    def up(self, topology: Topology) -> ClusterSet: ...
    def down(self) -> None: ...
    def exec(self, target: ExecTarget, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]: ...
    def apply_routes(self, changes: list[RouteChange]) -> None: ...
    def apply_routes_undo(self, changes: list[RouteChange]) -> None: ...
    def read_corefile(self, cluster: str) -> str: ...
    def write_corefile(self, cluster: str, text: str) -> None: ...
    def deploy_agents(self) -> ClusterSet: ...
    def agent_client(self, agent_id: str) -> AgentClient: ...


PROVIDERS: dict[str, Callable[..., Provider]] = {}


def register(name: str) -> Callable[[Callable[..., Provider]], Callable[..., Provider]]:
    def decorate(factory: Callable[..., Provider]) -> Callable[..., Provider]:
        PROVIDERS[name] = factory
        return factory
    return decorate


class StateFile:
    """`<state-dir>/state.json`: everything a run created or changed (schema in the README)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / "state.json"

    def read(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise ProviderError(f"no crossnet state at {self.path}; start one with `crossnet up` "
                                "or pass --state-dir of a running one") from None
        if data.get("schema") != STATE_SCHEMA:
            raise ProviderError(f"{self.path} has schema {data.get('schema')!r}, this crossnet reads "
                                f"{STATE_SCHEMA}; tear it down with the crossnet that made it")
        return data

    def write(self, data: dict[str, Any]) -> None:
        data = {"schema": STATE_SCHEMA, **data}
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(temporary, self.path)

    def update(self, **fields: Any) -> dict[str, Any]:
        data = self.read()
        data.update(fields)
        self.write(data)
        return data
