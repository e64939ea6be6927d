"""Bring-up and teardown against the fake provider: plumbing is recorded with its undo, a
vendor's Corefile comes back byte for byte, and teardown runs in reverse even after errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossnet.config import load_topology
from crossnet.lifecycle import bring_up_with, tear_down
from crossnet.providers.base import ProviderError
from crossnet.providers.fake import FakeProvider
from tests.conftest import ROOT

TOPOLOGY = load_topology([ROOT / "kind-configs" / "cluster-1.yaml", ROOT / "kind-configs" / "cluster-2.yaml"])
VENDOR_COREFILE = (".:53 {\n\terrors\n    health   {  lameduck 5s }\n    kubernetes cluster-1.com in-addr.arpa {\n"
                   "      pods verified   # vendor tweak\n    }\n    forward . 192.0.2.53\n    cache 30\n}  ")


def quiet(_message: str) -> None:
    pass


def test_plumbing_is_applied_and_undone_in_reverse(tmp_path: Path) -> None:
    provider = FakeProvider(tmp_path / "state", corefiles={"cluster-1": VENDOR_COREFILE})
    run = bring_up_with(provider, TOPOLOGY, "run-1", progress=quiet)
    # 3 nodes x 3 peer nodes, both ways.
    assert sum(len(r) for r in provider.routes.values()) == 18
    assert provider.routes[("cluster-1", "worker")]["10.20.2.0/24"] == "172.19.0.7"
    patched = provider.corefiles["cluster-1"]
    assert patched.startswith(VENDOR_COREFILE)
    assert "# crossnet begin run-1" in patched and "forward . 10.20.0.3" in patched
    state = provider.state.read()
    assert state["plumbing"]["corefiles"]["cluster-1"] == VENDOR_COREFILE and state["phase"] == "ready"

    tear_down(run, progress=quiet)
    assert provider.corefiles["cluster-1"] == VENDOR_COREFILE  # byte for byte, odd whitespace and all
    assert "crossnet" not in provider.corefiles["cluster-2"]
    assert all(not routes for routes in provider.routes.values())
    undo = [entry for entry in provider.log if entry.startswith(("corefile", "routes -", "down"))][-4:]
    assert undo == ["corefile cluster-2", "corefile cluster-1", "routes -18", "down"]


def test_a_failed_bring_up_tears_down_what_it_made(tmp_path: Path) -> None:
    provider = FakeProvider(tmp_path / "state", corefiles={"cluster-2": "garbage {\n"})
    with pytest.raises(ProviderError, match="cluster-2: cannot add the peer forwards"):
        bring_up_with(provider, TOPOLOGY, "run-2", progress=quiet)
    assert provider.down_called
    assert all(not routes for routes in provider.routes.values())
    assert provider.corefiles["cluster-1"].count("crossnet begin") == 0
