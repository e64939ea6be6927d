"""`.ci/setup` as GitHub's runners run it: as an unprivileged user (`nobody` here, `runner` there).

- The nightly `vendor` job's install and CLI steps — every `run:` before it creates clusters, read
  from nightly.yml — run as `nobody` with a stub `kind` and `kubectl` on PATH (standing in for
  helm/kind-action) and a real Python >= 3.11 (standing in for actions/setup-python): they pass,
  install nothing with apt-get, and give a .venv with crossnet and the kubernetes client but not the
  test and lint tools.
- Package decisions per mode, in a private mount namespace that hides /usr/sbin, /usr/local/sbin
  and /run (so the lab's tools and any docker are missing) with a stub `sudo` and `apt-get` that
  record what would be installed: apt-get runs only under sudo when unprivileged and as itself when
  root, the kind and vendor modes install nothing, Debian's docker.io is installed only where no
  docker exists, and without sudo the script stops with what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

NOBODY = 65534
SETPRIV = shutil.which("setpriv")
UNSHARE = shutil.which("unshare")

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None,
                                reason="needs root and setpriv (util-linux) to run steps as the user nobody")

# The stubs record one line per call: uid, name, whether it came through sudo, arguments.
RECORD = 'printf "%s %s %s %s\\n" "$(id -u)" "$(basename "$0")" "${STUB_VIA_SUDO:-0}" "$*" >> "$STUB_LOG"\n'
STUBS = {
    "sudo": RECORD + 'STUB_VIA_SUDO=1 exec "$@"\n',
    "apt-get": RECORD,
    "kind": RECORD + '[ "${1:-}" != version ] || echo "kind v0.31.0 go1.24 linux/amd64 (stub)"\n',
    "kubectl": RECORD + 'echo "Client Version: v1.34.0 (stub)"\n',
    "docker": RECORD + 'echo "Docker version 28.0.0 (stub)"\n',
    # Docker CE's containerd.io installed, without a docker CLI on PATH
    "dpkg-query": RECORD + 'case "$*" in *containerd.io*) printf "install ok installed" ;; *) exit 1 ;; esac\n',
}
LAB = {"iproute2", "iptables", "conntrack", "procps", "util-linux", "mount", "bird2", "unbound"}
DEV = LAB | {"chromium", "shellcheck"} | (set() if os.access("/bin/busybox", os.X_OK) else {"busybox-static"})


@pytest.fixture
def world() -> Iterator[Path]:
    """A directory `nobody` can reach (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="crossnet-ci-setup-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def stubs(world: Path, names: list[str]) -> Path:
    bindir = world / "stubs"
    bindir.mkdir(exist_ok=True)
    for name in names:
        (bindir / name).write_text("#!/bin/bash\n" + STUBS[name])
        (bindir / name).chmod(0o755)
    log = world / "calls.log"
    log.touch()
    log.chmod(0o666)
    return bindir


def calls(world: Path) -> list[tuple[int, str, bool, str]]:
    found = []
    for line in (world / "calls.log").read_text().splitlines():
        uid, name, via_sudo, args = [*line.split(" ", 3), ""][:4]
        found.append((int(uid), name, via_sudo == "1", args))
    return found


def installed(world: Path) -> set[str]:
    """The packages of every `apt-get install` call."""
    return {p for _, name, _, args in calls(world) if name == "apt-get" and args.split()[:1] == ["install"]
            for p in args.split()[1:] if not p.startswith("-")}


def as_nobody(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SETPRIV), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "/usr/bin/env",
                           "-i", *(f"{k}={v}" for k, v in env.items()), *argv],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


# ------------------------------------------------------------------------------------ package decisions


def copy_ci(world: Path) -> Path:
    repo = world / "repo"
    shutil.copytree(ROOT / ".ci", repo / ".ci")
    return repo


def curated_path(world: Path, bindir: Path) -> str:
    """PATH for the decision tests: the stubs, then only the tools .ci/setup itself runs (not /usr/bin,
    where a machine may keep ip, docker or sudo)."""
    tools = world / "tools"
    tools.mkdir()
    for tool in ("bash", "dirname", "id", "env", "grep", "basename", "awk"):
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    return f"{bindir}:{tools}"


HIDE = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/run", "/var/run")


def setup_hidden(world: Path, path: str, args: list[str], unprivileged: bool) -> subprocess.CompletedProcess[str]:
    """`bash .ci/setup ARGS` in a private mount namespace where the sbin directories (which .ci/setup
    searches besides PATH) and /run (docker's socket) are empty."""
    if UNSHARE is None:
        pytest.skip("needs unshare (util-linux)")
    hide = " ".join(d for d in HIDE if os.path.isdir(d) and not os.path.islink(d))
    env = {"PATH": path, "HOME": str(world), "STUB_LOG": str(world / "calls.log"), "LC_ALL": "C"}
    run = [str(SETPRIV), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if unprivileged else []
    script = f'for d in {hide}; do mount -t tmpfs -o size=1m crossnet-hide "$d"; done; exec "$@"'
    done = subprocess.run([UNSHARE, "--mount", "--propagation", "private", "/bin/bash", "-c", script, "hide",
                           *run, "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()),
                           shutil.which("bash") or "/bin/bash", ".ci/setup", *args],
                          cwd=world / "repo", capture_output=True, text=True, timeout=120)
    if done.stderr.startswith("unshare: cannot change root filesystem propagation"):
        pytest.skip("no private mount namespace here (a chroot whose / is not a mount point)")
    return done


@pytest.mark.parametrize(("mode", "docker", "expected"), [
    ("kind", [], set()),
    ("vendor", [], set()),
    ("lab", [], LAB),
    ("dev", ["docker"], DEV),  # a runner: Docker CE's CLI is there, so no docker.io
    ("dev", ["dpkg-query"], DEV),  # Docker CE's containerd.io is installed: docker.io would conflict
    ("dev", [], DEV | {"docker.io"}),  # a fresh Debian machine: the docker-layer tests get a daemon
])
def test_unprivileged_setup_installs_only_what_the_mode_uses_and_only_through_sudo(
        world: Path, mode: str, docker: list[str], expected: set[str]) -> None:
    repo = copy_ci(world)
    bindir = stubs(world, ["sudo", "apt-get", *docker])
    done = setup_hidden(world, curated_path(world, bindir), [mode, "--system-only"], unprivileged=True)
    assert done.returncode == 0, done.stderr
    assert installed(world) == expected, done.stderr
    apt = [c for c in calls(world) if c[1] == "apt-get"]
    assert apt or mode in ("kind", "vendor")
    assert all(uid == NOBODY and via_sudo for uid, _, via_sudo, _ in apt), apt  # never apt-get without sudo
    assert [c[3].split()[0] for c in apt] == (["update", "install"] if expected else [])
    sudo = [c for c in calls(world) if c[1] == "sudo"]
    assert all(args.startswith("env DEBIAN_FRONTEND=noninteractive apt-get ") for _, _, _, args in sudo), sudo
    assert len(sudo) == len(apt)
    assert not (repo / ".venv").exists()


def test_as_root_setup_runs_apt_get_itself(world: Path) -> None:
    """`.ci/run` on a fresh root Debian machine: apt-get directly, with everything the tests use."""
    copy_ci(world)
    bindir = stubs(world, ["sudo", "apt-get"])
    done = setup_hidden(world, curated_path(world, bindir), ["--system-only"], unprivileged=False)
    assert done.returncode == 0, done.stderr
    assert installed(world) == DEV | {"docker.io"}
    assert [(uid, name, via) for uid, name, via, _ in calls(world)] == [(0, "apt-get", False)] * 2


def test_without_sudo_setup_stops_and_says_what_to_install(world: Path) -> None:
    copy_ci(world)
    bindir = stubs(world, ["apt-get", "docker"])
    done = setup_hidden(world, curated_path(world, bindir), ["lab", "--system-only"], unprivileged=True)
    assert done.returncode == 1
    assert "needs root, and sudo is not installed" in done.stderr and "iptables" in done.stderr, done.stderr
    assert calls(world) == []


def test_setup_refuses_an_unknown_mode(world: Path) -> None:
    repo = copy_ci(world)
    for argv, env in ((["bash", ".ci/setup", "kube"], {}), (["bash", ".ci/setup"], {"CROSSNET_SETUP": "prod"})):
        done = subprocess.run(argv, cwd=repo, capture_output=True, text=True, env={**os.environ, **env})
        assert done.returncode == 2 and "dev, lab, kind or vendor" in done.stderr, done.stderr


# ------------------------------------------------------------------------------------ the nightly's steps


def python_for_nobody() -> str | None:
    """A Python >= 3.11 with venv that `nobody` can run (actions/setup-python's part)."""
    candidates = [getattr(sys, "_base_executable", ""), sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]
    for candidate in dict.fromkeys(str(Path(c).resolve()) for c in candidates if c):
        done = subprocess.run([str(SETPRIV), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", candidate,
                               "-c", "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"],
                              capture_output=True, cwd="/")
        if done.returncode == 0:
            return candidate
    return None


def steps_before_clusters(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps = list(job["steps"])
    first = next(i for i, s in enumerate(steps) if "kind create cluster" in s.get("run", ""))
    return steps[:first]


def expand(run: str, env: dict[str, str]) -> str:
    for name, value in env.items():
        run = run.replace("${{ env." + name + " }}", value)
    assert "${{" not in run, f"an expression this test cannot evaluate: {run}"
    return run


def test_the_nightly_vendor_jobs_install_and_cli_steps_run_as_an_unprivileged_user(world: Path) -> None:
    python = python_for_nobody()
    if python is None:
        pytest.skip("no Python >= 3.11 with venv that the user nobody can run")
    nightly = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    job = nightly["jobs"]["vendor"]
    steps = steps_before_clusters(job)
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    # what this test stands in for: the checkout (a copy), setup-python (python3 on PATH), kind-action (stubs)
    assert uses == ["actions/checkout", "actions/setup-python", "helm/kind-action"]
    runs = [s for s in steps if "run" in s]
    assert [s["name"] for s in runs] == ["set up crossnet", "versions"]

    repo = world / "repo"
    shutil.copytree(ROOT, repo, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "reports", ".crossnet", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache",
        ".pytest_cache", "node_modules", "build", "dist"))
    home = world / "home"
    home.mkdir()
    pydir = world / "python"
    pydir.mkdir()
    (pydir / "python3").symlink_to(python)
    bindir = stubs(world, ["sudo", "apt-get", "kind", "kubectl"])
    github = world / "github"
    github.mkdir()
    for name in ("path", "env", "summary", "output"):
        (github / name).touch()
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(repo), str(home), str(github)], check=True)
    declared = {**nightly.get("env", {}), **job.get("env", {})}
    env = {**{k: str(v) for k, v in declared.items()},
           "PATH": f"{bindir}:{pydir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "CI": "true",
           "GITHUB_ACTIONS": "true", "GITHUB_PATH": str(github / "path"), "GITHUB_ENV": str(github / "env"),
           "GITHUB_STEP_SUMMARY": str(github / "summary"), "GITHUB_OUTPUT": str(github / "output"),
           "STUB_LOG": str(world / "calls.log"), "LC_ALL": "C.UTF-8"}
    outputs = {}
    for s in runs:
        script = expand(s["run"], {k: v for k, v in env.items() if k.isupper()})
        done = as_nobody(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], env, repo)
        unprivileged_apt = [c for c in calls(world) if c[1] == "apt-get" and not c[2]]
        assert not unprivileged_apt, f"step {s['name']!r} ran apt-get without sudo: {unprivileged_apt}"
        assert done.returncode == 0, f"step {s['name']!r} failed as nobody:\n{done.stdout}\n{done.stderr}"
        outputs[s["name"]] = done.stdout

    assert [c for c in calls(world) if c[1] in ("sudo", "apt-get")] == [], "the vendor job installs nothing with apt"
    assert outputs["versions"].startswith("crossnet ") and "kind v0.31.0" in outputs["versions"]
    assert (repo / ".venv" / "bin" / "crossnet").stat().st_uid == NOBODY
    # what the job uses (the kubernetes client), and not what only the project's own tests use
    done = as_nobody([".venv/bin/python", "-c", "import kubernetes, docker, crossnet.cli"], env, repo)
    assert done.returncode == 0, done.stderr
    assert not (repo / ".venv" / "bin" / "ruff").exists() and not (repo / ".venv" / "bin" / "mypy").exists()
    assert not (repo / ".venv" / "actionlint").exists()
