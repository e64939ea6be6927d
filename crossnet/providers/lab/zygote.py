"""A fork server for the lab's Python daemons (agents, cluster DNS).

Starting 14 interpreters that each import asyncio and dnspython costs about a second of CPU on
a 2-core machine. The zygote imports them once, then for each request forks a child that enters
the requested network namespace (setns) and runs the daemon's `main`. It is single-threaded, so
forking is safe. It runs inside the lab sandbox: its children die with the sandbox.

Protocol on stdin/stdout, one JSON line each way:
    {"netns": NAME, "program": "agent"|"dns", "argv": [...], "log": PATH} -> {"pid": int}
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable

import crossnet.agent.__main__ as agent_main
import crossnet.providers.lab.dns as dns_main
from crossnet.agent.lookup import preload

preload()  # the agents' DNS probes: imported once here, shared by every forked child

CLONE_NEWNET = 0x40000000
PROGRAMS: dict[str, Callable[[list[str]], int]] = {"agent": agent_main.main, "dns": dns_main.main}


def _enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def _child(request: dict[str, object]) -> None:
    status = 1
    try:
        log = os.open(str(request["log"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(devnull)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _enter_netns(str(request["netns"]))
        program = PROGRAMS[str(request["program"])]
        status = program([str(a) for a in request["argv"]])  # type: ignore[attr-defined]
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child's log gets the traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def main() -> int:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
