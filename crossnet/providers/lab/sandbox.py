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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossnet.providers.base import ProviderError
from crossnet.providers.lab.supervisor import SOCKET_NAME

__all__ = [
    "PR_SET_PDEATHSIG",
    "UNIX_PATH_MAX",
    "CommandResult",
    "Sandbox",
    "SandboxClient",
    "SandboxError",
    "start_sandbox",
]

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


@dataclass
class Sandbox:
    """A started sandbox: the `unshare` process and the write end of its lifeline (supervisor.py)."""

    process: subprocess.Popen[bytes]
    lifeline: int | None

    def detach(self) -> None:
        """Let the sandbox outlive this process (crossnet up, once the lab is ready)."""
        if self.lifeline is not None:
            os.write(self.lifeline, b"D")
            os.close(self.lifeline)
            self.lifeline = None

    def close_lifeline(self) -> None:
        if self.lifeline is not None:
            with contextlib.suppress(OSError):
                os.close(self.lifeline)
            self.lifeline = None


def start_sandbox(state_dir: Path, detached: bool, run_id: str, timeout: float = 15.0) -> Sandbox:
    """Start `unshare … supervisor` and wait until its control socket appears.

    The sandbox ends when this process dies until `Sandbox.detach()` is called (crossnet up calls
    it once the lab is ready); detached=False also ties `unshare` to this thread by PDEATHSIG.
    """
    sock = state_dir / SOCKET_NAME
    if len(str(sock)) > UNIX_PATH_MAX:
        raise SandboxError(
            f"the state directory path is too long for a unix socket ({len(str(sock))} > "
            f"{UNIX_PATH_MAX} bytes): {state_dir}\n    fix: pass a shorter --state-dir"
        )
    package_root = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH", "")]))
    read_end, write_end = os.pipe()  # the lifeline: both ends close-on-exec unless passed on
    argv = [
        "unshare",
        "--mount",
        "--pid",
        "--net",
        "--fork",
        "--kill-child=SIGTERM",
        "--propagation",
        "private",
        sys.executable,
        "-m",
        "crossnet.providers.lab.supervisor",
        str(state_dir),
        run_id,
        str(read_end),
    ]
    # Output until the supervisor has made the state directory and moved to its log there: an
    # unlinked file, so nothing is left behind whenever this process dies.
    early = tempfile.TemporaryFile()  # noqa: SIM115 - read below if the start fails
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=early,
            stderr=early,
            env=env,
            start_new_session=True,
            pass_fds=(read_end,),
            preexec_fn=None if detached else _die_with_parent,
        )
    except FileNotFoundError as exc:
        os.close(write_end)
        early.close()
        raise SandboxError(f"{exc.filename} not found; run `crossnet doctor` for the install command") from None
    finally:
        os.close(read_end)
    sandbox = Sandbox(proc, write_end)
    try:
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if proc.poll() is not None:
                sandbox.close_lifeline()
                raise SandboxError(_start_failure(proc.returncode, early, state_dir))
            if time.monotonic() > deadline:
                sandbox.close_lifeline()
                proc.kill()
                raise SandboxError(
                    f"the lab sandbox did not become ready within {timeout:.0f}s; see {state_dir / 'supervisor.log'}"
                )
            time.sleep(0.002)
    except BaseException:  # Ctrl-C while waiting: a closed lifeline ends the sandbox at once
        sandbox.close_lifeline()
        raise
    finally:
        early.close()
    return sandbox


def _start_failure(status: int | None, early: Any, state_dir: Path) -> str:
    early.seek(0)
    text = str(early.read(8000).decode(errors="replace")).strip()
    with contextlib.suppress(OSError):
        text += "\n" + (state_dir / "supervisor.log").read_text(errors="replace").strip()[-4000:]
    if "already exists" in text or "belongs to crossnet run" in text:
        return str(text).replace("crossnet supervisor: ", "")
    return (
        f"the lab sandbox exited at start (status {status}):\n{text.strip()}\n"
        "    fix: run as root (network namespaces need CAP_SYS_ADMIN); `crossnet doctor`"
    )


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
                raise SandboxError(
                    f"the lab sandbox at {self.socket_path} is not running ({exc.strerror}); "
                    "start one with `crossnet up` or run `pytest suites/`"
                ) from None
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

    def exec(
        self, netns: str | None, argv: list[str], input: str | None = None, timeout: float = 30.0
    ) -> CommandResult:
        reply = self._call(
            {"op": "exec", "netns": netns, "argv": argv, "input": input, "timeout": timeout}, timeout + 5.0
        )
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
