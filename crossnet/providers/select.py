"""The provider table: choose a provider by name (`auto` says which and why), make one, or attach
to a run's. A provider is a module listed in PROVIDERS that offers
    create(state_dir, run_id, settings) -> Provider       a new run
    attach(state_dir, alive) -> Provider                  the run of a state directory
    usable() -> str | None                                why it cannot run here (None: it can)
and is imported only when used (kind needs the docker and kubernetes clients). Adding a provider
is a package under providers/ with those three functions, one line below, and its tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from crossnet.providers.base import Provider, ProviderError, StateFile

__all__ = [
    "AUTO_ORDER",
    "PROVIDERS",
    "PROVIDER_NAMES",
    "ProviderSettings",
    "attach_provider",
    "choose_provider",
    "make_provider",
]

PROVIDERS: dict[str, str] = {
    "lab": "crossnet.providers.lab.provider",
    "kind": "crossnet.providers.kind.provider",
    "existing": "crossnet.providers.existing.provider",  # clusters somebody else built, from a kubeconfig
}
AUTO_ORDER = ("kind", "lab")  # --provider auto: the first that is usable here
PROVIDER_NAMES = ("auto", *PROVIDERS)


@dataclass(frozen=True)
class ProviderSettings:
    """What a run asks of its provider; each provider takes what applies to it."""

    detached: bool = False  # crossnet up: the run outlives the CLI
    reuse: bool = False  # kind: adopt existing clusters of the configs' names
    agent_image: str | None = None  # Kubernetes-backed providers: the agents' image
    global_cidr: str | None = None  # Submariner Globalnet with this global CIDR
    bgp: Any = None  # profile.BgpPlumbing: clusters joined by BGP (the bgp topology), no route injected
    mcs: Any = None  # profile.McsPlumbing: Multi-Cluster Services (the mcs topology)
    # existing: the controller's existing.session.Discovery (or existing.settings.ExistingSettings)
    existing: Any = None


def _module(name: str) -> ModuleType:
    if name not in PROVIDERS:
        raise ProviderError(f"unknown provider {name!r}; use one of {', '.join(PROVIDER_NAMES)}")
    return importlib.import_module(PROVIDERS[name])


def choose_provider(requested: str) -> tuple[str, str]:
    """(provider, why): `auto` takes the first of AUTO_ORDER that is usable here."""
    if requested in PROVIDERS:
        return requested, f"--provider {requested}"
    if requested != "auto":
        raise ProviderError(f"unknown provider {requested!r}; use one of {', '.join(PROVIDER_NAMES)}")
    reasons: list[str] = []
    for name in AUTO_ORDER:
        why_not = _module(name).usable()
        if why_not is None:
            return name, f"auto: {'; '.join([*reasons, f'{name} is usable'])}"
        reasons.append(why_not)
    raise ProviderError("no provider can run here: " + "; ".join(reasons))


def make_provider(name: str, state_dir: Path, run_id: str, settings: ProviderSettings | None = None) -> Provider:
    provider: Provider = _module(name).create(state_dir, run_id, settings or ProviderSettings())
    return provider


def attach_provider(state_dir: Path, alive: bool = True) -> Provider:
    """The provider of a run; alive=False skips the liveness check (to clean up a dead run)."""
    name = _recorded_provider(state_dir)
    if name not in PROVIDERS:
        raise ProviderError(f"{state_dir}: unknown provider {name!r} in the state file")
    provider: Provider = _module(name).attach(state_dir, alive)
    return provider


def _recorded_provider(state_dir: Path) -> str:
    """The provider a state file names (the file validated first: providers.base.state_problems)."""
    return str(StateFile(state_dir).read().get("provider"))
