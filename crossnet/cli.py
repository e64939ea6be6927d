"""`crossnet up|down|status|exec|doctor|report|diff|bench`: the command line.

Errors are one clear message naming the problem and the fix, never a traceback. Exit codes:
0 done, 1 a check failed (doctor, diff --exit-code), 2 usage or input error (a flag, a config,
a profile, a state directory), 3 the provider failed (bring-up, teardown, a sandbox or cluster
that does not answer), 130 interrupted (Ctrl-C or SIGTERM, after tearing down what was made).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from crossnet import report
from crossnet.bundle import load_matrix_or_bundle, register_cli, run_cli
from crossnet.config import ConfigError, load_topology
from crossnet.lifecycle import (
    attach,
    bring_up,
    default_state_dir,
    new_run_id,
    recorded_cluster_set,
    sigterm_as_interrupt,
    tear_down,
)
from crossnet.options import add_options, fingerprint, load_setup, plumbing_mode, positive_count, positive_seconds
from crossnet.profile import ProfileError
from crossnet.providers.base import ExecTarget, InputError, ProviderError, StateFile
from crossnet.providers.existing import cli as existing_cli
from crossnet.providers.select import attach_provider, choose_provider
from crossnet.providers.statedir import owner_of, same_process

__all__ = ["main"]

EXIT_USAGE, EXIT_PROVIDER, EXIT_INTERRUPTED = 2, 3, 130


class CliError(Exception):
    pass


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crossnet")
    except PackageNotFoundError:
        return "unknown (not installed; run from a checkout)"


def _runs_dir() -> Path:
    return Path.cwd() / ".crossnet"


def _find_state_dir(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit).resolve()
    runs = sorted(p.parent for p in _runs_dir().glob("*/state.json"))
    if not runs:
        raise CliError(f"no crossnet run under {_runs_dir()}; start one with `crossnet up` (or pass --state-dir)")
    if len(runs) > 1:
        raise CliError("several runs are here; pick one with --state-dir:\n" + "\n".join(f"  {r}" for r in runs))
    return runs[0]


def _cmd_up(args: argparse.Namespace) -> int:
    if args.provider == "existing":
        raise CliError(
            "crossnet up brings up clusters crossnet makes (lab, kind); clusters somebody else built are "
            "probed in place: crossnet preflight --context NAME=CONTEXT ..., then pytest suites/ --provider "
            "existing --context NAME=CONTEXT ... --plumbing none"
        )
    setup = load_setup(args.topology, args.kind_config, args.profile)
    topology, profile = setup.topology, setup.profile
    for note in setup.notes:
        print(f"crossnet: note: {note}", file=sys.stderr)
    run_id = new_run_id()
    state_dir = Path(args.state_dir or default_state_dir(run_id)).resolve()
    provider, why = choose_provider(args.provider)
    print(f"crossnet: provider {provider} ({why})", file=sys.stderr)
    mode = plumbing_mode(args.plumbing)
    run = bring_up(
        topology,
        state_dir,
        run_id,
        profile.plumbing,
        detached=True,
        provider=provider,
        reuse=args.reuse,
        agent_image=args.agent_image,
        plumbing_mode=mode,
    )
    run.provider.state.update(setup=fingerprint(setup, mode))  # --attach checks it asks about this setup
    print(f"crossnet: run {run_id} is up (provider {provider}, profile {profile.name})")
    print(f"  state:   {run.state_dir / 'state.json'}")
    print(f"  probe:   pytest suites/ --attach {run.state_dir}")
    print(f"  inspect: crossnet status --state-dir {run.state_dir}")
    print(
        f"  enter:   crossnet exec cluster-1/worker -- ip route   (add --state-dir {run.state_dir} "
        "when several runs exist)"
    )
    print(f"  end:     crossnet down --state-dir {run.state_dir}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    if getattr(args, "context", None) or getattr(args, "clusterset", None):  # existing clusters: by label
        return existing_cli.cmd_down(args)
    dirs = (
        (sorted(p for p in _runs_dir().iterdir() if owner_of(p) is not None) if _runs_dir().is_dir() else [])
        if args.all
        else [_find_state_dir(args.state_dir)]
    )
    if args.all and not dirs:
        print(f"crossnet: no crossnet run under {_runs_dir()}", file=sys.stderr)
    failed = 0
    for state_dir in dirs:  # one broken run never keeps the others running
        try:
            _down_one(state_dir)
        except ProviderError as exc:
            failed += 1
            print(f"crossnet: {state_dir}: {exc}", file=sys.stderr)
    return EXIT_PROVIDER if failed else 0


def _down_one(state_dir: Path) -> None:
    """End one run. A run whose sandbox or clusters no longer answer is cleaned up from its state
    file; a directory whose state file is broken is removed only when its owner mark says it is
    crossnet's (nothing recorded in it is acted on)."""
    try:
        run = attach(state_dir)
    except ProviderError as exc:
        try:
            provider = attach_provider(state_dir, alive=False)
        except ProviderError:
            owner = owner_of(state_dir)
            if owner is None:
                raise
            from crossnet.providers.statedir import release_state_dir

            release_state_dir(state_dir, str(owner["run_id"]))
            print(
                f"crossnet: {state_dir}: {exc}\n  removed the directory (crossnet's owner mark, run "
                f"{owner['run_id']}); nothing recorded in it was acted on",
                file=sys.stderr,
            )
            return
        print(f"crossnet: {state_dir}: {exc}; removing what is left", file=sys.stderr)
        provider.down()
        return
    run.owned = True
    tear_down(run)
    print(f"crossnet: {state_dir.name} is down")


def _cmd_status(args: argparse.Namespace) -> int:
    state_dir = _find_state_dir(args.state_dir)
    data = StateFile(state_dir).read()
    if args.json:
        print(json.dumps(data, indent=1, sort_keys=True))
        return 0
    print(f"run {data['run_id']}  provider {data['provider']}  phase {data.get('phase')}  state {state_dir}")
    pid = data.get("sandbox_pid")
    if data["provider"] == "lab" and pid and not same_process(int(pid), data.get("sandbox_identity")):
        print(
            f"  its sandbox (pid {pid}) is gone: nothing of this lab runs; remove what is left with "
            f"`crossnet down --state-dir {state_dir}`"
        )
    if "cluster_set" not in data:
        return 0
    cluster_set = recorded_cluster_set(state_dir / "state.json", dict(data))
    for cluster in cluster_set.clusters:
        print(
            f"{cluster.name}: domain {cluster.domain}, pods {cluster.pod_subnet}, services "
            f"{cluster.service_subnet}, DNS {cluster.dns_service_ip} -> {', '.join(cluster.dns_server_ips)}"
        )
        for node in cluster.nodes:
            pods = ", ".join(f"{p.name} {p.ip}" for p in cluster.pods if p.node == node.short)
            print(f"  {node.short:<14} {node.role:<13} {node.ip:<12} podCIDR {node.pod_cidr:<14} {pods}")
        for svc in cluster.services:
            where = svc.cluster_ip or svc.external_name or "-"
            print(f"  svc {svc.namespace}/{svc.name} {svc.type} {where}")
    routes = (data.get("plumbing") or {}).get("routes") or []
    print(
        f"plumbing: {len(routes)} node routes, Corefile forwards in "
        f"{', '.join(sorted((data.get('plumbing') or {}).get('corefiles') or {})) or 'no cluster'}"
    )
    return 0


def _resolve_program(argv: list[str]) -> list[str]:
    """Find argv[0] on PATH plus this interpreter's bin directory (where crossnet-agent lives)."""
    if not argv or "/" in argv[0]:
        return argv
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(argv[0], path=search)
    return [found or argv[0], *argv[1:]]


def _cmd_exec(args: argparse.Namespace) -> int:
    command = [a for a in args.command if a != "--"] if args.command[:1] == ["--"] else args.command
    if not command:
        raise CliError("nothing to run: crossnet exec <cluster>/<node>[/<pod>] -- <command> [args]")
    target = ExecTarget.parse(args.target)
    provider = attach_provider(_find_state_dir(args.state_dir))
    rc, out, err = provider.exec(target, _resolve_program(command), timeout=args.timeout)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


def _check(label: str, ok: bool, fix: str) -> bool:
    print(f"  [{'ok' if ok else 'missing'}] {label}" + ("" if ok else f"\n        fix: {fix}"))
    return ok


def _cmd_doctor(_args: argparse.Namespace) -> int:
    from crossnet.providers.lab.bgp import BGP_TOOLS

    print("crossnet doctor: what the lab provider needs on this machine")
    results = [
        _check(
            "running as root (network namespaces need CAP_SYS_ADMIN)",
            os.geteuid() == 0,
            "run as root, e.g. sudo -E crossnet ...",
        )
    ]
    tools = {
        "unshare": "util-linux",
        "nsenter": "util-linux",
        "mount": "mount",
        "ip": "iproute2",
        "iptables": "iptables",
        "iptables-restore": "iptables",
        "conntrack": "conntrack",
        "sysctl": "procps",
    }
    missing = sorted({pkg for tool, pkg in tools.items() if shutil.which(tool) is None})
    for tool, pkg in tools.items():
        results.append(_check(f"{tool} ({pkg})", shutil.which(tool) is not None, f"apt-get install -y {pkg}"))
    for tool, pkg in BGP_TOOLS.items():  # reported, never a failure: only --topology bgp needs them
        print(f"  [{'ok' if shutil.which(tool) else 'absent'}] {tool} ({pkg}), for --topology bgp only")
    for module, pkg in (
        ("dns", "dnspython"),
        ("yaml", "PyYAML"),
        ("xdist", "pytest-xdist"),
        ("pytest_html", "pytest-html"),
    ):
        try:
            __import__(module)
            ok = True
        except ImportError:
            ok = False
        results.append(_check(f"python module {module} ({pkg})", ok, f"pip install {pkg}"))
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
        probe = (
            "ip link set lo up && ip link add name cn-a type veth peer name cn-b && "
            "iptables -t nat -A POSTROUTING -m addrtype ! --dst-type LOCAL -j MASQUERADE"
        )
        done = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", probe], capture_output=True, text=True)
        results.append(
            _check(
                "kernel: network namespace, veth, iptables nat + addrtype in a private namespace",
                done.returncode == 0,
                f"kernel said: {done.stderr.strip()[:300]}",
            )
        )
    if missing:
        print(f"\ninstall what is missing with:\n  apt-get update && apt-get install -y {' '.join(missing)}")
    print("\nall good" if all(results) else "\nsome prerequisites are missing (see the fixes above)")
    return 0 if all(results) else 1


def _cmd_report(args: argparse.Namespace) -> int:
    matrix = report.load_matrix(Path(args.matrix))
    out = Path(args.out or Path(args.matrix).parent)
    for path in report.write_reports(matrix, out):
        print(path)
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    changes = report.diff_matrices(load_matrix_or_bundle(Path(args.old)), load_matrix_or_bundle(Path(args.new)))
    print(report.render_diff(changes))
    return 1 if changes and args.exit_code else 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """`pytest <the suites> [pytest args]`: the matrix from wherever crossnet is installed."""
    import pytest

    from crossnet.resources import SUITES

    extra = [a for a in args.pytest_args if a != "--"] if args.pytest_args[:1] == ["--"] else args.pytest_args
    argv = [str(SUITES), f"--rootdir={SUITES}", "-p", "no:cacheprovider", "-o", "junit_logging=system-out", *extra]
    print(f"crossnet verify: pytest {' '.join(argv)}", file=sys.stderr, flush=True)
    return int(pytest.main(argv))


def _cmd_scale_configs(args: argparse.Namespace) -> int:
    """Write kind configs for N routed clusters of M nodes each (1 control-plane + M-1 workers),
    with distinct podSubnet, serviceSubnet and dnsDomain; validated before they are written."""
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise CliError(f"{out} is not empty; pass a new or empty --out directory (crossnet overwrites nothing)")
    if args.clusters > 40 or args.nodes > 250:
        raise CliError(
            "at most 40 clusters of 250 nodes (the generated subnets are 10.<n>.0.0/16 and 10.<100+n>.0.0/16)"
        )
    texts = {}
    for n in range(1, args.clusters + 1):
        nodes = "\n".join(["  - role: control-plane"] + ["  - role: worker"] * (args.nodes - 1))
        texts[f"scale-{n}.yaml"] = (
            f"# generated by `crossnet scale-configs --clusters {args.clusters} --nodes {args.nodes}`\n"
            f"kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: scale-{n}\n"
            f"networking:\n  podSubnet: 10.{n}.0.0/16\n  serviceSubnet: 10.{100 + n}.0.0/16\n"
            "kubeadmConfigPatches:\n  - |\n    kind: ClusterConfiguration\n    networking:\n"
            f"      dnsDomain: scale-{n}.test\nnodes:\n{nodes}\n"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (out / name).write_text(text)
    load_topology([out / name for name in texts])  # refuse to hand out configs crossnet would refuse
    flags = " ".join(f"--kind-config {out / name}" for name in texts)
    print(f"crossnet: {len(texts)} kind configs in {out}\n  run: pytest suites/ {flags}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from crossnet.bench import run_bench

    return run_bench(
        rounds=args.rounds,
        profile=args.profile,
        topology=args.topology,
        timeout=args.probe_timeout,
        kind_configs=args.kind_config,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossnet",
        description="Networking conformance across Kubernetes clusters. `pytest suites/` runs "
        "the matrix; these commands manage a long-lived run and its reports.",
    )
    parser.add_argument("--version", action="version", version=f"crossnet {_version()}")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="bring the two-cluster lab up and leave it running (for --attach / exec)")
    add_options(
        up.add_argument,
        "--kind-config",
        "--profile",
        "--topology",
        "--state-dir",
        "--provider",
        "--reuse",
        "--agent-image",
        "--plumbing",
    )
    down = sub.add_parser("down", help="tear a run down: restore Corefiles, remove routes, end the topology")
    down.add_argument("--state-dir", help="the run to end (default: the only one under .crossnet/)")
    down.add_argument("--all", action="store_true", help="end every run under .crossnet/")
    existing_cli.add_down_arguments(down)
    status = sub.add_parser("status", help="show a run's clusters, nodes, pods, services and plumbing")
    status.add_argument("--state-dir")
    status.add_argument("--json", action="store_true", help="print the state file")
    ex = sub.add_parser("exec", help="run a command in a node or pod namespace: exec cluster-1/worker[/agent] -- ip r")
    ex.add_argument("--state-dir")
    ex.add_argument(
        "--timeout", type=positive_seconds, default=30.0, help="seconds before the command is ended (default 30)"
    )
    ex.add_argument("target", help="<cluster>/<node>[/<pod>], e.g. cluster-1/worker or cluster-2/worker2/agent")
    ex.add_argument("command", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    verify = sub.add_parser(
        "verify",
        help="run the conformance matrix (pytest on the suites this crossnet carries); "
        "any pytest or crossnet option may follow, e.g. crossnet verify --provider lab -x",
    )
    verify.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to pytest")
    sub.add_parser("doctor", help="check kernel and tool prerequisites; print the install command for what is missing")
    rep = sub.add_parser("report", help="re-render matrix.html and summary.md from a saved matrix.json")
    rep.add_argument("matrix", help="path to matrix.json")
    rep.add_argument("--out", help="output directory (default: beside matrix.json)")
    diff = sub.add_parser(
        "diff", help="list cells whose verdict changed between two matrix.json files or results bundles"
    )
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument("--exit-code", action="store_true", help="exit 1 when any verdict changed")
    bench = sub.add_parser("bench", help="measure up, plumbing, agents, probing and teardown; print figures")
    bench.add_argument(
        "--rounds", type=positive_count, default=3, help="how many bring-up/probe/teardown rounds (default 3)"
    )
    add_options(bench.add_argument, "--profile", "--topology", "--probe-timeout", "--kind-config")
    scale = sub.add_parser("scale-configs", help="write kind configs for N routed clusters of M nodes (scale tests)")
    scale.add_argument("--clusters", type=positive_count, default=4)
    scale.add_argument("--nodes", type=positive_count, default=8, help="nodes per cluster: 1 control-plane + workers")
    scale.add_argument("--out", required=True, help="a new or empty directory")
    register_cli(sub)
    existing_cli.register_cli(sub)
    return parser


COMMANDS = {
    "up": _cmd_up,
    "down": _cmd_down,
    "status": _cmd_status,
    "exec": _cmd_exec,
    "doctor": _cmd_doctor,
    "report": _cmd_report,
    "diff": _cmd_diff,
    "bench": _cmd_bench,
    "verify": _cmd_verify,
    "scale-configs": _cmd_scale_configs,
    "bundle": run_cli,
}
COMMANDS.update(existing_cli.COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["verify"] and not set(given[1:2]) & {"-h", "--help"}:  # everything after it is pytest's
        return _cmd_verify(argparse.Namespace(pytest_args=given[1:]))
    args = _parser().parse_args(given)
    started = time.perf_counter()
    sigterm_as_interrupt()  # SIGTERM tears down like Ctrl-C
    try:
        return COMMANDS[args.cmd](args)
    except (CliError, ConfigError, ProfileError, InputError, report.ReportError) as exc:
        print(f"crossnet {args.cmd}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ProviderError as exc:
        print(f"crossnet {args.cmd}: {exc}", file=sys.stderr)
        return EXIT_PROVIDER
    except KeyboardInterrupt:
        print(f"crossnet {args.cmd}: interrupted after {time.perf_counter() - started:.1f}s", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `crossnet status | head`: the reader left; not an error of ours
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a path we were pointed at: permissions, a file where a directory belongs
        print(
            f"crossnet {args.cmd}: {exc.filename or ''}: {exc.strerror or exc}\n    fix: check the path and its "
            "permissions (the lab needs root)",
            file=sys.stderr,
        )
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
