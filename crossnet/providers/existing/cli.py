"""The commands of existing-cluster mode, for crossnet.cli to register:

    crossnet preflight --context A=CTX --context B=CTX [--profile P] [--json]   exit 1 when a row blocks
    crossnet rbac [--node-evidence] [--profile P] [--namespace NS] [--subject User:NAME]
    crossnet discover --context A=CTX --context B=CTX [--name N] [--out-clusterset F] [--out-profile F]
    crossnet images [--node-evidence] [--agent-image I] [--debug-image I]
    crossnet down --context A=CTX [--run-id R | --all | --expired]              (wired into `down`)

`register_cli(subparsers)` adds the first four; `add_down_arguments(parser)` adds --context and
friends to `crossnet down`, and `cmd_down(args)` runs when --context/--clusterset is given. Every
handler returns the exit code; errors are ProviderError/InputError (crossnet.cli maps them).

The first four work on existing clusters only; each also takes `--provider existing` (a no-op, so
a command line can say what the run's says: `crossnet preflight --provider existing --context …`),
and any other provider is a usage error. `crossnet down` serves every provider and takes none.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from crossnet.profile import Profile, load_profile
from crossnet.providers.base import RUN_ID, InputError, ProviderError
from crossnet.providers.existing.clusterset import ClusterRef, clusterset_yaml
from crossnet.providers.existing.draft import draft_profile
from crossnet.providers.existing.flags import OPTION_SPECS
from crossnet.providers.existing.preflight import blocking, preflight, render_table, rows_json
from crossnet.providers.existing.provider import EXPIRES
from crossnet.providers.existing.rbac import rbac_yaml, rights
from crossnet.providers.existing.session import ApiFactory, connect, discover
from crossnet.providers.existing.settings import (
    ExistingSettings,
    profile_needs,
    settings_from_options,
)
from crossnet.providers.kind.kube import MANAGED_BY, RUN_LABEL
from crossnet.providers.kube_agents import DEFAULT_AGENT_IMAGE

__all__ = ["COMMANDS", "add_down_arguments", "cmd_down", "existing_provider", "register_cli"]

CLUSTER_FLAGS = ("--kubeconfig", "--context", "--clusterset")
RUN_FLAGS = (
    "--nodes",
    "--host-vantage",
    "--node-evidence",
    "--namespace",
    "--debug-image",
    "--image-pull-secret",
    "--node-selector",
    "--toleration",
)


def existing_provider(text: str) -> str:
    """argparse type of these commands' --provider: `existing`, nothing else."""
    if text != "existing":
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r}: this command works on clusters somebody else built: pass --provider existing or "
            "leave it out (lab and kind runs: crossnet up, status and down)"
        )
    return text


def _provider_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--provider",
        type=existing_provider,
        default="existing",
        metavar="existing",
        help="accepted for symmetry with `pytest suites/ --provider existing` (the only provider here)",
    )


def _add(parser: argparse.ArgumentParser, *flags: str) -> None:
    for flag in flags:
        parser.add_argument(flag, **OPTION_SPECS[flag])


def _profile_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile", default=None, metavar="NAME|PATH", help="the profile the run will use (its CRDs, requires:)"
    )


def _plumbing_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plumbing",
        choices=("none", "inject"),
        default="none",
        help="none (default): crossnet changes nothing outside its namespace; inject: the run will add node "
        "routes and Corefile forwards (through privileged debug pods and the coredns ConfigMap) and undo them",
    )


def _agent_image_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--agent-image", default=None, metavar="IMAGE", help=f"the agents' image (default {DEFAULT_AGENT_IMAGE})"
    )


def register_cli(sub: Any) -> None:
    """Add preflight, rbac, discover and images to crossnet's subparsers."""
    pre = sub.add_parser("preflight", help="check existing clusters for a run, read-only (exit 1 when blocked)")
    _add(pre, *CLUSTER_FLAGS, *RUN_FLAGS)
    _profile_arg(pre)
    _agent_image_arg(pre)
    pre.add_argument("--json", action="store_true", help="print the rows as JSON")
    _plumbing_arg(pre)
    _provider_arg(pre)
    rbac = sub.add_parser("rbac", help="print the RBAC a run on existing clusters needs (ClusterRole, Roles)")
    _add(rbac, "--node-evidence", "--namespace")
    _profile_arg(rbac)
    rbac.add_argument(
        "--subject",
        default="User:crossnet",
        metavar="KIND:NAME",
        help="who gets the rights: User:NAME, Group:NAME or ServiceAccount:NS/NAME (default User:crossnet)",
    )
    _plumbing_arg(rbac)
    _provider_arg(rbac)
    disc = sub.add_parser("discover", help="discover existing clusters; write a cluster-set file and a draft profile")
    _add(disc, *CLUSTER_FLAGS, "--nodes", "--node-selector")
    disc.add_argument("--name", default="discovered", help="the cluster set's name (default discovered)")
    disc.add_argument("--out-clusterset", default=None, metavar="FILE", help="default clustersets/<name>.yaml")
    disc.add_argument("--out-profile", default=None, metavar="FILE", help="default profiles/<name>-draft.yaml")
    disc.add_argument("--force", action="store_true", help="overwrite those files when they exist")
    _provider_arg(disc)
    img = sub.add_parser("images", help="print every image a run on existing clusters pulls (for mirroring)")
    _add(img, "--node-evidence", "--debug-image")
    _agent_image_arg(img)
    _provider_arg(img)


def add_down_arguments(down: argparse.ArgumentParser) -> None:
    """`crossnet down --context … [--run-id R | --all | --expired]`: leftovers on existing clusters."""
    _add(down, *CLUSTER_FLAGS, "--namespace")
    down.add_argument("--run-id", default=None, help="with --context: remove what the run R left")
    down.add_argument("--expired", action="store_true", help="with --context: remove leftovers past their expiry")


def _profile(args: argparse.Namespace) -> Profile | None:
    return load_profile(args.profile) if getattr(args, "profile", None) else None


def _settings(args: argparse.Namespace, minimum: int = 2) -> ExistingSettings:
    return settings_from_options(vars(args), _profile(args), minimum=minimum)


def cmd_preflight(args: argparse.Namespace, api_factory: ApiFactory | None = None) -> int:
    settings = _settings(args, minimum=1)
    namespace = settings.namespace or "crossnet-preflight"
    rows, _ = preflight(settings, lambda ref: connect(settings, ref, api_factory), namespace)
    print(rows_json(rows) if args.json else render_table(rows))
    return 1 if blocking(rows) else 0


def cmd_rbac(args: argparse.Namespace) -> int:
    needs = profile_needs(_profile(args))
    kind, _, name = str(args.subject).partition(":")
    if kind not in ("User", "Group", "ServiceAccount") or not name or (kind == "ServiceAccount" and "/" not in name):
        raise InputError(f"--subject {args.subject[:80]!r}: write User:NAME, Group:NAME or ServiceAccount:NS/NAME")
    found = rights(
        node_evidence=bool(args.node_evidence),
        mcs=needs["mcs"],
        globalnet=needs["globalnet"],
        fixed_namespace=bool(args.namespace),
        inject=args.plumbing == "inject",
    )
    sys.stdout.write(rbac_yaml(found, args.subject, args.namespace or ""))
    return 0


def _write(path: Path, text: str, force: bool) -> None:
    if path.exists() and not force:
        raise InputError(f"{path} exists; pass --force to overwrite it, or --out-clusterset/--out-profile elsewhere")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def cmd_discover(args: argparse.Namespace, api_factory: ApiFactory | None = None) -> int:
    settings = _settings(args)
    if not RUN_ID.match(args.name) or "." in args.name:
        raise InputError(f"--name {args.name[:80]!r}: letters, digits and '-' only")
    found = discover(settings, api_factory)
    refs = [
        ClusterRef(
            f.name,
            f.context,
            ref.kubeconfig,
            f.domain,
            f.pod_cidrs if "/32" not in "".join(f.pod_cidrs) else (),
            (f.service_cidrs or ("",))[0],
        )
        for f, ref in zip(found.facts, settings.clusters, strict=True)
    ]
    notes = [f"written by `crossnet discover` on {time.strftime('%Y-%m-%d')}; hints are what was found:"]
    notes += [f"  {f.summary()}" for f in found.facts]
    clusterset = Path(args.out_clusterset or f"clustersets/{args.name}.yaml")
    profile = Path(args.out_profile or f"profiles/{args.name}-draft.yaml")
    _write(clusterset, clusterset_yaml(args.name, refs, settings.kubeconfig, notes), args.force)
    _write(profile, draft_profile(f"{args.name}-draft", found.facts), args.force)
    for line in found.header():
        print(line)
    print(f"crossnet: wrote {clusterset} and {profile} (a draft: review its rules)")
    print(f"  check: crossnet preflight --clusterset {clusterset} --profile {profile}")
    print(f"  run:   pytest suites/ --provider existing --clusterset {clusterset} --profile {profile}")
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    settings = ExistingSettings(
        kubeconfig="",
        clusters=(),
        image=args.agent_image or DEFAULT_AGENT_IMAGE,
        node_evidence=bool(args.node_evidence),
        **({"debug_image": args.debug_image} if args.debug_image else {}),
    )
    for image in settings.images():
        print(image)
    return 0


def cmd_down(args: argparse.Namespace, api_factory: ApiFactory | None = None) -> int:
    """Remove leftovers found by crossnet's labels on the given contexts (never anything without them)."""
    run_id = args.run_id
    if not (run_id or args.all or args.expired):
        raise InputError("with --context, say what to remove: --run-id R, --expired or --all (crossnet's leftovers)")
    if run_id is not None and not RUN_ID.match(run_id):
        raise InputError(f"--run-id {run_id[:80]!r} is not a crossnet run id")
    settings = _settings(args, minimum=1)
    if settings.namespace and not run_id:
        raise InputError("in a given --namespace, say which run: --run-id R")
    selector = ",".join(f"{k}={v}" for k, v in {**MANAGED_BY, **({RUN_LABEL: run_id} if run_id else {})}.items())
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    failed = 0
    for ref in settings.clusters:
        try:
            kube = connect(settings, ref, api_factory)
            if settings.namespace:
                for version, plural in (("v1", "pods"), ("v1", "services"), ("v1", "configmaps"), ("v1", "secrets")):
                    kube.delete_collection(version, plural, settings.namespace, selector)
                print(f"crossnet: {ref.name}: removed run {run_id}'s objects from {settings.namespace}")
                continue
            removed = []
            for name, labels, annotations in kube.namespaces(selector):
                ours = all(labels.get(k) == v for k, v in MANAGED_BY.items()) and bool(labels.get(RUN_LABEL))
                expired = annotations.get(EXPIRES, "9999") < now
                if ours and (not args.expired or expired) and (not run_id or labels.get(RUN_LABEL) == run_id):
                    kube.delete_namespace(name)
                    removed.append(name)
            print(f"crossnet: {ref.name}: deleted {', '.join(removed) if removed else 'nothing (no leftover)'}")
        except ProviderError as exc:
            failed += 1
            print(f"crossnet down: {ref.name}: {exc}", file=sys.stderr)
    return 3 if failed else 0


COMMANDS = {"preflight": cmd_preflight, "rbac": cmd_rbac, "discover": cmd_discover, "images": cmd_images}
