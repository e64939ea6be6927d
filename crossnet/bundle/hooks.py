"""The pytest side of the results bundle (loaded by crossnet.plugin's `pytest_plugins`): the vendor
options, each judged cell's raw observations riding on its report (from xdist workers too), and,
on the controller once the reports are written, `reports/crossnet-results-<run-id>.tar.gz`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from crossnet.bundle.archive import (
    BUNDLE_SCHEMA,
    OBSERVATIONS_SCHEMA,
    BundleError,
    crossnet_version,
    member_name,
    sha256,
    to_json,
    write_bundle,
)
from crossnet.lifecycle import signals_deferred
from crossnet.model import ClusterSet, Observation
from crossnet.options import Option, Setup
from crossnet.providers.existing.sample import topology_to_json

if TYPE_CHECKING:
    import pytest

    from crossnet.lifecycle import Run

__all__ = [
    "DISCOVERED",
    "PREFLIGHT",
    "TOPOLOGY",
    "VENDOR_FIELDS",
    "VENDOR_OPTIONS",
    "build_members",
    "observation_record",
]

hookimpl = pluggy.HookimplMarker("pytest")
VENDOR_FIELDS = ("organization", "product", "product_version", "url")
EXISTING = "existing"
TOPOLOGY, DISCOVERED, PREFLIGHT = "topology.json", "discovered.json", "preflight.json"
CLUSTERSET = "clusterset.yaml"  # the cluster-set file, when the run was given one


def _vendor_text(text: str) -> str:
    if len(text) > 200 or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: give at most 200 printable characters")
    return text.strip()


def _vendor_url(text: str) -> str:
    if not re.fullmatch(r"https?://[^\s]{1,500}", text):
        raise argparse.ArgumentTypeError(f"{text[:60]!r}: give an http(s) URL without spaces")
    return text


def _vendor(flag: str, help: str, kind: Any = _vendor_text, metavar: str = "NAME") -> Option:
    return Option(flag, {"type": kind, "default": None, "metavar": metavar, "help": f"results bundle: {help}"})


VENDOR_OPTIONS: dict[str, Option] = {
    o.flag: o
    for o in (
        _vendor("--organization", "the organization whose product was tested (as in mcs-api's conformance report)"),
        _vendor("--product", "the product tested (the CNI or multi-cluster layer)"),
        _vendor("--product-version", "the product's version", metavar="VERSION"),
        _vendor("--url", "the product's web page", _vendor_url, "URL"),
    )
}
"""Declared like options.OPTIONS (moved there, other commands could offer them too)."""


def build_members(
    *,
    reports: Path,
    junit: Path | None,
    setup: Setup,
    cluster_set: ClusterSet,
    observations: Mapping[str, Any],
    run_id: str,
    vendor: Mapping[str, str],
    probe_timeout: float,
    extras: Mapping[str, Path] | None = None,
) -> dict[str, bytes]:
    """The files of a bundle but its manifest: the reports, the setup's profile, where its topology
    came from (the kind configs; for existing clusters the discovered topology, the discovery facts
    and the pre-flight rows) and what the run recorded. Nothing else is read."""
    members = {name: (reports / name).read_bytes() for name in ("matrix.json", "matrix.html", "summary.md")}
    if junit is not None:
        members["junit.xml"] = junit.read_bytes()
    matrix = json.loads(members["matrix.json"])
    members["discovery.json"] = to_json({k: v for k, v in matrix.items() if k != "cells"})
    profile = f"profile/{member_name(Path(setup.profile.source_file).name)}"
    profile += "" if Path(profile).suffix else ".yaml"  # a path without one would be read as a profile's name
    members[profile] = Path(setup.profile.source_file).read_bytes()
    configs: list[dict[str, str]] = []
    topology: dict[str, str] = {}
    if cluster_set.provider == EXISTING:  # no kind config: the cells came from what discovery found
        members.update(_existing_members(setup, matrix))
        topology = {"file": TOPOLOGY, "sha256": sha256(members[TOPOLOGY])}
    else:
        for index, cluster in enumerate(setup.topology.clusters, start=1):
            name = f"kind-configs/{index:02d}-{member_name(Path(cluster.source_file).name)}"
            members[name] = Path(cluster.source_file).read_bytes()
            configs.append({"cluster": cluster.name, "file": name, "sha256": sha256(members[name])})
    members["cluster-set.json"] = to_json(cluster_set.to_json())
    members["observations.json"] = to_json(
        {"schema": OBSERVATIONS_SCHEMA, "probe_timeout": probe_timeout, "cells": dict(sorted(observations.items()))}
    )
    for name, path in sorted((extras or {}).items()):
        members[member_name(name)] = path.read_bytes()
    members["bundle.json"] = to_json(
        {
            "schema": BUNDLE_SCHEMA,
            "run_id": run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "crossnet_version": crossnet_version(),
            "vendor": {k: vendor.get(k, "") for k in VENDOR_FIELDS},
            "provider": cluster_set.provider,
            "profile": {"name": setup.profile.name, "file": profile, "sha256": sha256(members[profile])},
            "kind_configs": configs,
            **({"topology": topology} if topology else {}),
            "probe_timeout": probe_timeout,
            "cells": len(matrix.get("cells") or []),
            "files": sorted([*members, "bundle.json"]),
        }
    )
    return members


def _existing_members(setup: Setup, matrix: Mapping[str, Any]) -> dict[str, bytes]:
    """An existing-clusters run's own members: the topology its cells were built from (what the
    controller discovered and recorded), the discovery facts and the pre-flight rows (matrix.json's
    `run.discovery`, read from the state file before the teardown)."""
    found = dict((matrix.get("run") or {}).get("discovery") or {})
    rows = [r for r in found.pop("preflight", None) or [] if isinstance(r, dict)]
    topology = topology_to_json(setup.topology)
    for cluster in topology["clusters"]:  # `context:<name>`, or the cluster-set file (bundled as clusterset.yaml)
        if not str(cluster["source_file"]).startswith("context:"):
            cluster["source_file"] = CLUSTERSET
    return {
        TOPOLOGY: to_json(topology),
        DISCOVERED: to_json(found),
        PREFLIGHT: to_json(
            {
                "ran": bool(rows),  # no row: --skip-preflight
                "blocking": sum(r.get("status") == "fail" for r in rows),
                "warnings": sum(r.get("status") == "warn" for r in rows),
                "rows": rows,
            }
        ),
    }


def observation_record(first: Observation, retry: Observation | None, retried: bool) -> dict[str, Any]:
    """One cell's entry of observations.json."""
    return {"first": _plain(first), "retry": _plain(retry) if retry else None, "retried": retried}


_OBSERVATION_FIELDS = tuple(field.name for field in dataclasses.fields(Observation))


def _plain(observation: Observation) -> dict[str, Any]:
    """The observation as JSON data (its fields are scalars but `answers`: a shallow copy does,
    where dataclasses.asdict's deep copy cost ~80 µs a cell)."""
    return {**{name: getattr(observation, name) for name in _OBSERVATION_FIELDS}, "answers": list(observation.answers)}


# --------------------------------------------------------------------------- hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("crossnet")
    for option in VENDOR_OPTIONS.values():
        group.addoption(option.flag, **option.attrs)


def pytest_configure(config: pytest.Config) -> None:
    from crossnet.plugin import CELLS_KEY

    if CELLS_KEY in config.stash and not hasattr(config, "workerinput"):  # the controller of a suites run
        config.pluginmanager.register(_Bundler(config), "crossnet-bundle")


@hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A judged cell's raw observations ride on its report (to the xdist controller too)."""
    made = yield
    if call.when == "call" and (raw := _raw_observation(item)) is not None:
        made.crossnet_observation = raw
    return made


def _raw_observation(item: pytest.Item) -> dict[str, Any] | None:
    """What the runner observed for the item's cell: the first probe (runner.observed, shared with
    the SNAT suite) and the re-probe when it made the cell flaky (then the judgement's observation)."""
    from crossnet.plugin import BATCH_KEY, RUNNER_KEY

    record = getattr(item, "crossnet_cell", None)
    runner = item.config.stash.get(RUNNER_KEY, None)
    if not isinstance(record, dict) or runner is None:
        return None
    judged = item.config.stash.get(BATCH_KEY, {}).get(str(record["suite"]), {}).get(str(record["id"]))
    live = runner.lives.get(str(record["id"]))
    if judged is None or live is None:
        return None
    first = runner.observed.get(live.probe_key, judged.observation)
    retry = judged.observation if judged.verdict == "flaky" else None
    return {"id": record["id"], **observation_record(first, retry, judged.retried)}


class _Bundler:
    """On the controller: gathers the raw observations, writes the bundle once the reports are."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.observations: dict[str, Any] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        raw = getattr(report, "crossnet_observation", None)
        if report.when == "call" and isinstance(raw, dict):
            self.observations[str(raw["id"])] = {k: v for k, v in raw.items() if k != "id"}

    @hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Generator[None, Any, Any]:
        """Around the plugin's (reports, teardown) and junitxml's: the run is read before, the
        bundle written after."""
        from crossnet.plugin import REPORTS_STARTED_KEY, RUN_KEY

        run = self.config.stash.get(RUN_KEY, None)
        due = run is not None and self.config.stash.get(REPORTS_STARTED_KEY, False)
        state = _state(run) if due and run is not None else {}
        result = yield
        if due and run is not None:
            with signals_deferred():
                self._write(run, state)
        return result

    def _write(self, run: Run, state: Mapping[str, Any]) -> None:
        from crossnet.plugin import LOADED_KEY, STARTED_KEY

        config = self.config
        reports, started = Path(config.getoption("reports")), config.stash.get(STARTED_KEY, 0.0)
        run_id = str(state.get("run_id") or run.state_dir.name)
        xmlpath, cluster_set_file = getattr(config.option, "xmlpath", None), config.getoption("clusterset", None)
        junit = Path(str(xmlpath)) if xmlpath else None  # written by this session, not left by an earlier one
        fresh = junit is not None and junit.is_file() and junit.stat().st_mtime >= started - 1
        extras = {CLUSTERSET: Path(str(cluster_set_file))} if cluster_set_file else {}
        try:
            members = build_members(
                reports=reports,
                junit=junit if fresh else None,
                setup=config.stash[LOADED_KEY],
                cluster_set=run.cluster_set,
                observations=self.observations,
                run_id=run_id,
                vendor={k: str(config.getoption(k) or "") for k in VENDOR_FIELDS},
                probe_timeout=float(config.getoption("probe_timeout")),
                extras=extras,
            )
            path = write_bundle(reports, run_id, members, [str(state.get("agent_token") or "")])
            line = f"crossnet bundle: {path} (check it: crossnet bundle verify {path})"
            for earlier in reports.glob("crossnet-results-*.tar.gz"):  # replaced, as the other reports are
                if earlier != path and not earlier.is_symlink() and earlier.stat().st_mtime < started:
                    earlier.unlink(missing_ok=True)
        except (BundleError, OSError, ValueError) as exc:
            line = f"crossnet bundle: not written: {exc}"
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.write_line(line)
        else:
            print(line, file=sys.stderr)


def _state(run: Run) -> dict[str, Any]:
    try:
        return dict(run.provider.state.read())
    except Exception:  # noqa: BLE001 - a run whose state cannot be read still gets its bundle
        return {}
