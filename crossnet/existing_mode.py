"""`pytest suites/ --provider existing`: the pytest plugin's part for clusters somebody else built.

The controller discovers the clusters once (read-only) and builds the cells from what it found
instead of kind configs; the provider records that discovery in the state file, so xdist workers
and `--attach` build the very same cells from it. crossnet changes nothing outside its own
namespace there: `--plumbing none`, unless `--plumbing inject` is given explicitly for clusters the
user owns (joined the kind way, undone at the end: providers/existing/inject.py); the option's
default ("inject", for lab and kind) is refused here, never taken as consent. Cells of host vantages a cluster refused
(Pod Security Admission, admission webhooks, no --host-vantage) are skipped with that reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crossnet.config import ConfigError, resolve_setup
from crossnet.model import Cell
from crossnet.options import Setup, plumbing_mode, setup_from
from crossnet.profile import ProfileError, load_profile
from crossnet.providers.base import InputError, ProviderError, StateFile
from crossnet.providers.existing.flags import OPTION_SPECS
from crossnet.providers.existing.session import Discovery, discover, discovery_record, recorded_topology
from crossnet.providers.existing.settings import option_values, settings_from_options
from crossnet.resources import KIND_CONFIGS

__all__ = [
    "EXISTING",
    "FLAGS",
    "discovery_of",
    "header",
    "load",
    "matrix_record",
    "node_facts_refused",
    "refused",
    "skip_refused_vantage",
]

EXISTING = "existing"
FLAGS = tuple(OPTION_SPECS)  # --kubeconfig, --context, --clusterset, --nodes, --host-vantage, ...
DISCOVERY_KEY = pytest.StashKey[Discovery]()


def _recorded_state_dir(config: pytest.Config) -> Path | None:
    """The state directory this session reads instead of bringing a run up (a worker, --attach)."""
    if hasattr(config, "workerinput"):
        recorded = config.workerinput.get("crossnet_state_dir")
        return Path(recorded) if recorded else None
    attach = config.getoption("attach")
    return Path(attach) if attach else None


def _recorded_provider(state_dir: Path) -> str:
    try:
        return str(StateFile(state_dir).read().get("provider"))
    except (InputError, ProviderError):
        return ""  # the session's own attach reports a broken state file with its fix


def load(config: pytest.Config) -> Setup | None:
    """The setup of an existing-cluster session, or None when this session is another provider's."""
    recorded = _recorded_state_dir(config)
    if recorded is not None and _recorded_provider(recorded) != EXISTING:
        return None
    if recorded is None and config.getoption("provider") != EXISTING:
        return None
    given = config.getoption("plumbing")  # no default here: changing a vendor's clusters is asked for explicitly
    mode = plumbing_mode(given)
    if given is None and recorded is None:
        raise pytest.UsageError(
            "--provider existing changes nothing outside crossnet's own namespace: pass --plumbing none "
            "(the clusters are joined by whoever built them; the matrix says whether that works), or "
            "--plumbing inject explicitly for clusters you own, to join them the kind way (undone at the end)"
        )
    try:
        _, profile_name = resolve_setup(KIND_CONFIGS, config.getoption("topology"), None, config.getoption("profile"))
        profile = load_profile(profile_name)
        if recorded is not None:
            return setup_from(recorded_topology(recorded), profile)
        settings = settings_from_options({**option_values(config.getoption), "plumbing": mode}, profile)
        found = discover(settings)
    except (ConfigError, ProfileError, InputError, ProviderError) as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[DISCOVERY_KEY] = found
    return setup_from(found.topology, profile)


def discovery_of(config: pytest.Config) -> Discovery | None:
    """What the controller discovered (None in workers, with --attach, and for other providers)."""
    return config.stash.get(DISCOVERY_KEY, None)


def header(config: pytest.Config) -> list[str]:
    found = discovery_of(config)
    return found.header() if found is not None else []


def refused(provider: Any, cell: Cell, cluster_set: Any = None) -> str | None:
    """Why the cluster refused this cell's vantage (a host vantage under Pod Security "restricted",
    or without --host-vantage), or why the run has no end of it (a network outside the clusters the
    provider does not run); None when it can be probed."""
    if cluster_set is not None:
        present = {c.name for c in (*cluster_set.clusters, *cluster_set.outside)}
        absent = [name for name in (cell.vantage.cluster, cell.target.cluster) if name not in present]
        if absent:
            return (
                f"the {cluster_set.provider} provider does not run the {absent[0]!r} network's hosts "
                "(the lab does: --provider lab)"
            )
    reason = getattr(provider, "skip_reason", None)
    why = reason(cell.vantage.cluster, cell.vantage.kind) if reason is not None else None
    return str(why) if why else None


def skip_refused_vantage(provider: Any, cell: Cell, cluster_set: Any = None) -> None:
    """Skip a cell whose vantage the cluster refused, saying why: not a failure, never probed."""
    why = refused(provider, cell, cluster_set)
    if why:
        pytest.skip(f"{cell.vantage.cluster} {cell.vantage.kind} vantage: {why}")


def matrix_record(run: Any) -> dict[str, Any]:
    """matrix.json's `run.discovery` (and so the results bundle's): each cluster's discovered facts
    with their sources, the sampled nodes, the pre-flight rows; {} for other providers."""
    if run is None or getattr(run.cluster_set, "provider", "") != EXISTING:
        return {}
    try:
        return discovery_record(run.state_dir)
    except (InputError, ProviderError):
        return {}


def node_facts_refused(provider: Any, cluster: str) -> str | None:
    """Why a node fact of `cluster` cannot be looked at (existing clusters without --node-evidence:
    crossnet runs nothing on nodes it was not allowed onto); None for every other provider."""
    refused_by = getattr(provider, "node_access_refused", None)
    return refused_by(cluster) if refused_by is not None else None
