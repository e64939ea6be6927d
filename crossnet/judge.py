"""Observation + expectation -> verdict: pass, isolated, regression, leak, source-mismatch,
flaky, optional. Pure: judges never probe."""

from __future__ import annotations

import re
from collections.abc import Sequence

from crossnet.live import LiveCell
from crossnet.model import Cell, Judgement, Observation
from crossnet.wire import CellRecord

__all__ = ["CAUSES", "TARGET_WORDS", "cell_record", "counts_by_expectation", "judge", "outcome"]


def outcome(live: LiveCell, observation: Observation) -> tuple[bool, str | None]:
    """Did the probe reach what the cell asks for? For DNS: the exact expected answer."""
    cell = live.cell
    if not cell.probe.protocol.startswith("dns"):
        return observation.reached, observation.error
    if cell.target.expect_nxdomain:
        return (True, None) if observation.error == "nxdomain" else (False, observation.error or "wrong-answer")
    if not observation.reached:
        return False, observation.error
    got = sorted(_srv_port_target(a) for a in observation.answers if not a.startswith("cname:"))
    if got != sorted(live.expected_answers):
        return False, "wrong-answer"
    if cell.target.expect_ra and observation.ra is False:  # the profile configures `header { response set ra }`
        return False, "no-ra"
    return True, None


def _srv_port_target(answer: str) -> str:
    """An SRV answer as cells expect it: "srv:<port> <target>" (priority and weight are the server's)."""
    fields = answer.removeprefix("srv:").split()
    return f"srv:{fields[2]} {fields[3]}" if answer.startswith("srv:") and len(fields) == 4 else answer


def _source_ok(live: LiveCell, observation: Observation) -> tuple[bool, str | None]:
    wanted = live.cell.expectation.source
    if wanted == "any":
        return True, None
    if wanted == "global-egress":
        egress = live.global_egress
        return observation.source_ip in egress, (f"{egress[0]}-{egress[-1]}" if egress else "no egress IPs")
    if wanted == "target-node-ip":  # kube-proxy masqueraded an outside client to the node it arrived at
        nodes = live.target_node_ips
        return observation.source_ip in nodes, (f"a node of {live.cell.target.cluster}: {', '.join(nodes)}")
    expected = {"preserved": live.src_ip, "node-ip": live.node_ip}.get(wanted)
    return observation.source_ip == expected, expected


# One cause, one text, whatever protocol saw it: agents word the same errno differently per protocol
# (asyncio's "Connect call failed (...)" for TCP, strerror or the ICMP sender for UDP, none for ICMP),
# so a missing route reads three ways in one run. These causes are worded here, once; the routes of
# both ends are in the evidence. Other classes keep the agent's detail (it is their only news).
CAUSES = {
    "no-route": "no-route (network or host unreachable)",
    "refused": "refused (nothing listens on that port)",
    "no-ra": "no-ra (answered without the RA bit: dig says 'recursion requested but not available'; the "
    "Corefile needs `header { response set ra }`)",
}
# A refusal worded as such (a reset, ICMP port unreachable from the target); other refusals (a
# connection closed without a reply) keep their own text.
_PLAIN_REFUSAL = re.compile(r"^(Connect call failed|Connection refused|connection refused|nothing listens)")
# The agents' generic timeout clause ("no TCP answer within 2.0s"): the latency already says it.
_GENERIC_TIMEOUT = re.compile(r"^no (TCP answer|UDP answer|DNS answer|echo reply) within [\d.]+s(; |$)")
TARGET_WORDS: dict[str, str] = {
    "pod-ip": "pod",
    "cluster-ip": "ClusterIP",
    "node-port": "NodePort",
    "headless": "headless pod",
    "dns-name": "name",
    "global-ip": "global IP",
    "external-host": "office host",
}
"""How a message names each model.TargetKind (a ClusterIP is not a pod)."""


def _cause(observation: Observation, error: str) -> str:
    plain_refusal = error == "refused" and (not observation.detail or _PLAIN_REFUSAL.match(observation.detail))
    if error in ("no-route", "no-ra") or plain_refusal:
        return CAUSES[error]
    text = error
    if error == "timeout" and observation.latency_ms is not None:
        text += f" after {observation.latency_ms / 1000:.1f}s"
    if error == "wrong-answer" and observation.answers:
        text += f" {list(observation.answers)}"
    detail = observation.detail.split(": ", 1)[1] if observation.detail.startswith("resolving ") else observation.detail
    if error in ("timeout", "mtu"):
        detail = _GENERIC_TIMEOUT.sub("", detail)
    if detail and detail != error:
        text += f" ({detail})"
    return text


def _stage(live: LiveCell, observation: Observation) -> str:
    """For a by-name connect (resolve, then tcp/udp): which step failed."""
    if not live.probe.get("qname") or live.cell.probe.protocol.startswith("dns"):
        return ""
    if observation.detail.startswith("resolving "):
        return f"resolving {live.probe['qname']}"
    return "connect"


def _describe(live: LiveCell, observation: Observation, error: str | None) -> str:
    if error is None:
        return "reached"
    stage = _stage(live, observation)
    return f"{stage}: {_cause(observation, error)}" if stage else _cause(observation, error)


def judge(live: LiveCell, first: Observation, retry: Observation | None = None) -> Judgement:
    """The verdict of one cell: pass, isolated, regression, leak, source-mismatch, flaky, optional."""
    cell, expectation = live.cell, live.cell.expectation
    reached, error = outcome(live, first)
    observation, retried = first, False
    if expectation.reachable == "yes" and not reached and retry is not None:
        retried = True
        reached_again, _ = outcome(live, retry)
        if reached_again:
            return Judgement(
                "flaky",
                _line(live, first, "reachable", f"{_describe(live, first, error)}, then reached on the re-probe"),
                retry,
                retried=True,
            )
    src = f"{cell.vantage.cluster}/{cell.vantage.node} {cell.vantage.kind} {live.src_ip}"
    if expectation.reachable == "optional":
        verdict = "optional"
        message = f"{src} -> {live.dst_addr}/{cell.probe.label}: optional, {_describe(live, observation, error)}"
        return Judgement(verdict, message, observation, retried)  # type: ignore[arg-type]
    if expectation.reachable == "no":
        if reached:
            return Judgement("leak", _line(live, observation, "isolated", "reached"), observation, retried)
        return Judgement(
            "isolated", _line(live, observation, "isolated", _describe(live, observation, error)), observation, retried
        )
    if not reached:
        return Judgement(
            "regression",
            _line(live, observation, "reachable", _describe(live, observation, error)),
            observation,
            retried,
        )
    source_ok, expected_ip = _source_ok(live, observation)
    if not source_ok:
        return Judgement(
            "source-mismatch",
            _line(
                live,
                observation,
                f"reachable with source {expectation.source} ({expected_ip})",
                f"reached, but the target saw source {observation.source_ip}",
            ),
            observation,
            retried,
            expected_ip,
        )
    return Judgement("pass", _line(live, observation, "reachable", "reached"), observation, retried, expected_ip)


def _line(live: LiveCell, observation: Observation, expected: str, got: str) -> str:
    cell = live.cell
    src = f"{cell.vantage.cluster}/{cell.vantage.node} {cell.vantage.kind} {live.src_ip}"
    target = cell.target
    # A by-name target's name is in dst_addr, with this run's namespace filled in (the cell's own
    # name still says NS_PLACEHOLDER): never repeat it unfilled.
    label = "" if target.kind == "dns-name" else f"{target.label} "
    return (
        f"{src} -> {target.cluster} {TARGET_WORDS.get(target.kind, target.kind)} {label}{live.dst_addr}/"
        f"{cell.probe.label}: expected {expected} ({cell.expectation.rule}), got {got}"
    )


def counts_by_expectation(cells: Sequence[Cell]) -> dict[str, int]:
    result = {"yes": 0, "no": 0, "optional": 0}
    for cell in cells:
        result[cell.expectation.reachable] += 1
    return result


def cell_record(live: LiveCell, judgement: Judgement, nodeid: str, dst_name: str, repro: str) -> CellRecord:
    """What matrix.json, the reports and the results bundle keep of one judged cell (evidence is
    added by the caller when the cell fails)."""
    cell, obs = live.cell, judgement.observation
    reached, error = outcome(live, obs)
    return {
        "id": cell.id,
        "nodeid": nodeid,
        "suite": cell.suite,
        "src": f"{cell.vantage.cluster}/{cell.vantage.node}",
        "src_kind": cell.vantage.kind,
        "src_ip": live.src_ip,
        "dst": dst_name,
        "dst_kind": cell.target.kind,
        "dst_addr": live.dst_addr,
        "protocol": cell.probe.label,
        "expected": cell.expectation.reachable,
        "expected_source": cell.expectation.source,
        "rule": cell.expectation.rule,
        "because": cell.expectation.because,
        "verdict": judgement.verdict,
        "observed": "reached" if reached else (error or "-"),
        "source_ip": obs.source_ip,
        "expected_source_ip": judgement.expected_source_ip,
        "latency_ms": obs.latency_ms,
        "message": judgement.message,
        "repro": repro,
        "answers": list(obs.answers),
        "expected_answers": list(live.expected_answers),
        "retried": judgement.retried,
        "evidence": "",
        "global_ip": live.global_ip or None,
        "path_mtu": obs.path_mtu,
        "ttl": obs.ttl,
    }
