"""Observation + expectation -> verdict: pass, isolated, regression, leak, source-mismatch,
flaky, optional. Pure: judges never probe."""

from __future__ import annotations

from collections.abc import Sequence

from crossnet.live import LiveCell
from crossnet.model import Cell, Judgement, Observation

__all__ = ["counts_by_expectation", "judge", "outcome"]


def outcome(live: LiveCell, observation: Observation) -> tuple[bool, str | None]:
    """Did the probe reach what the cell asks for? For DNS: the exact expected answer."""
    cell = live.cell
    if not cell.probe.protocol.startswith("dns"):
        return observation.reached, observation.error
    if cell.target.expect_nxdomain:
        return (True, None) if observation.error == "nxdomain" else (False, observation.error or "wrong-answer")
    if not observation.reached:
        return False, observation.error
    got = sorted(a for a in observation.answers if not a.startswith("cname:"))
    if got != sorted(live.expected_answers):
        return False, "wrong-answer"
    return True, None


def _source_ok(live: LiveCell, observation: Observation) -> tuple[bool, str | None]:
    wanted = live.cell.expectation.source
    if wanted == "any":
        return True, None
    if wanted == "global-egress":
        egress = live.global_egress
        return observation.source_ip in egress, (f"{egress[0]}-{egress[-1]}" if egress else "no egress IPs")
    expected = {"preserved": live.src_ip, "node-ip": live.node_ip}.get(wanted)
    return observation.source_ip == expected, expected


def _describe(observation: Observation, error: str | None) -> str:
    if error is None:
        return "reached"
    text = error
    if error == "timeout" and observation.latency_ms is not None:
        text += f" after {observation.latency_ms / 1000:.1f}s"
    if error == "wrong-answer" and observation.answers:
        text += f" {list(observation.answers)}"
    if observation.detail and error not in ("timeout",):
        text += f" ({observation.detail})"
    return text


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
                _line(live, first, "reachable", f"{_describe(first, error)}, then reached on the re-probe"),
                retry,
                retried=True,
            )
    src = f"{cell.vantage.cluster}/{cell.vantage.node} {cell.vantage.kind} {live.src_ip}"
    if expectation.reachable == "optional":
        verdict = "optional"
        message = f"{src} -> {live.dst_addr}/{cell.probe.protocol}: optional, {_describe(observation, error)}"
        return Judgement(verdict, message, observation, retried)  # type: ignore[arg-type]
    if expectation.reachable == "no":
        if reached:
            return Judgement("leak", _line(live, observation, "isolated", "reached"), observation, retried)
        return Judgement(
            "isolated", _line(live, observation, "isolated", _describe(observation, error)), observation, retried
        )
    if not reached:
        return Judgement(
            "regression", _line(live, observation, "reachable", _describe(observation, error)), observation, retried
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
    what = "svc " if cell.target.kind == "dns-name" else "pod "
    return (
        f"{src} -> {cell.target.cluster} {what}{cell.target.label} {live.dst_addr}/{cell.probe.protocol}: "
        f"expected {expected} ({cell.expectation.rule}), got {got}"
    )


def counts_by_expectation(cells: Sequence[Cell]) -> dict[str, int]:
    result = {"yes": 0, "no": 0, "optional": 0}
    for cell in cells:
        result[cell.expectation.reachable] += 1
    return result
