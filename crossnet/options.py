"""Every option shared by the command line and the pytest plugin, declared once, and the one way
the setup (kind configs -> topology, profile, cells) is loaded from them.

Values are checked where they enter (argparse types), so a timeout of 0, -1 or nan never reaches
a probe, and an unknown provider or topology is a usage error naming the choices.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from crossnet.cells import cell_facts
from crossnet.config import TOPOLOGIES, load_topology, resolve_setup
from crossnet.model import Cell, NodeSpec, Topology
from crossnet.profile import Profile, ProfileError, load_profile
from crossnet.providers.existing.flags import OPTION_SPECS as EXISTING_OPTION_SPECS
from crossnet.providers.select import PROVIDER_NAMES
from crossnet.resources import KIND_CONFIGS
from crossnet.suites import build_cells

__all__ = [
    "OPTIONS",
    "Setup",
    "add_options",
    "fingerprint",
    "load_setup",
    "positive_count",
    "positive_seconds",
    "reports_dir_problem",
    "setup_from",
    "setup_mismatch",
]


def reports_dir_problem(reports_dir: Path) -> str | None:
    """Create --reports (and its parents); what is wrong with it and the fix, or None."""
    try:
        reports_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return (
            f"--reports {reports_dir}: is a file, not a directory; pass a directory "
            "for junit.xml, matrix.html and the other reports"
        )
    except OSError as exc:
        return f"--reports {reports_dir}: cannot be created ({exc.strerror}); pass a directory you can write"
    return None


def positive_seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds (0, negatives, nan and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: give a positive, finite number of seconds (e.g. 2)")
    return value


def positive_count(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give at least 1")
    return value


@dataclass(frozen=True)
class Option:
    flag: str
    attrs: dict[str, Any]


def _option(flag: str, help: str, **attrs: Any) -> Option:
    return Option(flag, {**attrs, "help": help})


OPTIONS: dict[str, Option] = {
    o.flag: o
    for o in (
        _option(
            "--provider",
            "where the clusters come from: 'kind' creates real kind clusters (needs kind and docker); "
            "'lab' emulates kind's topology in network namespaces (needs root); 'auto' (default) picks "
            "kind when kind and docker are usable, else the lab, and says why",
            choices=PROVIDER_NAMES,
            default="auto",
        ),
        _option(
            "--reuse",
            "kind: use existing clusters of the configs' names (never deleted by crossnet)",
            action="store_true",
        ),
        _option(
            "--plumbing",
            "'inject' (the default for lab and kind): crossnet joins the clusters itself (node routes, "
            "Corefile forwards, the profile's node settings) and undoes it at the end; 'none': crossnet "
            "changes nothing outside its own agents -- the clusters are joined by whoever built them (a "
            "vendor's product, your own scripts), and the matrix says whether that works. --provider "
            "existing has no default: say which. With --attach it must match `crossnet up`",
            choices=("inject", "none"),
            default=None,
        ),
        _option(
            "--agent-image",
            "kind: the image the agents run on (default python:3-slim); mirror it for air-gapped clusters",
            default=None,
            metavar="IMAGE",
        ),
        _option(
            "--kind-config",
            "a kind cluster config (repeat per cluster; default: kind-configs/cluster-1.yaml and cluster-2.yaml)",
            action="append",
            default=None,
            metavar="FILE",
        ),
        _option(
            "--profile",
            "expectation profile: a name under profiles/ or a YAML path (default: the topology's, flat-routed)",
            default=None,
            metavar="NAME|PATH",
        ),
        _option(
            "--topology",
            "a named setup: 'routed' (default: kind-configs/cluster-1,2 + flat-routed), 'globalnet' "
            "(three clusters with identical CIDRs joined by Submariner Globalnet + the globalnet profile), "
            "'bgp' (kind-configs/bgp-1,2: Calico without encapsulation joined by BGP through a top-of-rack "
            "switch, an office host and enterprise DNS + bgp-flat; also bgp-flat-svc, bgp-flat-keep-source) or "
            "'mcs' (kind-configs/mcs-1,2: routed clusters with Multi-Cluster Services, clusterset.local + "
            "mcs-karmada; also mcs-clusterset-only)",
            default=None,
            choices=sorted(TOPOLOGIES),
            metavar="NAME",
        ),
        _option(
            "--state-dir",
            "where this run keeps its state file and sockets; must not exist yet (default .crossnet/<run-id>)",
            default=None,
            metavar="DIR",
        ),
        _option(
            "--probe-timeout",
            "timeout of one probe: a positive number of seconds (default 2.0)",
            type=positive_seconds,
            default=2.0,
            metavar="SECONDS",
        ),
    )
}

# Existing clusters (--provider existing): --kubeconfig, --context, --clusterset, --nodes, --host-vantage, ...
OPTIONS.update({flag: Option(flag, dict(attrs)) for flag, attrs in EXISTING_OPTION_SPECS.items()})


class _Adds(Protocol):
    def __call__(self, *flags: str, **attrs: Any) -> Any: ...


def add_options(add: _Adds, *flags: str, **overrides: dict[str, Any]) -> None:
    """Declare the named options with `add` (argparse's `add_argument` or pytest's `addoption`);
    `overrides` maps a flag's dest (e.g. state_dir) to attributes that differ there."""
    for flag in flags:
        option = OPTIONS[flag]
        add(flag, **{**option.attrs, **overrides.get(flag[2:].replace("-", "_"), {})})


@dataclass(frozen=True)
class Setup:
    """What a run is about, from the configs and the profile only (no cluster is asked)."""

    topology: Topology
    profile: Profile
    cells: list[Cell]
    notes: tuple[str, ...] = ()  # profile rules this topology's shape leaves unused (printed, not errors)


def load_setup(topology: str | None, kind_configs: Sequence[str] | None, profile: str | None) -> Setup:
    """resolve (named topology or explicit configs) -> profile -> validated topology -> cells.
    Raises ConfigError/ProfileError naming every problem; a profile rule that matches no cell of
    this topology is a ProfileError too (it would silently decide nothing), unless only the
    topology's shape keeps it from matching (see setup_from)."""
    paths, profile_name = resolve_setup(KIND_CONFIGS, topology, kind_configs, profile)
    loaded = load_profile(profile_name)
    topo = load_topology(paths, allow_overlap=loaded.globalnet, global_cidr=loaded.plumbing.global_cidr)
    return setup_from(topo, loaded)


def setup_from(topo: Topology, loaded: Profile) -> Setup:
    """The cells of a topology (from kind configs, or discovered) under a profile. A rule that
    matches none of them is a ProfileError when it could match no cell of this topology's clusters
    at any size (a cluster name that is not here, a combination no suite builds); when only the
    topology's shape keeps it from matching (one node per cluster: no same-cluster cell, as a
    `--nodes 1` sample has), it is a note in `Setup.notes` (the pytest header prints them)."""
    cells = build_cells(topo, loaded)
    unused = loaded.unused_rules(cell_facts(c) for c in cells)
    notes: list[str] = []
    if unused:
        fuller = _with_two_nodes_each(topo)
        shaped = [cell_facts(c) for c in build_cells(fuller, loaded)] if fuller != topo else []
        wrong = [r for r in unused if not any(r.matches(f) for f in shaped)]
        if wrong:
            raise ProfileError(
                f"{loaded.source_file}: "
                + "; ".join(
                    f"rule {r.ident.split('#')[1]} matches no cell of this topology (check its match keys and "
                    f"values: clusters here are {', '.join(c.name for c in topo.clusters)})"
                    for r in wrong
                )
            )
        small = ", ".join(f"{c.name} {len(c.nodes)}" for c in topo.clusters if len(c.nodes) < 2)
        notes = [
            f"note: {loaded.source_file}: rule {r.ident.split('#')[1]} decides no cell here: it matches only cells "
            f"of clusters with two or more nodes (nodes here: {small}; sample more with --nodes)"
            for r in unused
        ]
    return Setup(topo, loaded, cells, tuple(notes))


def _with_two_nodes_each(topo: Topology) -> Topology:
    """`topo` with a second node in every cluster that has one: the shape a rule may be written for."""
    clusters = []
    for cluster in topo.clusters:
        nodes = cluster.nodes
        if len(nodes) < 2:
            taken = {n.short for n in nodes}
            short = next(f"shape-worker{i}" for i in range(len(taken) + 1) if f"shape-worker{i}" not in taken)
            nodes = (*nodes, NodeSpec(cluster.name, short, "worker"))
        clusters.append(dataclasses.replace(cluster, nodes=nodes))
    return Topology(tuple(clusters))


def plumbing_mode(given: object) -> str:
    """The --plumbing mode of a lab or kind run: as given, else "inject" (its default). Vendor mode
    reads the option itself: there, not giving one is an error (existing_mode.load)."""
    return str(given) if given else "inject"


def fingerprint(setup: Setup, plumbing_mode: str = "inject") -> dict[str, Any]:
    """What a run was brought up for, recorded in its state file so that `--attach` with another
    profile or topology is refused instead of judged against plumbing that was never applied."""

    def digest(path: str) -> str:
        try:
            return hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            return ""

    return {
        "profile": setup.profile.name,
        "profile_sha256": digest(setup.profile.source_file),
        "plumbing": dataclasses.asdict(setup.profile.plumbing),
        "plumbing_mode": plumbing_mode,
        "clusters": [c.name for c in setup.topology.clusters],
        "configs_sha256": [digest(c.source_file) for c in setup.topology.clusters],
    }


def setup_mismatch(recorded: Any, setup: Setup, plumbing_mode: str = "inject") -> str | None:
    """Why a run recorded as `recorded` (state.json "setup") is not the one `setup` asks about."""
    if not isinstance(recorded, dict):
        return None  # a run from before fingerprints: nothing to compare
    wanted = fingerprint(setup, plumbing_mode)
    if recorded.get("plumbing_mode", "inject") != plumbing_mode:
        mode = recorded.get("plumbing_mode", "inject")
        return (
            f"it was brought up with --plumbing {mode!s:.10} (crossnet "
            + ("changed nothing: the clusters are joined by whoever built them" if mode == "none" else "joined it")
            + f"), this session asks about --plumbing {plumbing_mode}; pass --plumbing {mode!s:.10}"
        )
    if recorded.get("clusters") != wanted["clusters"] or recorded.get("configs_sha256") != wanted["configs_sha256"]:
        return (
            f"it was brought up from other kind configs (clusters {', '.join(map(str, recorded.get('clusters') or []))}"
            f"; this session asks about {', '.join(wanted['clusters'])})"
        )
    if recorded.get("plumbing") is not None and recorded.get("plumbing") != wanted["plumbing"]:
        # Another profile on the same plumbing is a fair question (other expectations, same network);
        # another plumbing would be judged against routes and rules that were never applied.
        return (
            f"it was brought up with profile {recorded.get('profile')!s:.80}, whose plumbing "
            f"({_plumbing_text(recorded.get('plumbing'))}) differs from profile {wanted['profile']}'s "
            f"({_plumbing_text(wanted['plumbing'])}); pass --profile {recorded.get('profile')!s:.80} or a "
            "profile with the same plumbing, or bring up a run with this profile"
        )
    return None


def _plumbing_text(plumbing: Any) -> str:
    if not isinstance(plumbing, dict):
        return "unknown"
    return ", ".join(f"{k}={str(v)[:40]}" for k, v in sorted(plumbing.items()))
