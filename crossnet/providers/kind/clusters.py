"""The kind CLI behind a seam (create/delete/list/export logs), with clusters created in
parallel and a progress line per cluster."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from crossnet.providers.base import ProviderError

__all__ = ["KindCli", "KindRunner", "create_clusters", "kind_install_hint"]

CREATE_TIMEOUT = 600.0


def kind_install_hint() -> str:
    return (
        "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation) and docker, or run "
        "`--provider lab`, which emulates the same topology here without them"
    )


class KindRunner(Protocol):
    def clusters(self) -> list[str]: ...
    def create(self, name: str, config: Path, kubeconfig: Path, log: Path) -> None: ...
    def delete(self, name: str) -> None: ...
    def export_logs(self, name: str, directory: Path) -> None: ...
    def kubeconfig(self, name: str) -> str: ...


@dataclass
class KindCli:
    """`kind` through its CLI; every failure is a ProviderError naming the command and its output."""

    binary: str = "kind"

    def __post_init__(self) -> None:
        found = shutil.which(self.binary)
        if found is None:
            raise ProviderError(f"the kind binary ({self.binary}) is not on PATH; {kind_install_hint()}")
        self.binary = found

    def _run(self, argv: list[str], timeout: float = 120.0) -> str:
        try:
            done = subprocess.run([self.binary, *argv], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProviderError(f"`kind {' '.join(argv)}` did not finish within {timeout:.0f}s") from None
        if done.returncode != 0:
            raise ProviderError(
                f"`kind {' '.join(argv)}` failed (exit {done.returncode}): {done.stderr.strip()[-800:]}"
            )
        return done.stdout

    def clusters(self) -> list[str]:
        return [
            line.strip()
            for line in self._run(["get", "clusters"]).splitlines()
            if line.strip() and not line.startswith("No kind clusters")
        ]

    def create(self, name: str, config: Path, kubeconfig: Path, log: Path) -> None:
        with log.open("w") as out:
            done = subprocess.run(
                [
                    self.binary,
                    "create",
                    "cluster",
                    "--name",
                    name,
                    "--config",
                    str(config),
                    "--kubeconfig",
                    str(kubeconfig),
                    "--wait",
                    "5m",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=CREATE_TIMEOUT,
            )
        if done.returncode != 0:
            tail = log.read_text(errors="replace").strip()[-800:]
            raise ProviderError(f"kind could not create {name} (exit {done.returncode}); log {log}:\n{tail}")

    def delete(self, name: str) -> None:
        self._run(["delete", "cluster", "--name", name], timeout=300.0)

    def export_logs(self, name: str, directory: Path) -> None:
        self._run(["export", "logs", str(directory), "--name", name], timeout=300.0)

    def kubeconfig(self, name: str) -> str:
        return self._run(["get", "kubeconfig", "--name", name])


def create_clusters(
    kind: KindRunner,
    wanted: Sequence[tuple[str, Path]],
    state_dir: Path,
    logs_dir: Path,
    progress: Callable[[str], None],
) -> list[str]:
    """Create the clusters in parallel. If any fails, export its logs, delete every cluster this
    call created, and raise one error naming each failure. Returns the names created."""
    logs_dir.mkdir(parents=True, exist_ok=True)

    def create(item: tuple[str, Path]) -> tuple[str, float, ProviderError | None]:
        name, config = item
        started = time.perf_counter()
        progress(f"kind: creating {name} from {config}")
        try:
            kind.create(name, config, state_dir / f"kubeconfig-{name}", logs_dir / f"kind-create-{name}.log")
        except ProviderError as exc:
            return name, time.perf_counter() - started, exc
        progress(f"kind: {name} created ({time.perf_counter() - started:.0f}s)")
        return name, time.perf_counter() - started, None

    with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
        results = list(pool.map(create, wanted))
    failures = [(name, exc) for name, _, exc in results if exc is not None]
    if not failures:
        return [name for name, _, _ in results]
    for name, _ in failures:
        try:
            kind.export_logs(name, logs_dir / f"kind-logs-{name}")
        except ProviderError as exc:
            progress(f"kind: could not export the logs of {name}: {exc}")
    existing = set(kind.clusters())
    for name, _, _ in results:
        if name in existing:  # created by this call (failed ones may exist half-made): remove them all
            progress(f"kind: deleting {name} after the failure")
            kind.delete(name)
    raise ProviderError(
        "kind could not create every cluster (the others were deleted again):\n"
        + "\n".join(f"  {name}: {exc}" for name, exc in failures)
        + f"\n  logs: {logs_dir}"
    )
