"""The lab sandbox's supervisor: PID 1 of a private pid, mount and network namespace.

Started by `sandbox.start_sandbox` as
    unshare --mount --pid --net --fork --kill-child=SIGTERM --propagation private \
        python -m crossnet.providers.lab.supervisor STATE_DIR RUN_ID LIFELINE_FD
it mounts a private tmpfs on /run (so `ip netns add` never touches the host's /run/netns),
forks a control server that runs commands inside lab namespaces on request, and reaps orphans.

Crash safety, at every moment:
- The starter keeps the write end of a pipe (the lifeline) whose read end is LIFELINE_FD here.
  When the starter dies — SIGKILL included, and even before this process has installed a
  single signal handler (as PID 1 of its pid namespace it ignores every signal it has no
  handler for, so an early SIGTERM is lost) — the pipe reads EOF: this PID 1 kills every process
  of the sandbox, removes the state directory and exits; with the mount namespace gone the
  kernel frees every network namespace. `crossnet up` writes one byte ("detached") once the lab
  is ready, after which the sandbox outlives it until `crossnet down`.
- The starter also gives `unshare` PR_SET_PDEATHSIG=SIGKILL, so `--kill-child=SIGTERM` reaches
  this PID 1 too (the same cleanup).
- `shutdown` (and any exit of the control server) ends the same way: every process killed, the
  state directory removed — by the sandbox itself, so a starter killed during teardown leaves
  nothing behind. The state directory is removed only when its owner mark names RUN_ID.

Access: the control socket runs any command as root. It is created 0600 in a 0700 directory
whatever the umask (this process runs under umask 077), and every connection's peer
credentials (SO_PEERCRED) must be root or the owner of the state directory.

Control protocol (path-based unix socket `STATE_DIR/ctl.sock`, one JSON line each way):
    {"op": "exec", "netns": NAME|null, "argv": [...], "input": str|null, "timeout": s}
        -> {"rc": int, "stdout": str, "stderr": str}
    {"op": "spawn", "netns": NAME|null, "argv": [...], "log": PATH} -> {"pid": int}
    {"op": "spawn-python", "netns": NAME, "program": "agent"|"dns", "argv": [...], "log": PATH}
        -> {"pid": int}   (forked from a fork server that has the program imported already)
    {"op": "ping"} -> {"pid": int}
    {"op": "shutdown"} -> {"ok": true}   (ends every spawned process, then the sandbox)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SOCKET_NAME = "ctl.sock"
NETNS_DIR = "/run/netns"


def netns_argv(netns: str | None, argv: list[str]) -> list[str]:
    if not netns:
        return argv
    return ["nsenter", f"--net={NETNS_DIR}/{netns}", "--", *argv]


class _Spawned:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: list[subprocess.Popen[bytes]] = []

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.procs.append(proc)

    def end_all(self) -> None:
        with self.lock:
            procs, self.procs = self.procs, []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


SPAWNED = _Spawned()


class _Zygote:
    """The fork server for Python daemons (zygote.py), started on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None

    def spawn(self, request: dict[str, Any]) -> int:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "crossnet.providers.lab.zygote"],
                    text=True,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError("the lab's fork server ended; see the supervisor log")
        return int(json.loads(reply)["pid"])


ZYGOTE = _Zygote()


def _run(request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "ping":
        return {"pid": os.getpid()}
    if op == "exec":
        argv = netns_argv(request.get("netns"), list(request["argv"]))
        try:
            done = subprocess.run(
                argv,
                input=request.get("input"),
                capture_output=True,
                text=True,
                timeout=float(request.get("timeout") or 30.0),
            )
        except subprocess.TimeoutExpired as exc:
            return {"rc": 124, "stdout": _text(exc.stdout), "stderr": _text(exc.stderr) + "\n(timed out)"}
        except OSError as exc:
            return {"rc": 127, "stdout": "", "stderr": f"{argv[0]}: {exc.strerror}"}
        return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
    if op == "spawn":
        argv = netns_argv(request.get("netns"), list(request["argv"]))
        with open(request["log"], "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        SPAWNED.add(proc)
        return {"pid": proc.pid}
    if op == "spawn-python":
        return {"pid": ZYGOTE.spawn({k: request[k] for k in ("netns", "program", "argv", "log")})}
    return {"error": f"unknown op {op!r}"}


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.decode(errors="replace")


ALLOWED_UIDS: set[int] = {0}  # root, plus the state directory's owner (set in main)


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        uid = peer_uid(self.request)
        if uid not in ALLOWED_UIDS:
            self.wfile.write(
                json.dumps({"error": f"permission denied: uid {uid} is not root or the owner of this lab"}).encode()
                + b"\n"
            )
            return
        line = self.rfile.readline()
        if not line:
            return
        try:
            request = json.loads(line)
            if request.get("op") == "shutdown":
                SPAWNED.end_all()
                self.wfile.write(b'{"ok": true}\n')
                self.wfile.flush()
                os._exit(0)
            reply = _run(request)
        except Exception as exc:  # noqa: BLE001 - the client gets every failure as data
            reply = {"error": f"{exc.__class__.__name__}: {exc}"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 256  # bring-up sends a burst of concurrent requests


def _serve(state_dir: Path) -> None:
    final = state_dir / SOCKET_NAME
    temporary = state_dir / f".{SOCKET_NAME}.{os.getpid()}"
    server = _Server(str(temporary), _Handler)
    os.chmod(temporary, 0o600)
    os.rename(temporary, final)  # readiness: the socket appears under its name only when it serves
    server.serve_forever()


_ENDING = threading.Lock()
_ENDING_THREAD: list[int] = []


def _end_sandbox(state_dir: Path, run_id: str, status: int) -> None:
    """PID 1's way out: kill every other process of the sandbox, remove the state directory if
    its owner mark names this run, exit (the kernel then frees every namespace).

    Entered once: the lifeline thread and a SIGTERM handler may both call it, and a second caller's
    os._exit must not cut the first one's removal short (that left an empty state directory)."""
    if not _ENDING.acquire(blocking=False):
        if threading.get_ident() in _ENDING_THREAD:
            return  # a signal while this thread ends the sandbox: the ending goes on where it was
        while True:  # another thread is ending the sandbox; it exits the process
            time.sleep(60)
    _ENDING_THREAD.append(threading.get_ident())
    with contextlib.suppress(OSError):
        os.kill(-1, signal.SIGKILL)  # from PID 1 of a pid namespace: every process in it but this one
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:  # reap them all: none may still write into the state directory
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except OSError:
            time.sleep(0.01)
    try:
        from crossnet.providers.statedir import release_state_dir

        release_state_dir(state_dir, run_id)
    finally:
        os._exit(status)


def _watch_lifeline(fd: int, state_dir: Path, run_id: str) -> None:
    """Block on the lifeline: EOF (the starter died before detaching) ends the sandbox; a byte
    means detached (crossnet up), after which only `shutdown` or SIGTERM end it."""
    try:
        data = os.read(fd, 1)
    except OSError:
        data = b""
    if not data:
        print(
            "crossnet supervisor: the process that started this lab died; ending the lab", file=sys.stderr, flush=True
        )
        _end_sandbox(state_dir, run_id, 143)
    os.close(fd)


def _claim(state_dir: Path, run_id: str) -> None:
    """Create the state directory (new, 0700, owner mark: statedir.claim_state_dir) from inside the
    sandbox, so that from its first byte on it belongs to a process that removes it when the
    starter dies; then send this process's output to its log there."""
    from crossnet.providers.statedir import claim_state_dir

    # No death between mkdir and the owner mark (an unmarked directory could not be removed as
    # ours): SIGTERM is only noted while claiming, and obeyed right after.
    deferred: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: deferred.append(signum))
    try:
        claim_state_dir(state_dir, run_id)
        os.mkdir(state_dir / "logs", 0o700)
    finally:
        signal.signal(signal.SIGTERM, lambda _signum, _frame: _end_sandbox(state_dir, run_id, 143))
        if deferred:
            _end_sandbox(state_dir, run_id, 143)
    log = os.open(state_dir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print(
            "usage: python -m crossnet.providers.lab.supervisor STATE_DIR RUN_ID LIFELINE_FD (started by crossnet)",
            file=sys.stderr,
        )
        return 2
    state_dir, run_id, lifeline = Path(argv[0]).resolve(), argv[1], int(argv[2])
    os.umask(0o077)
    # Ctrl-C belongs to the harness, which tears down in order; our death signal is SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: _end_sandbox(state_dir, run_id, 143))
    try:
        _claim(state_dir, run_id)
    except Exception as exc:  # noqa: BLE001 - the starter shows this text (it reads our first output)
        print(f"crossnet supervisor: {exc}", file=sys.stderr)
        return 2
    try:
        return _supervise(state_dir, run_id, lifeline)
    except BaseException as exc:  # noqa: BLE001 - whatever failed, end the sandbox and remove what we made
        print(f"crossnet supervisor: {exc.__class__.__name__}: {exc}", file=sys.stderr, flush=True)
        _end_sandbox(state_dir, run_id, 1)
        return 1


def _supervise(state_dir: Path, run_id: str, lifeline: int) -> int:
    ALLOWED_UIDS.add(os.stat(state_dir).st_uid)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "crossnet-lab", "/run"], check=True)
    os.makedirs(NETNS_DIR, exist_ok=True)
    subprocess.run(["ip", "link", "set", "dev", "lo", "up"], check=True)
    server_pid = os.fork()
    if server_pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            _serve(state_dir)
        finally:
            os._exit(1)
    threading.Thread(target=_watch_lifeline, args=(lifeline, state_dir, run_id), daemon=True).start()
    while True:  # PID 1: reap every orphan; when the server leaves, end the sandbox
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid == server_pid:
            _end_sandbox(state_dir, run_id, os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
    _end_sandbox(state_dir, run_id, 1)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
