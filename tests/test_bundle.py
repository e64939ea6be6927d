"""The results bundle (issue 13 item 8): a real lab run writes reports/crossnet-results-<run-id>.tar.gz
with exactly the listed files and a manifest `sha256sum -c` accepts; `crossnet bundle verify` accepts
it, catches a verdict edited by hand even when the manifest was regenerated (every cell is re-judged
from its raw observations), a file changed behind the manifest's back, an observation or junit.xml
edited, a cell removed; hostile archives are refused without extracting anything; nothing that
looks like a credential enters a bundle; `crossnet diff` reads bundles."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crossnet import cli, report
from crossnet.bundle import BundleError, load_matrix_or_bundle, register_cli, run_cli, verify_bundle, write_bundle
from crossnet.bundle.hooks import _raw_observation, observation_record
from crossnet.bundle.verify import rejudge
from crossnet.judge import outcome
from crossnet.options import load_setup
from crossnet.plugin import BATCH_KEY, RUNNER_KEY
from crossnet.providers.lab.clusterset import live_cluster_set
from crossnet.providers.lab.topology import plan_lab
from crossnet.runner import SuiteRunner
from crossnet.wire import ProbeResult, ProbeSpec
from tests.lab_helpers import BIN, needs_lab, run_suites

LISTED = {"bundle.json", "cluster-set.json", "discovery.json", "junit.xml", "kind-configs/01-cluster-1.yaml",
          "kind-configs/02-cluster-2.yaml", "manifest.sha256", "matrix.html", "matrix.json", "observations.json",
          "profile/flat-routed.yaml", "summary.md"}
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl"
KUBECONFIG = f"""apiVersion: v1
kind: Config
clusters:
- cluster: {{certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t, server: https://10.0.0.1:6443}}
  name: vendor
users:
- name: admin
  user: {{token: {TOKEN}}}
"""


# --------------------------------------------------------------------------- helpers


def unpack(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def pack(path: Path, files: dict[str, bytes], manifest: bool = True) -> Path:
    """A bundle of `files`; with `manifest`, a new manifest.sha256 made the way a forger would."""
    if manifest:
        files = {**files, "manifest.sha256": "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in
                                                     sorted(files.items()) if n != "manifest.sha256").encode()}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def verify(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`crossnet bundle verify PATH` through the parser register_cli builds, as cli.py wires it."""
    parser = argparse.ArgumentParser(prog="crossnet")
    register_cli(parser.add_subparsers(dest="cmd", required=True))
    status = run_cli(parser.parse_args(["bundle", "verify", str(path)]))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def edit_json(files: dict[str, bytes], name: str, change: Callable[[Any], None]) -> dict[str, bytes]:
    doc = json.loads(files[name])
    change(doc)
    return {**files, name: json.dumps(doc, indent=1).encode()}


# --------------------------------------------------------------------------- a real lab run


@pytest.fixture(scope="module")
def lab_bundle(module_lab: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One small lab run (51 cells: pass and isolated, pod-to-pod, DNS, Services, SNAT) on two xdist
    workers (the raw observations travel to the controller as the nightly's `-n auto` needs) with
    vendor metadata, while $KUBECONFIG and the reports directory hold a kubeconfig with a token."""
    reports = tmp_path_factory.mktemp("reports")
    (reports / "kubeconfig").write_text(KUBECONFIG)
    earlier = reports / "crossnet-results-20250101-000000-abcd.tar.gz"  # an earlier run's: replaced
    earlier.write_bytes(b"old")
    os.utime(earlier, (1e9, 1e9))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KUBECONFIG", str(reports / "kubeconfig"))
        done = run_suites("suites/test_pod_to_pod.py", "suites/test_dns.py", "suites/test_snat.py",
                          "suites/test_service.py", "-k", "pod:cluster-1/worker- and (tcp or dns-udp) and not 1400b",
                          "--attach", str(module_lab), "--reports", str(reports), "--probe-timeout", "1", "-n", "2",
                          "--organization", "ACME Networks", "--product", "FlatNet", "--product-version", "1.2.3",
                          "--url", "https://flatnet.example/conformance")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bundles = list(reports.glob("crossnet-results-*.tar.gz"))
    assert len(bundles) == 1 and f"crossnet bundle: {bundles[0]}" in done.stdout, done.stdout[-2000:]
    yield bundles[0]


@needs_lab
def test_a_lab_run_writes_a_bundle_of_exactly_the_listed_files_that_verifies(
    lab_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab_bundle.stat().st_mode & 0o777 == 0o600
    with tarfile.open(lab_bundle, "r:gz") as tar:
        assert {m.name for m in tar.getmembers()} == LISTED
        assert all(m.isfile() and m.mode == 0o600 for m in tar.getmembers())
        tar.extractall(tmp_path, filter="data")
    checked = subprocess.run(["sha256sum", "-c", "--strict", "manifest.sha256"], cwd=tmp_path, capture_output=True,
                             text=True)
    assert checked.returncode == 0 and checked.stdout.count(": OK") == len(LISTED) - 1, checked.stdout
    meta = json.loads((tmp_path / "bundle.json").read_text())
    assert meta["vendor"] == {"organization": "ACME Networks", "product": "FlatNet", "product_version": "1.2.3",
                              "url": "https://flatnet.example/conformance"}
    assert meta["run_id"] in lab_bundle.name and meta["crossnet_version"] and meta["provider"] == "lab"
    profile = (tmp_path / "profile/flat-routed.yaml").read_bytes()
    assert meta["profile"]["sha256"] == hashlib.sha256(profile).hexdigest()
    assert profile == (Path(__file__).parent.parent / "profiles/flat-routed.yaml").read_bytes()
    matrix = json.loads((tmp_path / "matrix.json").read_text())
    observed = json.loads((tmp_path / "observations.json").read_text())["cells"]
    assert len(matrix["cells"]) == 51 and {c["id"] for c in matrix["cells"]} == set(observed)
    assert {c["verdict"] for c in matrix["cells"]} == {"pass", "isolated"}
    assert json.loads((tmp_path / "cluster-set.json").read_text())["provider"] == "lab"
    assert json.loads((tmp_path / "discovery.json").read_text())["run"] == matrix["run"]
    status, out, _ = verify(lab_bundle, capsys)
    assert status == 0, out
    assert "verified" in out and "51 cells re-judged from their raw observations (50 pass, 1 isolated)" in out
    assert "ACME Networks | FlatNet | 1.2.3" in out


@needs_lab
def test_no_credential_reaches_the_bundle(lab_bundle: Path) -> None:
    """The run had a kubeconfig in $KUBECONFIG and in its reports directory: neither is copied."""
    files = unpack(lab_bundle)
    assert set(files) == LISTED
    for name, data in files.items():
        for secret in (TOKEN, "certificate-authority-data", "LS0tLS1CRUdJTi", "BEGIN", "kubeconfig"):
            assert secret.encode() not in data, f"{name} holds {secret}"


@needs_lab
def test_a_hand_edited_verdict_is_caught_even_with_a_regenerated_manifest(
    lab_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = unpack(lab_bundle)
    victim = next(c["id"] for c in json.loads(files["matrix.json"])["cells"] if c["verdict"] == "isolated")

    def to_pass(doc: Any) -> None:
        for cell in doc["cells"]:
            if cell["id"] == victim:
                cell["verdict"] = "pass"

    status, out, _ = verify(pack(tmp_path / "forged.tar.gz", edit_json(files, "matrix.json", to_pass)), capsys)
    assert status == 1 and "NOT verified" in out
    assert f"{victim}: verdict pass recorded, but its observations make it isolated" in out
    assert "manifest.sha256" not in out  # the regenerated manifest itself holds: the re-judging caught it


@needs_lab
def test_a_file_changed_behind_the_manifest_is_named(lab_bundle: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    files = unpack(lab_bundle)
    files["summary.md"] = files["summary.md"].replace(b"isolated", b"pass")
    status, out, _ = verify(pack(tmp_path / "changed.tar.gz", files, manifest=False), capsys)
    assert status == 1 and "summary.md: changed (its SHA-256 is not the one in manifest.sha256)" in out
    files["extra.txt"] = b"hello"
    del files["matrix.html"]
    status, out, _ = verify(pack(tmp_path / "extra.tar.gz", files, manifest=False), capsys)
    assert "extra.txt: in the bundle but not in manifest.sha256" in out
    assert "matrix.html: listed in manifest.sha256 but missing from the bundle" in out


@needs_lab
def test_edited_observations_junit_and_removed_cells_are_caught(lab_bundle: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    files = unpack(lab_bundle)
    cells = json.loads(files["matrix.json"])["cells"]
    passing = next(c["id"] for c in cells if c["verdict"] == "pass" and c["protocol"] == "tcp")

    def unreached(doc: Any) -> None:
        doc["cells"][passing]["first"].update(reached=False, error="timeout")

    status, out, _ = verify(pack(tmp_path / "obs.tar.gz", edit_json(files, "observations.json", unreached)), capsys)
    assert status == 1 and f"{passing}: verdict pass recorded, but its observations make it regression" in out

    def drop(doc: Any) -> None:
        doc["cells"] = [c for c in doc["cells"] if c["id"] != passing]

    status, out, _ = verify(pack(tmp_path / "drop.tar.gz", edit_json(files, "matrix.json", drop)), capsys)
    assert status == 1 and f"{passing}: has a raw observation but no verdict in matrix.json" in out
    assert f"{passing}: verdict pass in junit.xml, no cell in matrix.json" in out
    junit = files["junit.xml"].replace(b'name="verdict" value="isolated"', b'name="verdict" value="pass"')
    status, out, _ = verify(pack(tmp_path / "junit.tar.gz", {**files, "junit.xml": junit}), capsys)
    assert status == 1 and "verdict isolated in matrix.json, pass in junit.xml" in out

    def message(doc: Any) -> None:
        doc["cells"][0]["message"] = "all good, trust me"

    status, out, _ = verify(pack(tmp_path / "msg.tar.gz", edit_json(files, "matrix.json", message)), capsys)
    assert status == 1 and "message 'all good, trust me' recorded, re-judged" in out

    def interrupted(doc: Any) -> None:
        doc["run"].update(complete=False, exit_status=2)

    status, out, _ = verify(pack(tmp_path / "part.tar.gz", edit_json(files, "matrix.json", interrupted)), capsys)
    assert status == 0 and "NOTE: the run did not complete (exit status 2): its matrix is partial" in out


@needs_lab
def test_crossnet_diff_reads_bundles(lab_bundle: Path, tmp_path: Path) -> None:
    files = unpack(lab_bundle)
    (tmp_path / "matrix.json").write_bytes(files["matrix.json"])
    from_bundle = load_matrix_or_bundle(lab_bundle)
    assert from_bundle == json.loads(files["matrix.json"])
    assert report.diff_matrices(from_bundle, load_matrix_or_bundle(tmp_path / "matrix.json")) == []
    files["matrix.json"] = files["matrix.json"].replace(b'"isolated"', b'"pass"')
    with pytest.raises(report.ReportError, match=r"matrix\.json: changed"):
        load_matrix_or_bundle(pack(tmp_path / "x.tar.gz", files, manifest=False))


@needs_lab
@pytest.mark.skipif("bundle" not in cli.COMMANDS, reason="crossnet/cli.py does not wire `crossnet bundle` yet")
def test_the_crossnet_command_verifies_and_diffs_bundles(lab_bundle: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(BIN / "crossnet"), "bundle", "verify", str(lab_bundle)], capture_output=True, text=True)
    assert done.returncode == 0 and "verified" in done.stdout, done.stdout + done.stderr
    done = subprocess.run([str(BIN / "crossnet"), "diff", str(lab_bundle), str(lab_bundle)], capture_output=True,
                          text=True)
    assert done.returncode == 0 and "no verdict changed" in done.stdout, done.stdout + done.stderr


# --------------------------------------------------------------------------- hostile and unusable archives


def _raw_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """A tar.gz written block by block, so a header may claim more than its data (a forged size)."""
    blocks = b""
    for info, data in members:
        blocks += info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape") + data + bytes(-len(data) % 512)
    path.write_bytes(gzip.compress(blocks + bytes(1024)))
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 5, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size if kind == tarfile.REGTYPE else 0, link
    return info


HOSTILE = {
    "a ../ path": ([(_info("../escaped.txt"), b"owned")], '"../escaped.txt": unsafe path'),
    "an absolute path": ([(_info("/tmp/crossnet-absolute.txt"), b"owned")], '"/tmp/crossnet-absolute.txt": unsafe'),
    "a nested ../": ([(_info("profile/../../x"), b"owned")], '"profile/../../x": unsafe path'),
    "a symlink": ([(_info("matrix.json", tarfile.SYMTYPE, link="/etc/shadow"), b"")], 'a link to "/etc/shadow"'),
    "a hard link": ([(_info("summary.md", tarfile.LNKTYPE, link="/etc/passwd"), b"")], 'a link to "/etc/passwd"'),
    "a device": ([(_info("junit.xml", tarfile.CHRTYPE), b"")], "a device, fifo, sparse or other special file"),
    "a fifo": ([(_info("junit.xml", tarfile.FIFOTYPE), b"")], "a device, fifo, sparse or other special file"),
    "a duplicate": ([(_info("a.txt"), b"first"), (_info("a.txt"), b"other")], '"a.txt": appears twice'),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_is_rejected_and_nothing_is_extracted(case: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    members, said = HOSTILE[case]
    (tmp_path / "in").mkdir()
    status, out, _ = verify(_raw_tar(tmp_path / "in" / "bundle.tar.gz", members), capsys)
    assert status == 1 and "REJECTED" in out and said in out, out
    assert not Path("/tmp/crossnet-absolute.txt").exists()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["in", "in/bundle.tar.gz"]


def test_a_huge_member_is_refused_from_its_header_without_reading_it(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A header claiming 300 MiB (more than a member may hold) is refused before anything is read;
    an archive that unpacks to more than the total bound (a gzip bomb) is refused while reading."""
    status, out, _ = verify(_raw_tar(tmp_path / "huge.tar.gz", [(_info("matrix.json", size=300 << 20), b"x")]), capsys)
    assert status == 1 and '"matrix.json": 314572800 bytes, more than a member (or the bundle) may hold' in out, out
    bomb = pack(tmp_path / "bomb.tar.gz", {"zeros.bin": bytes(8 << 20)}, manifest=False)
    assert bomb.stat().st_size < 100_000
    status, lines = verify_bundle(bomb, max_total=1 << 20)
    assert status == 1 and '"zeros.bin": 8388608 bytes, more than a member (or the bundle) may hold' in lines[1]
    # a pax header tarfile itself would read whole: the decompressed stream is cut off at the bound
    pax = _info("././@PaxHeader", tarfile.XHDTYPE)
    pax.size = 8 << 20
    bomb = _raw_tar(tmp_path / "pax.tar.gz", [(pax, bytes(8 << 20)), (_info("a.txt"), b"hello")])
    assert bomb.stat().st_size < 100_000
    status, lines = verify_bundle(bomb, max_total=1 << 20)
    assert status == 1 and "it unpacks to more than 1 MiB: refused" in "\n".join(lines), lines
    status, lines = verify_bundle(pack(tmp_path / "many.tar.gz", {f"f{i}": b"" for i in range(20)}), max_members=10)
    assert status == 1 and "more than 10 members: refused" in "\n".join(lines)


@pytest.mark.parametrize("case", ["missing", "empty", "text", "gzip-not-tar", "truncated", "no-manifest",
                                  "no-bundle-json", "directory"])
def test_unusable_input_exits_2_with_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bundle.tar.gz"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text('{"schema": "crossnet.matrix/v1"}')
    elif case == "gzip-not-tar":
        path.write_bytes(gzip.compress(os.urandom(3000)))
    elif case == "truncated":
        whole = pack(tmp_path / "whole.tar.gz", {"a": os.urandom(50_000)}).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif case == "no-manifest":
        pack(path, {"bundle.json": b"{}"}, manifest=False)
    elif case == "no-bundle-json":
        pack(path, {"matrix.json": b"{}"})
    elif case == "directory":
        path.mkdir()
    status, out, err = verify(path, capsys)
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1, (out, err)
    assert err.startswith(f"crossnet bundle verify: {path}: not a")


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("secret", [
    "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n", "-----BEGIN CERTIFICATE-----\nMIIC\n",
    "    client-key-data: LS0tLS1CRUdJTiBSU0E=\n", f"  token: {TOKEN}\n",
    "Authorization: Bearer abcdefghijklmnopqrstuvwxyz\n",
    '[plugins."io.containerd.grpc.v1.cri".registry.configs."r.example".auth]\n  password = "hunter2"\n',
])
def test_a_file_that_looks_like_it_holds_a_credential_stops_the_bundle(secret: str, tmp_path: Path) -> None:
    config = f"kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: c1\n# pasted by mistake:\n{secret}"
    with pytest.raises(BundleError, match=r"kind-configs/01-c1.yaml holds what looks like .* \(line [56]\)") as caught:
        write_bundle(tmp_path, "run-1", {"kind-configs/01-c1.yaml": config.encode(), "matrix.json": b"{}"})
    assert secret.strip().splitlines()[-1] not in str(caught.value)  # the message never repeats the secret
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BundleError, match="a secret of this run"):
        write_bundle(tmp_path, "run-1", {"cluster-set.json": b'{"x": "s3cr3t-agent-token"}'}, ["s3cr3t-agent-token"])


# --------------------------------------------------------------------------- flaky cells, as the plugin captures them


def test_a_flaky_cells_first_probe_and_re_probe_are_both_kept_and_re_judged() -> None:
    """A cell that failed, then passed on the re-probe: observations.json keeps both, and re-judging
    gives `flaky` again; without the re-probe, or with the verdict made `pass`, verify disagrees."""
    setup = load_setup("routed", None, None)
    cluster_set = live_cluster_set(plan_lab(setup.topology))
    cells = [c for c in setup.cells if c.suite == "pod-to-pod" and c.expectation.reachable == "yes"][:6]
    calls: dict[str, int] = {}

    def client(agent: str) -> Any:
        def probe(probes: list[ProbeSpec], timeout: float) -> list[ProbeResult]:
            answers: list[ProbeResult] = []
            for p in probes:
                calls[str(p["id"])] = calls.get(str(p["id"]), 0) + 1
                first = calls[str(p["id"])] == 1 and str(p["id"]) == cells[0].id
                answers.append({"id": p["id"], "reached": not first, "error": "timeout" if first else None,
                                "loop_lag_ms": 0.0, "source_ip": cluster_set.cluster(cells[0].vantage.cluster)
                                .pod_on(cells[0].vantage.node).ip})
            return answers
        return SimpleNamespace(probe=probe)

    runner = SuiteRunner(cluster_set, client, 2.0)
    judged = runner.judge_cells(cells)
    assert judged[cells[0].id].verdict == "flaky"
    stash = pytest.Stash()
    stash[RUNNER_KEY], stash[BATCH_KEY] = runner, {"pod-to-pod": judged}
    raw, records = {}, []
    for cell in cells:
        item = SimpleNamespace(config=SimpleNamespace(stash=stash), crossnet_cell={"id": cell.id, "suite": cell.suite})
        entry = _raw_observation(item)  # type: ignore[arg-type]
        assert entry is not None
        raw[cell.id] = {k: v for k, v in entry.items() if k != "id"}
        live, judgement = runner.lives[cell.id], judged[cell.id]
        reached, error = outcome(live, judgement.observation)
        records.append({"id": cell.id, "verdict": judgement.verdict, "expected": "yes",
                        "rule": cell.expectation.rule, "observed": "reached" if reached else error,
                        "source_ip": judgement.observation.source_ip, "message": judgement.message,
                        "expected_source_ip": judgement.expected_source_ip})
    assert raw[cells[0].id]["first"]["reached"] is False and raw[cells[0].id]["retry"]["reached"] is True
    assert raw[cells[1].id]["retry"] is None
    assert rejudge(setup, cluster_set, 2.0, records, raw) == []
    without_retry = {**raw, cells[0].id: {**raw[cells[0].id], "retry": None}}
    assert rejudge(setup, cluster_set, 2.0, records, without_retry)[0].startswith(
        f"{cells[0].id}: verdict flaky recorded, but its observations make it regression")
    made_pass = [{**r, "verdict": "pass"} if r["id"] == cells[0].id else r for r in records]
    assert "verdict pass recorded, but its observations make it flaky" in rejudge(
        setup, cluster_set, 2.0, made_pass, raw)[0]
    assert observation_record(replace(judged[cells[1].id].observation), None, False) == raw[cells[1].id]


def test_vendor_options_are_checked_where_they_enter() -> None:
    done = run_suites("suites/test_dns.py", "--collect-only", "-q", "--url", "javascript:alert(1)")
    assert done.returncode == 4 and "give an http(s) URL without spaces" in done.stderr, done.stderr[-1000:]
