"""A testinfra backend that runs a command through a provider's `exec` (the same path as
`crossnet exec`): the lab and the fake provider give their nodes to testinfra this way."""

from __future__ import annotations

from typing import Any

from testinfra.backend.base import BaseBackend, CommandResult
from testinfra.host import Host

from crossnet.providers.base import ExecTarget

__all__ = ["COMMAND_TIMEOUT", "ExecBackend", "exec_host"]

COMMAND_TIMEOUT = 10.0


class ExecBackend(BaseBackend):  # type: ignore[misc]
    """testinfra backend: `sh -c COMMAND` on a node through `exec`, with a timeout (testinfra has none)."""

    NAME = "crossnet-exec"

    def __init__(self, exec_: Any, target: ExecTarget, timeout: float = COMMAND_TIMEOUT) -> None:
        self._exec, self._target, self._timeout = exec_, target, timeout
        super().__init__(str(target))

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        cmd = self.get_command(command, *args)
        rc, out, err = self._exec(self._target, ["sh", "-c", cmd], timeout=self._timeout)
        return self.result(rc, self.encode(cmd), out, err)


def exec_host(exec_: Any, cluster: str, node: str) -> Host:
    """A testinfra Host for `cluster/node` whose commands go through `exec_` (a provider's exec)."""
    return Host(ExecBackend(exec_, ExecTarget(cluster, node)))
