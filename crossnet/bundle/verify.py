"""`crossnet bundle verify FILE`: the manifest, then every cell re-judged from its raw observations
with the bundled profile, on the bundled cluster set; and the command line around it."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from crossnet.bundle.archive import (
    BUNDLE_SCHEMA,
    MANIFEST,
    SAFE_NAME,
    Unusable,
    crossnet_version,
    document,
    manifest_problems,
    read_bundle,
    sha256,
)
from crossnet.config import ConfigError
from crossnet.judge import judge, outcome
from crossnet.live import live_cell
from crossnet.model import ClusterSet, Observation
from crossnet.options import Setup, load_setup, setup_from
from crossnet.profile import ProfileError, load_profile
from crossnet.providers.base import ProviderError
from crossnet.providers.existing.sample import topology_from_json
from crossnet.report.document import cells_of, count, run_of, validate_matrix
from crossnet.yamlsafe import load as load_yaml

__all__ = ["junit_problems", "register_cli", "rejudge", "run_cli", "verify_bundle"]

EXISTING = "existing"  # crossnet.existing_mode.EXISTING (that module is the pytest plugin's)

_NUMBER = (int, float, type(None))
_TEXT = (str, type(None))
_OBSERVATION_TYPES: dict[str, tuple[type, ...]] = {
    "reached": (bool,),
    "error": _TEXT,
    "source_ip": _TEXT,
    "latency_ms": _NUMBER,
    "answers": (list,),
    "rcode": _TEXT,
    "responder": _TEXT,
    "detail": (str,),
    "loop_lag_ms": _NUMBER,
    "path_mtu": (int, type(None)),
    "ttl": (int, type(None)),
    "ra": (bool, type(None)),
}


def _observation(data: Any) -> Observation:
    if not isinstance(data, dict) or not isinstance(data.get("reached"), bool):
        raise ValueError("its observation is not an object with 'reached'")
    for key, value in data.items():
        if key not in _OBSERVATION_TYPES or not isinstance(value, _OBSERVATION_TYPES[key]):
            raise ValueError(f"its observation's {str(key)[:40]!r} is not a known field of its type")
    if not all(isinstance(a, str) for a in data.get("answers") or ()):
        raise ValueError("its observation's answers are not all text")
    return Observation.from_json(dict(data))


def rejudge(
    setup: Setup, cluster_set: ClusterSet, timeout: float, records: Sequence[Mapping[str, Any]], raw: Mapping[str, Any]
) -> list[str]:
    """Re-judge every recorded cell from its raw observations; one line per cell that differs."""
    cells = {c.id: c for c in setup.cells}
    problems: list[str] = []
    for record in records:
        cell_id = str(record.get("id"))
        cell, seen = cells.get(cell_id), raw.get(cell_id)
        if cell is None:
            problems.append(f"{cell_id}: recorded, but the bundled topology and profile build no such cell")
            continue
        if not isinstance(seen, dict):
            problems.append(f"{cell_id}: no raw observation in observations.json: its verdict cannot be re-judged")
            continue
        try:
            retry = None if seen.get("retry") is None else _observation(seen["retry"])
            live = live_cell(cell, cluster_set, timeout)
            judged = judge(live, _observation(seen.get("first")), retry)
            reached, error = outcome(live, judged.observation)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            problems.append(f"{cell_id}: cannot be re-judged: {str(exc)[:200]}")
            continue
        if record.get("verdict") != judged.verdict:
            problems.append(
                f"{cell_id}: verdict {record.get('verdict')!s:.40} recorded, but its observations make it "
                f"{judged.verdict}: {judged.message}"
            )
            continue
        wanted = {
            "expected": cell.expectation.reachable,
            "rule": cell.expectation.rule,
            "observed": "reached" if reached else (error or "-"),
            "source_ip": judged.observation.source_ip,
            "expected_source_ip": judged.expected_source_ip,
            "message": judged.message,
        }
        problems += [
            f"{cell_id}: {key} {str(record.get(key))[:200]!r} recorded, re-judged {str(value)[:200]!r}"
            for key, value in wanted.items()
            if record.get(key) != value
        ]
    recorded = {str(r.get("id")) for r in records}
    problems += [
        f"{i}: has a raw observation but no verdict in matrix.json (removed?)" for i in sorted(set(raw) - recorded)
    ]
    return problems


def junit_problems(junit: bytes, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """junit.xml says for every cell what matrix.json says (its `verdict` property per testcase)."""
    if b"<!DOCTYPE" in junit or b"<!ENTITY" in junit:
        return ["junit.xml: declares a DOCTYPE or entities (pytest never writes one): refused"]
    try:
        root = ElementTree.fromstring(junit)
    except ElementTree.ParseError as exc:
        return [f"junit.xml: not XML ({exc})"]
    said: dict[str, str] = {}
    for case in root.iter("testcase"):
        name = case.get("name") or ""
        verdict = next((p.get("value") for p in case.iter("property") if p.get("name") == "verdict"), None)
        if verdict is not None and "[" in name and case.find("skipped") is None:  # a skipped SNAT cell has none
            said[name[name.index("[") + 1 : -1]] = verdict
    matrix = {str(r.get("id")): str(r.get("verdict")) for r in records}
    problems = [
        f"{i}: verdict {v} in matrix.json, {said.get(i, 'none')} in junit.xml"
        for i, v in matrix.items()
        if said.get(i) != v
    ]
    return problems + [
        f"{i}: verdict {said[i]} in junit.xml, no cell in matrix.json" for i in sorted(set(said) - set(matrix))
    ]


def _write_private(path: Path, data: bytes) -> None:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(data)


def _bundled_setup(files: Mapping[str, bytes], meta: Mapping[str, Any]) -> tuple[Setup | None, list[str]]:
    """The setup the bundle's cells came from: the bundled profile on the bundled kind configs or,
    for existing clusters (provider `existing`), on the bundled discovered topology."""
    existing = meta.get("provider") == EXISTING
    profile, configs = meta.get("profile"), meta.get("kind_configs", [])
    topology = meta.get("topology") if existing else {"file": None}
    if not isinstance(profile, dict) or not isinstance(topology, dict) or not isinstance(configs, list):
        return None, ["bundle.json: 'profile', 'kind_configs' or (existing clusters) 'topology' is malformed"]
    if not all(isinstance(c, dict) for c in configs) or (existing and configs):
        return None, ["bundle.json: 'kind_configs' is malformed"]
    hashes = {str(profile.get("file")): profile.get("sha256")}
    hashes.update({str(topology.get("file")): topology.get("sha256")} if existing else {})
    wanted = [*hashes, *(str(c.get("file")) for c in configs)]  # the profile first
    if existing and len(wanted) != 2:
        return None, ["bundle.json: the profile and the topology are one file"]
    missing = [n for n in wanted if n not in files or not SAFE_NAME.fullmatch(n)]
    if missing:
        return None, [f"{n}: named in bundle.json but not in the bundle" for n in missing]
    problems = [
        f"{name}: not the SHA-256 bundle.json says" for name, said in hashes.items() if sha256(files[name]) != said
    ]
    with tempfile.TemporaryDirectory(prefix="crossnet-bundle-") as private:  # 0700
        paths = [Path(private, name) for name in wanted]  # safe relative names: the profile keeps its file name
        for path, name in zip(paths, wanted, strict=True):
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_private(path, files[name])
        try:
            if existing:
                discovered = topology_from_json(document(files, wanted[1]))
                return setup_from(discovered, load_profile(str(paths[0]))), problems
            return load_setup(None, [str(p) for p in paths[1:]], str(paths[0])), problems  # lab and kind
        except Exception as exc:  # noqa: BLE001 - a hostile bundle: whatever the loaders raise is one line
            source = "discovered topology" if existing else "kind configs"
            known = isinstance(exc, ConfigError | ProfileError | ProviderError | ValueError)
            said = " ".join(str(exc).split())[:600] if known else f"{exc.__class__.__name__}: {str(exc)[:300]}"
            return None, [*problems, f"the bundled {source} and profile do not load: {' '.join(said.split())}"]


def _existing_problems(files: Mapping[str, bytes], matrix: Any) -> list[str]:
    """discovered.json, preflight.json, topology.json and clusterset.yaml say what matrix.json's
    run says (`discovery`, `clusters`): each is written from it (crossnet.bundle.hooks)."""
    run = run_of(matrix)
    discovery, clusters = run.get("discovery"), run.get("clusters")
    if not isinstance(discovery, dict) or not isinstance(clusters, list):
        return ["matrix.json: an existing-clusters run without 'run.discovery' or 'run.clusters'"]
    found = {k: v for k, v in discovery.items() if k != "preflight"}
    rows = [r for r in discovery.get("preflight") or [] if isinstance(r, dict)]
    preflight = {
        "ran": bool(rows),
        "blocking": sum(r.get("status") == "fail" for r in rows),
        "warnings": sum(r.get("status") == "warn" for r in rows),
        "rows": rows,
    }
    problems: list[str] = []
    for name, wanted in (("discovered.json", found), ("preflight.json", preflight)):
        try:
            same = document(files, name) == wanted
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if not same:
            problems.append(f"{name}: not what matrix.json's run.discovery says (edited?)")
    names: dict[str, Any] = {}
    for name in ("topology.json", "clusterset.yaml"):
        if name not in files and name == "clusterset.yaml":
            continue
        try:
            doc = document(files, name) if name.endswith(".json") else load_yaml(files[name].decode(), name)
            names[name] = _cluster_names(doc)
        except Exception as exc:  # noqa: BLE001 - hostile text: one line, not a traceback
            names[name] = f"unreadable ({exc.__class__.__name__})"
    problems += [
        f"{name}: clusters {str(said)[:200]} are not matrix.json's run.clusters {str(clusters)[:200]}"
        for name, said in names.items()
        if said != clusters
    ]
    return problems


def _cluster_names(doc: Any) -> list[Any] | str:
    listed = doc.get("clusters") if isinstance(doc, dict) else None
    if not isinstance(listed, list):
        return "none listed"
    return [c.get("name") if isinstance(c, dict) else None for c in listed]


def _rejudge_bundle(files: Mapping[str, bytes], meta: Mapping[str, Any], matrix: Any) -> tuple[list[str], list[str]]:
    """(problems, facts): rebuild the cells from the bundled topology + profile and re-judge them."""
    said = (run_of(matrix).get("provider"), meta.get("provider"))
    problems = (
        [] if said[0] == said[1] else [f"matrix.json: provider {said[0]!s:.40} is not bundle.json's {said[1]!s:.40}"]
    )
    setup, found = _bundled_setup(files, meta)
    problems += found
    if meta.get("provider") == EXISTING:
        problems += _existing_problems(files, matrix)
    if setup is None:
        return problems, []
    observations = document(files, "observations.json")
    raw = observations.get("cells") if isinstance(observations, dict) else None
    if not isinstance(raw, dict):
        return [*problems, "observations.json: no 'cells' object"], []
    timeout = meta.get("probe_timeout")
    timeout = float(timeout) if isinstance(timeout, int | float) and 0 < timeout < 3600 else 2.0
    try:
        cluster_set = ClusterSet.from_json(document(files, "cluster-set.json"))
    except (KeyError, TypeError, AttributeError) as exc:
        return [*problems, f"cluster-set.json: not a cluster set ({str(exc)[:120]})"], []
    if setup.profile.name != run_of(matrix).get("profile"):
        problems.append(f"matrix.json: profile {run_of(matrix).get('profile')!s:.60} is not the bundled one")
    records = cells_of(matrix)
    problems += rejudge(setup, cluster_set, timeout, records, raw)
    counts = ", ".join(f"{n} {v}" for v, n in count(records).items() if n)
    facts = [
        f"profile {setup.profile.name}, sha256 {(meta.get('profile') or {}).get('sha256')}",
        *(
            [f"discovered topology {', '.join(f'{c.name} ({len(c.nodes)} nodes)' for c in setup.topology.clusters)}"]
            if meta.get("provider") == EXISTING
            else []
        ),
        f"{len(records)} cells re-judged from their raw observations ({counts or 'none'})",
    ]
    if "junit.xml" in files:
        problems += junit_problems(files["junit.xml"], records)
        facts.append("junit.xml holds the same verdicts")
    return problems, facts


def verify_bundle(path: Path, **limits: int) -> tuple[int, list[str]]:
    """(exit status, lines to print): 0 verified, 1 differences or tampering. Raise Unusable (exit
    2) when `path` is not a crossnet results bundle at all."""
    files, refused = read_bundle(path, **limits)
    if refused:
        return 1, [
            f"{path}: REJECTED, a hostile or damaged archive (nothing was extracted):",
            *(f"  - {r}" for r in refused),
        ]
    for name in (MANIFEST, "bundle.json"):
        if name not in files:
            raise Unusable(f"{path}: not a crossnet results bundle (no {name})")
    problems = manifest_problems(files)
    facts: list[str] = [f"{len(files) - 1} files checked against {MANIFEST}"]
    try:
        meta = document(files, "bundle.json")
    except ValueError as exc:
        raise Unusable(f"{path}: not a crossnet results bundle ({exc})") from None
    if not isinstance(meta, dict) or meta.get("schema") != BUNDLE_SCHEMA:
        raise Unusable(f"{path}: not a crossnet results bundle (bundle.json is not a {BUNDLE_SCHEMA} document)")
    try:
        matrix = document(files, "matrix.json")
        unusable = validate_matrix(matrix)
        problems += [f"matrix.json: {p}" for p in unusable]
        if not unusable:
            found, more = _rejudge_bundle(files, meta, matrix)
            problems, facts = problems + found, facts + more
            if run_of(matrix).get("complete") is not True:
                status = run_of(matrix).get("exit_status")
                facts.append(f"NOTE: the run did not complete (exit status {status!s:.20}): its matrix is partial")
    except ValueError as exc:
        problems.append(str(exc))
    vendor = meta.get("vendor")
    shown = [str(v)[:200] for v in (vendor.values() if isinstance(vendor, dict) else ()) if v]
    made = [f"run {meta.get('run_id')!s:.80}, made by crossnet {meta.get('crossnet_version')!s:.40}"]
    made[0] += f", checked by crossnet {crossnet_version()}"
    made += [f"vendor: {' | '.join(shown)}"] if shown else []
    if problems:
        lines = [f"{path}: NOT verified, {len(problems)} problem(s):", *(f"  - {p}" for p in problems[:200])]
        lines += [f"  ... and {len(problems) - 200} more"] if len(problems) > 200 else []
        return 1, [*lines, *(f"  {line}" for line in made)]
    return 0, [f"{path}: verified", *(f"  {line}" for line in [*made, *facts])]


# --------------------------------------------------------------------------- command line


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`crossnet bundle verify FILE`; dispatch the parsed arguments to `run_cli`."""
    bundle = subparsers.add_parser("bundle", help="check a results bundle (reports/crossnet-results-<run-id>.tar.gz)")
    actions = bundle.add_subparsers(dest="bundle_action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="check the manifest and re-judge every cell from its raw observations with the bundled profile; "
        "exit 0 verified, 1 differences or tampering, 2 not a bundle",
    )
    verify.add_argument("file", help="a crossnet-results-<run-id>.tar.gz")


def run_cli(args: argparse.Namespace) -> int:
    """`crossnet bundle verify FILE`: its exit status; what the bundle says is printed escaped."""
    try:
        status, lines = verify_bundle(Path(args.file))
    except Unusable as exc:
        print(f"crossnet bundle verify: {exc}", file=sys.stderr)
        return 2
    print("\n".join("".join(c if c.isprintable() else repr(c)[1:-1] for c in line) for line in lines))
    return status
