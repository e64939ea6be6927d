"""Everything that crosses a process as JSON, typed: a probe asked of an agent and what it
answers, the matrix cell record the plugin writes (xdist workers to the controller, then
matrix.json) and `report` reads, and `state.json`.

The agent (crossnet.agent) keeps its own copy of the probe fields: it imports nothing else from
crossnet, so it can run as a zipapp on a node. Keep the two in step (tests/test_wire.py checks).
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = ["CellRecord", "ProbeResult", "ProbeSpec", "RouteRecord", "StateData", "UndoCommand"]


class ProbeSpec(TypedDict, total=False):
    """One probe in `POST /probe {"probes": [...]}`."""

    id: str  # the cell id: the result carries it back
    protocol: str  # tcp | udp | icmp | dns-udp | dns-tcp
    timeout: float  # seconds, in (0, 30]
    payload: int  # bytes of echo payload (or EDNS padding for dns-*)
    dst: str  # an IP address (by-address probes)
    port: int
    qname: str  # by-name probes: resolved through `server` with the pod's `search` list first
    server: str
    search: list[str]
    dns_port: int  # where `server` listens (default 53)
    qtype: str  # dns-udp/dns-tcp: the record type asked, A (default) | SRV
    ndots: int  # resolv.conf ndots for the search list (default 5, as kubelet writes it)
    expect_agents: list[str]  # the agents whose echo may answer (a Service's endpoints)
    cover: bool  # a Service: connect until every one of expect_agents answered (bounded), name a silent one
    measure_mtu: bool  # also measure the path MTU to dst (a DF ladder of ICMP echoes)


class ProbeResult(TypedDict, total=False):
    """What an agent answers for one probe; `model.Observation` is built from it."""

    id: str
    reached: bool
    error: str | None  # timeout | refused | no-route | nxdomain | servfail | wrong-answer | agent-error | ...
    source_ip: str | None  # the source address the target saw (crossnet's echo says it)
    latency_ms: float | None
    answers: list[str]  # DNS answers; a CNAME as "cname:<name>", an SRV as "srv:<priority> <weight> <port> <target>"
    rcode: str | None
    responder: str | None  # the agent id whose echo answered
    detail: str
    peer: str  # "not-crossnet-echo" when something else answered (its bytes are never returned)
    reply_bytes: int  # how many bytes that peer sent
    loop_lag_ms: float  # how late the agent's event loop ran during the probe (starvation, not the network)
    path_mtu: int | None  # the largest packet that reached dst and came back with DF set (measure_mtu, or
    # a failed large probe); None: the ladder got no answer
    ttl: int | None  # DNS: the lowest TTL in the answer (below the zone's own: a cached answer)
    ra: bool  # DNS: the RA (recursion available) flag of the response; absent when no response came


class CellRecord(TypedDict):
    """One judged cell as the plugin writes it and matrix.json holds it (schema crossnet.matrix/v1)."""

    id: str
    nodeid: str
    suite: str
    src: str  # cluster/node
    src_kind: str  # pod | host
    src_ip: str
    dst: str
    dst_kind: str
    dst_addr: str
    protocol: str  # the probe's label: tcp, udp-1400b, dns-tcp, ...
    expected: str  # yes | no | optional
    expected_source: str
    rule: str
    because: str
    verdict: str
    observed: str
    source_ip: str | None
    expected_source_ip: str | None
    latency_ms: float | None
    message: str
    repro: str
    answers: list[str]
    expected_answers: list[str]
    retried: bool
    evidence: str
    global_ip: str | None
    path_mtu: int | None  # measured on this cell's path (DF ladder), when it was
    ttl: int | None  # DNS answers: their lowest TTL


class RouteRecord(TypedDict):
    cluster: str
    node: str
    destination: str  # CIDR
    via: str  # IP address


class UndoCommand(TypedDict):
    cluster: str
    node: str
    undo: list[str]  # argv; validated (providers.base.state_problems) before it is run
    label: str


class Plumbing(TypedDict, total=False):
    routes: list[RouteRecord]
    corefiles: dict[str, str]  # cluster -> the original Corefile text
    node_commands: list[UndoCommand]


class StateData(TypedDict, total=False):
    """`state.json` (schema crossnet.state/v1); validated by providers.base.state_problems on read."""

    schema: str
    provider: str  # lab | kind | fake
    run_id: str
    phase: str  # starting -> up -> agents-ready -> plumbed -> ready
    owner_pid: int
    owner_identity: str | None
    detached: bool
    sandbox_pid: int | None  # lab: the unshare process
    sandbox_identity: str | None  # lab: its start time, checked before it is signalled
    cluster_set: dict[str, Any]  # model.ClusterSet.to_json()
    plan: dict[str, Any]  # lab: nodes and their namespaces
    namespaces: list[str]  # lab: every network namespace of the sandbox
    agents: dict[str, dict[str, str]]  # lab: agent id -> control socket, namespace
    plumbing: Plumbing
    namespace: str  # kind: the run's Kubernetes namespace
    created: list[str]  # kind: clusters this run created
    creating: list[str]
    reused: list[str]
    agent_token: str
    submariner: dict[str, Any]
    # MCS: kind, the ServiceExports it made (cluster, namespace, version, exports, run_id, imported); the lab,
    # the objects it emulates (cluster, namespace, serviceexports with conditions, serviceimports)
    mcs: dict[str, Any]
    corefiles_written: dict[str, str]
