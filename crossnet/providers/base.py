"""The provider seam: small on purpose (kind's own provider interface is about 8 methods)."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from crossnet.model import ClusterSet, Topology
from crossnet.plumbing.routes import RouteChange
from crossnet.wire import ProbeResult, ProbeSpec

__all__ = [
    "PROVIDERS",
    "RUN_ID",
    "SAFE_NAME",
    "STATE_SCHEMA",
    "AgentClient",
    "ExecTarget",
    "InputError",
    "Provider",
    "ProviderError",
    "StateFile",
    "register",
    "state_problems",
]

STATE_SCHEMA = "crossnet.state/v1"


class ProviderError(RuntimeError):
    """A provider could not do what was asked; the message names the cause and the fix."""


class InputError(ProviderError):
    """What the provider was pointed at is wrong (no or a broken state file, a bad exec target,
    an existing state directory): a usage error (CLI exit 2), not a failure of the clusters."""


class AgentClient(Protocol):
    def probe(self, probes: list[ProbeSpec], timeout: float) -> list[ProbeResult]: ...


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
            raise InputError(
                f"{text[:80]!r} is not <cluster>/<node>[/<pod>] (e.g. cluster-1/worker or cluster-1/worker/agent)"
            )
        return cls(*parts)

    def __str__(self) -> str:
        return "/".join(p for p in (self.cluster, self.node, self.pod) if p)


class Provider(Protocol):
    """What every provider does. Every change it makes is recorded in its state file with
    what undoes it; `down` ends only what it created."""

    name: str
    state_dir: Path
    state: StateFile
    converge_timeout: float  # how long a Corefile change may take to be served
    # True when the multi-cluster layer edits CoreDNS's Corefile itself (Submariner's Lighthouse adds the
    # clusterset.local forward on kind), so crossnet must not; False when crossnet plays that part (the lab).
    multicluster_owns_corefile: bool

    def up(self, topology: Topology) -> ClusterSet: ...
    def down(self) -> None: ...
    def exec(self, target: ExecTarget, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]: ...
    def apply_routes(self, changes: list[RouteChange]) -> None: ...
    def apply_routes_undo(self, changes: list[RouteChange]) -> None: ...
    def read_corefile(self, cluster: str) -> str: ...
    def write_corefile(self, cluster: str, text: str) -> None: ...
    def deploy_agents(self) -> ClusterSet: ...
    def agent_client(self, agent_id: str) -> AgentClient: ...
    def detach(self) -> None: ...  # bring-up done: a run started by `crossnet up` may outlive the CLI now
    def node_host(self, cluster: str, node: str) -> Any: ...  # a testinfra Host for the node (facts, evidence)


PROVIDERS: dict[str, Callable[..., Provider]] = {}


def register(name: str) -> Callable[[Callable[..., Provider]], Callable[..., Provider]]:
    def decorate(factory: Callable[..., Provider]) -> Callable[..., Provider]:
        PROVIDERS[name] = factory
        return factory

    return decorate


SAFE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # cluster, node, namespace names
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
UNDO_PROGRAMS = ("iptables", "sysctl", "sh")  # what plumbing's recorded undo commands run (plumbing.nodes)


def state_problems(data: Any) -> list[str]:
    """What is wrong with a parsed state.json, checked before `down`, `--attach` or `exec` act on
    it: its values become commands, signals and paths run as root. Unknown keys are allowed."""
    if not isinstance(data, dict):
        return [f"is a JSON {type(data).__name__}, not an object"]
    problems: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    check(data.get("schema") == STATE_SCHEMA, f"schema is {str(data.get('schema'))[:40]!r}, not {STATE_SCHEMA!r}")
    check(data.get("provider") in ("lab", "kind", "existing", "fake"), "provider is not 'lab', 'kind' or 'existing'")
    check(isinstance(data.get("run_id"), str) and bool(RUN_ID.match(data["run_id"])), "run_id is missing or unsafe")
    for key in ("sandbox_pid", "owner_pid"):
        value = data.get(key)
        check(value is None or (type(value) is int and value > 1), f"{key} is not a process id")
    check(isinstance(data.get("sandbox_identity"), str | None), "sandbox_identity is not a string")
    check(isinstance(data.get("phase"), str | None), "phase is not a string")
    for key in ("cluster_set", "plan", "agents", "plumbing"):
        check(isinstance(data.get(key), dict | None), f"{key} is not an object")
    for key in ("created", "reused", "creating"):  # kind: cluster names `kind delete` is run on
        value = data.get(key)
        check(
            value is None
            or (isinstance(value, list) and all(isinstance(v, str) and SAFE_NAME.match(v) for v in value)),
            f"{key} is not a list of names",
        )
    namespace = data.get("namespace")
    check(
        namespace is None or (isinstance(namespace, str) and bool(SAFE_NAME.match(namespace))),
        "namespace is not a DNS-1123 name",
    )
    check(isinstance(data.get("agent_token"), str | None), "agent_token is not a string")
    plan = _object(data.get("plan"))
    for node in plan.get("nodes") or []:
        check(
            isinstance(node, dict)
            and all(isinstance(node.get(k), str) and SAFE_NAME.match(node[k]) for k in ("cluster", "short", "netns")),
            "plan.nodes holds a node whose cluster, name or namespace is not a DNS-1123 name",
        )
    agents = _object(data.get("agents"))
    for agent in agents.values():
        check(
            isinstance(agent, dict) and isinstance(agent.get("control"), str),
            "agents holds an agent without a control address",
        )
    plumbing = _object(data.get("plumbing"))
    for route in plumbing.get("routes") or []:
        check(
            isinstance(route, dict)
            and _names_ok(route)
            and _network_ok(route.get("destination"))
            and _address_ok(route.get("via")),
            f"plumbing.routes holds an invalid route {str(route)[:120]}",
        )
    for command in plumbing.get("node_commands") or []:
        undo = command.get("undo") if isinstance(command, dict) else None
        check(
            isinstance(command, dict)
            and _names_ok(command)
            and isinstance(undo, list)
            and bool(undo)
            and all(isinstance(a, str) and "\n" not in a for a in undo)
            and undo[0] in UNDO_PROGRAMS,
            f"plumbing.node_commands holds an undo crossnet does not write: {str(command)[:120]}",
        )
    corefiles = plumbing.get("corefiles") or {}
    check(
        isinstance(corefiles, dict)
        and all(isinstance(k, str) and SAFE_NAME.match(k) and isinstance(v, str) for k, v in corefiles.items()),
        "plumbing.corefiles is not cluster name -> Corefile text",
    )
    problems += _mcs_problems(data.get("mcs"))
    return problems


MCS_CONDITION_STATUSES = ("True", "False", "Unknown")


def _mcs_problems(mcs: Any) -> list[str]:
    """`mcs`: the MCS objects a run made (kind: the ServiceExports, by name) or emulates (the lab: its
    ServiceExports with their conditions and its ServiceImports; providers/lab/mcs.py state_record)."""
    if mcs is None:
        return []
    if not isinstance(mcs, dict):
        return ["mcs is not an object"]
    problems = [
        f"mcs.{key} is not a DNS-1123 name"
        for key in ("cluster", "namespace")
        if mcs.get(key) is not None and not (isinstance(mcs[key], str) and SAFE_NAME.match(mcs[key]))
    ]
    exports, imports = mcs.get("serviceexports"), mcs.get("serviceimports")
    if mcs.get("exports") is not None and not _list_of(mcs["exports"], _name_ok):
        problems.append("mcs.exports is not a list of Service names")
    if exports is not None and not _list_of(exports, _export_ok):
        problems.append("mcs.serviceexports holds an export without name, namespace, cluster or well-formed conditions")
    if imports is not None and not _list_of(imports, _import_ok):
        problems.append("mcs.serviceimports holds an import without name, namespace, type ClusterSetIP/Headless or IPs")
    return problems


def _list_of(value: Any, ok: Callable[[Any], bool]) -> bool:
    return isinstance(value, list) and all(ok(item) for item in value)


def _name_ok(value: Any) -> bool:
    return isinstance(value, str) and bool(SAFE_NAME.match(value))


def _export_ok(export: Any) -> bool:
    """A ServiceExport: its name, namespace, cluster, and conditions of a type and a status."""
    if not isinstance(export, dict) or not all(_name_ok(export.get(k)) for k in ("name", "namespace", "cluster")):
        return False
    return _list_of(
        export.get("conditions", []),
        lambda c: isinstance(c, dict) and isinstance(c.get("type"), str) and c.get("status") in MCS_CONDITION_STATUSES,
    )


def _import_ok(item: Any) -> bool:
    """A ServiceImport: its name, namespace, type and ClusterSetIPs (addresses)."""
    if not isinstance(item, dict) or not all(_name_ok(item.get(k)) for k in ("name", "namespace")):
        return False
    return item.get("type") in ("ClusterSetIP", "Headless") and _list_of(item.get("ips", []), _address_ok)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _names_ok(record: dict[str, Any]) -> bool:
    return all(isinstance(record.get(k), str) and SAFE_NAME.match(record[k]) for k in ("cluster", "node"))


def _network_ok(value: Any) -> bool:
    try:
        ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        return False
    return isinstance(value, str)


def _address_ok(value: Any) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


class StateFile:
    """`<state-dir>/state.json`: everything a run created or changed (schema in the README).
    Written 0600 (it drives root actions); validated with `state_problems` on every read."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / "state.json"

    def read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise InputError(
                f"no crossnet state at {self.path}; start one with `crossnet up` or pass --state-dir of a running one"
            ) from None
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(raw.decode())
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InputError(
                f"{self.path} is not a crossnet state file ({'empty' if not raw.strip() else exc}); "
                f"if its run is gone, remove it with `crossnet down --state-dir {self.dir}`"
            ) from None
        if isinstance(data, dict) and data.get("schema") not in (None, STATE_SCHEMA):
            raise InputError(
                f"{self.path} has schema {str(data.get('schema'))[:40]!r}, this crossnet reads "
                f"{STATE_SCHEMA}; tear it down with the crossnet that made it"
            )
        problems = state_problems(data)
        if problems:
            raise InputError(
                f"{self.path} is not a valid crossnet state file: {'; '.join(problems[:5])}; "
                f"crossnet will not act on it (remove it with `crossnet down --state-dir {self.dir}` "
                "if its run is gone)"
            )
        result: dict[str, Any] = data
        return result

    def write(self, data: dict[str, Any]) -> None:
        from crossnet.providers.statedir import write_private

        write_private(self.path, json.dumps({**data, "schema": STATE_SCHEMA}, indent=1, sort_keys=True))

    def update(self, **fields: Any) -> dict[str, Any]:
        data = self.read()
        data.update(fields)
        self.write(data)
        return data
