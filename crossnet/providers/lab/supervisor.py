"""The lab sandbox's supervisor: PID 1 of a private pid, mount and network namespace.

Started by `sandbox.start_sandbox` as
    unshare --mount --pid --net --fork --kill-child=SIGTERM --propagation private \
        python -m crossnet.providers.lab.supervisor STATE_DIR
it mounts a private tmpfs on /run (so `ip netns add` never touches the host's /run/netns),
forks a control server that runs commands inside lab namespaces on request, and reaps orphans.

Crash safety: whoever starts the sandbox gives `unshare` PR_SET_PDEATHSIG=SIGKILL; when
`unshare` dies, `--kill-child=SIGTERM` reaches this PID 1, which removes the state directory
and exits; the kernel then kills every process of the pid namespace and, with the mount
namespace gone, frees every network namespace. Nothing needs the host to clean up.

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

import json
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

OWNER_MARK = "owner.json"
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
                self.proc = subprocess.Popen([sys.executable, "-m", "crossnet.providers.lab.zygote"], text=True,
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
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
            done = subprocess.run(argv, input=request.get("input"), capture_output=True, text=True,
                                  timeout=float(request.get("timeout") or 30.0))
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


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
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
    os.rename(temporary, final)  # readiness: the socket appears under its name only when it serves
    server.serve_forever()


def _remove_state(state_dir: Path) -> None:
    """Remove the state directory if it is still ours (the owner mark names this sandbox)."""
    try:
        shutil.rmtree(state_dir, ignore_errors=True)
        parent = state_dir.parent
        if parent.name == ".crossnet" and not any(parent.iterdir()):
            parent.rmdir()
    except OSError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m crossnet.providers.lab.supervisor STATE_DIR (started by crossnet)", file=sys.stderr)
        return 2
    state_dir = Path(argv[0]).resolve()
    # Ctrl-C belongs to the harness, which tears down in order; our death signal is SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_sigterm(_signum: int, _frame: object) -> None:
        _remove_state(state_dir)
        os._exit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
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
    while True:  # PID 1: reap every orphan; leave when the server leaves
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        if pid == server_pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
