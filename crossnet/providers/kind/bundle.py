"""The agent as one zipapp (crossnet.agent + dnspython, pure Python) for a `python:3-slim`
pod: shipped in a ConfigMap, so no image has to be built or pulled besides Python's."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import dns

import crossnet.agent

__all__ = ["AGENT_ARCHIVE", "CONFIGMAP_LIMIT", "build_agent_zipapp"]

AGENT_ARCHIVE = "crossnet-agent.pyz"
CONFIGMAP_LIMIT = 1024 * 1024  # a ConfigMap holds at most 1 MiB
MAIN = "import sys\nfrom crossnet.agent.__main__ import main\nsys.exit(main())\n"


def _add_tree(archive: zipfile.ZipFile, package_dir: Path, arc_root: str) -> None:
    for path in sorted(package_dir.rglob("*.py")):
        archive.write(path, f"{arc_root}/{path.relative_to(package_dir).as_posix()}")


def build_agent_zipapp() -> bytes:
    """A runnable archive: `python3 crossnet-agent.pyz serve ...` (deterministic bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("__main__.py", MAIN)
        archive.writestr("crossnet/__init__.py", "")
        _add_tree(archive, Path(crossnet.agent.__file__).parent, "crossnet/agent")
        _add_tree(archive, Path(dns.__file__).parent, "dns")
    data = b"#!/usr/bin/env python3\n" + buffer.getvalue()
    if len(data) > CONFIGMAP_LIMIT:
        raise ValueError(f"the agent zipapp is {len(data)} bytes, more than a ConfigMap holds ({CONFIGMAP_LIMIT})")
    return data
