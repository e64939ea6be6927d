"""Start the lab sandbox and talk to its supervisor (see supervisor.py for the guarantees)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossnet.providers.base import ProviderError
from crossnet.providers.lab.supervisor import SOCKET_NAME

__all__ = ["PR_SET_PDEATHSIG", "UNIX_PATH_MAX", "CommandResult", "SandboxClient", "SandboxError", "start_sandbox"]

PR_SET_PDEATHSIG = 1
UNIX_PATH_MAX = 107


class SandboxError(ProviderError):
    """The lab sandbox could not start or answer; the message says why and what to do."""


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the thread that started it dies (even by SIGKILL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def start_sandbox(state_dir: Path, detached: bool, timeout: float = 15.0) -> subprocess.Popen[bytes]:
    """Start `unshare … supervisor` and wait until its control socket appears.

    detached=False ties the sandbox to this process (crash-safe); detached=True (crossnet up)
    lets it outlive the CLI until `crossnet down`.
    """
    sock = state_dir / SOCKET_NAME
    if len(str(sock)) > UNIX_PATH_MAX:
        raise SandboxError(f"the state directory path is too long for a unix socket ({len(str(sock))} > "
                           f"{UNIX_PATH_MAX} bytes): {state_dir}\n    fix: pass a shorter --state-dir")
    package_root = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH", "")]))
    argv = ["unshare", "--mount", "--pid", "--net", "--fork", "--kill-child=SIGTERM", "--propagation", "private",
            sys.executable, "-m", "crossnet.providers.lab.supervisor", str(state_dir)]
    log = open(state_dir / "supervisor.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, preexec_fn=None if detached else _die_with_parent)
    except FileNotFoundError as exc:
        raise SandboxError(f"{exc.filename} not found; run `crossnet doctor` for the install command") from None
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if proc.poll() is not None:
            text = (state_dir / "supervisor.log").read_text(errors="replace").strip()
            raise SandboxError(f"the lab sandbox exited at start (status {proc.returncode}):\n{text}\n"
                               "    fix: run as root (network namespaces need CAP_SYS_ADMIN); `crossnet doctor`")
        if time.monotonic() > deadline:
            proc.kill()
            raise SandboxError(f"the lab sandbox did not become ready within {timeout:.0f}s; see "
                               f"{state_dir / 'supervisor.log'}")
        time.sleep(0.002)
    return proc


def _connect(conn: socket.socket, path: str, timeout: float) -> None:
    """Connect, waiting out a full listen backlog (EAGAIN) instead of failing at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)


class SandboxClient:
    """Runs commands in lab namespaces through the supervisor's control socket."""

    def __init__(self, state_dir: Path) -> None:
        self.socket_path = str(state_dir / SOCKET_NAME)

    def _call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            try:
                _connect(conn, self.socket_path, timeout)
            except OSError as exc:
                raise SandboxError(f"the lab sandbox at {self.socket_path} is not running ({exc.strerror}); "
                                   "start one with `crossnet up` or run `pytest suites/`") from None
            conn.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        if not data:
            return {"ok": True}
        reply: dict[str, Any] = json.loads(data)
        if "error" in reply:
            raise SandboxError(f"lab supervisor: {reply['error']}")
        return reply

    def exec(self, netns: str | None, argv: list[str], input: str | None = None,
             timeout: float = 30.0) -> CommandResult:
        reply = self._call({"op": "exec", "netns": netns, "argv": argv, "input": input, "timeout": timeout},
                           timeout + 5.0)
        return CommandResult(int(reply["rc"]), str(reply["stdout"]), str(reply["stderr"]))

    def spawn(self, netns: str | None, argv: list[str], log: Path) -> int:
        return int(self._call({"op": "spawn", "netns": netns, "argv": argv, "log": str(log)}, 10.0)["pid"])

    def spawn_python(self, netns: str, program: str, argv: list[str], log: Path) -> int:
        """Start a lab daemon (program "agent" or "dns") in `netns` through the fork server."""
        request = {"op": "spawn-python", "netns": netns, "program": program, "argv": argv, "log": str(log)}
        return int(self._call(request, 30.0)["pid"])

    def ping(self) -> int:
        return int(self._call({"op": "ping"}, 5.0)["pid"])

    def shutdown(self) -> None:
        with contextlib.suppress(SandboxError, OSError):
            self._call({"op": "shutdown"}, 10.0)
