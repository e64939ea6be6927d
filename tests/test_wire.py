"""The wire formats stay in step: every probe the harness builds for the shipped topologies passes
the agent's own validation (the agent keeps its copy of the probe fields, importing nothing from
the rest of crossnet), uses only fields `wire.ProbeSpec` declares, and the agent's results carry
only fields `wire.ProbeResult` declares."""

from __future__ import annotations

import asyncio

import pytest

from crossnet.agent.core import run_probe
from crossnet.agent.validate import validate_probe
from crossnet.live import live_cell
from crossnet.options import load_setup
from crossnet.providers.lab.clusterset import live_cluster_set
from crossnet.providers.lab.topology import plan_lab
from crossnet.wire import ProbeResult, ProbeSpec


@pytest.mark.parametrize("topology", ["routed", "globalnet"])
def test_every_probe_the_harness_builds_is_one_the_agent_accepts(topology: str) -> None:
    setup = load_setup(topology, None, None)
    cluster_set = live_cluster_set(plan_lab(setup.topology, setup.profile.plumbing.global_cidr))
    probes = [live_cell(cell, cluster_set, 2.0).probe for cell in setup.cells]
    assert len(probes) > 300
    for probe in probes:
        assert set(probe) <= set(ProbeSpec.__annotations__), set(probe) - set(ProbeSpec.__annotations__)
        accepted = validate_probe(dict(probe))
        wanted = {k: v for k, v in probe.items() if k in ("id", "protocol", "dst", "port", "qname", "server")}
        assert accepted.items() >= wanted.items(), (probe, accepted)


def test_an_agent_result_uses_only_declared_fields() -> None:
    probe: ProbeSpec = {"id": "x", "protocol": "tcp", "dst": "127.0.0.1", "port": 9, "timeout": 0.5}
    result = asyncio.run(run_probe(validate_probe(dict(probe))))
    assert result["reached"] is False and result["error"]  # nothing listens on the discard port here
    assert set(result) <= set(ProbeResult.__annotations__), set(result)
