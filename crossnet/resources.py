"""Where the suites, profiles and kind configs are: the checkout's top level when crossnet runs
from a checkout (that layout is what its users know), else the copies the wheel carries inside
the package (crossnet/bundled/, placed there at build time: see pyproject.toml)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["CHECKOUT", "KIND_CONFIGS", "PROFILES", "SUITES", "data_root", "default_reports_dir", "in_checkout"]

CHECKOUT = Path(__file__).resolve().parent.parent


def in_checkout() -> bool:
    """True when this crossnet is the package of a source checkout (editable install or PYTHONPATH)."""
    return (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "suites").is_dir()


def data_root(name: str) -> Path:
    """The directory `name` ("suites", "profiles", "kind-configs")."""
    if in_checkout():
        return CHECKOUT / name
    return Path(str(importlib.resources.files("crossnet"))) / "bundled" / name.replace("-", "_")


def default_reports_dir() -> Path:
    """reports/ of the checkout, or of the current directory for an installed crossnet."""
    return CHECKOUT / "reports" if in_checkout() else Path.cwd() / "reports"


SUITES = data_root("suites")
PROFILES = data_root("profiles")
KIND_CONFIGS = data_root("kind-configs")
