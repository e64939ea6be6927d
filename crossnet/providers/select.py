"""Choose a provider by name (`auto` says which and why), make one, or attach to a run's."""

from __future__ import annotations

import shutil
from pathlib import Path

from crossnet.providers.base import Provider, ProviderError, StateFile

__all__ = ["PROVIDER_NAMES", "attach_provider", "choose_provider", "make_provider"]

PROVIDER_NAMES = ("auto", "lab", "kind")


def choose_provider(requested: str) -> tuple[str, str]:
    """(provider, why): `auto` picks kind when the kind binary and a docker daemon are usable."""
    if requested in ("lab", "kind"):
        return requested, f"--provider {requested}"
    if requested != "auto":
        raise ProviderError(f"unknown provider {requested!r}; use one of {', '.join(PROVIDER_NAMES)}")
    if shutil.which("kind") is None:
        return "lab", "auto: no kind binary on PATH, so the embedded lab emulates kind's topology here"
    try:
        from crossnet.providers.kind.nodes import NodeContainers

        NodeContainers.connect(None)
    except (ProviderError, ImportError) as exc:
        return "lab", f"auto: kind is installed but docker is not usable ({str(exc).splitlines()[0]}); using the lab"
    return "kind", "auto: kind and a docker daemon are usable"


def make_provider(name: str, state_dir: Path, run_id: str, detached: bool = False, reuse: bool = False,
                  agent_image: str | None = None, global_cidr: str | None = None) -> Provider:
    if name == "lab":
        from crossnet.providers.lab.provider import LabProvider

        return LabProvider(state_dir, run_id, detached=detached, global_cidr=global_cidr)
    if name == "kind":
        from crossnet.providers.kind.provider import DEFAULT_AGENT_IMAGE, KindProvider

        return KindProvider(state_dir, run_id, reuse=reuse, agent_image=agent_image or DEFAULT_AGENT_IMAGE,
                            global_cidr=global_cidr)
    raise ProviderError(f"unknown provider {name!r}; use one of {', '.join(PROVIDER_NAMES)}")


def attach_provider(state_dir: Path, alive: bool = True) -> Provider:
    """The provider of a run; alive=False skips the liveness check (to clean up a dead run)."""
    data = StateFile(state_dir).read()
    name = data.get("provider")
    if name == "lab":
        from crossnet.providers.lab.provider import LabProvider

        return LabProvider.attach(state_dir, alive=alive)
    if name == "kind":
        from crossnet.providers.kind.provider import KindProvider

        return KindProvider.attach(state_dir)
    raise ProviderError(f"{state_dir}: unknown provider {name!r} in the state file")
