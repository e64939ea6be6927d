"""Plumbing: node state checked with testinfra, one test per node and fact, so a fault is named
at its cause (a missing route, ip_forward off, a masquerade rule, a Corefile forward block) next
to the cells it breaks. Facts come from the configs and the profile; see crossnet.facts. Under
--plumbing none (clusters somebody else joined) they report what is there, each with its value, and
fail only what is broken: crossnet's own routes and forwards are no requirement there."""

from typing import Any

import pytest

from crossnet import existing_mode
from crossnet.facts import NodeFact, check_fact, node_host, planned_facts, reading_once
from crossnet.options import plumbing_mode
from crossnet.plugin import SETUP_KEY, current_run, current_setup

SUITE = "plumbing"
_HOSTS = pytest.StashKey[dict[tuple[str, str], Any]]()  # per session: each node is read once for its facts


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fact" in metafunc.fixturenames and SETUP_KEY in metafunc.config.stash:
        topology, profile, _ = current_setup(metafunc.config)
        mode = plumbing_mode(metafunc.config.getoption("plumbing"))
        facts = planned_facts(topology, profile, mode)  # none: read-only facts
        metafunc.parametrize("fact", facts, ids=[f.id for f in facts])


def test_plumbing(fact: NodeFact, request: pytest.FixtureRequest) -> None:
    run = current_run(request.config)
    _, profile, _ = current_setup(request.config)
    why = existing_mode.node_facts_refused(run.provider, fact.cluster) if fact.node else None
    if why:  # clusters somebody else built: nothing runs on their nodes unless allowed
        pytest.skip(f"{fact.id}: {why} (privileged debug pods; the Corefile fact is read through the API)")
    node = fact.node or next(n.short for n in run.cluster_set.cluster(fact.cluster).nodes)
    key, hosts = (fact.cluster, node), request.config.stash.setdefault(_HOSTS, {})
    if key not in hosts:
        hosts[key] = reading_once(node_host(run, fact.cluster, node))
    result = check_fact(hosts[key], fact, run, profile)
    request.node.user_properties += [("expected", result.expected), ("observed", result.observed)]
    request.node.crossnet_fact = {
        "id": fact.id,
        "ok": result.ok,
        "expected": result.expected,
        "observed": result.observed,
    }  # matrix.json "facts", matrix.html, summary.md
    if not result.ok:
        pytest.fail(f"{fact.id}: expected {result.expected}, found {result.observed}", pytrace=False)
