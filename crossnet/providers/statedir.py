"""A run's state directory: created new and private, marked as crossnet's, removed only when ours.

crossnet runs as root and its teardown removes a directory recursively, so it must never touch a
directory it did not make. `claim_state_dir` creates the directory itself (0700, whatever the
umask) and writes an owner mark naming the run; an existing path is refused and left untouched,
with the command that fits it (`--attach` for a live run, `crossnet down` for a leftover of ours).
`release_state_dir` removes a directory only when its owner mark names the run, and the parent
`.crossnet` only when this run created it and it is empty (rmdir is atomic: a sibling run that
is being created keeps it, and `claim_state_dir` retries if the parent vanished under it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from crossnet.providers.base import RUN_ID, InputError

__all__ = [
    "OWNER_MARK",
    "StateDirError",
    "claim_state_dir",
    "owner_of",
    "process_identity",
    "refuse_existing_state_dir",
    "release_state_dir",
    "same_process",
    "write_private",
]

OWNER_MARK = ".crossnet-owner"


class StateDirError(InputError):
    """The state directory cannot be used; the message says why and what to pass instead."""


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by the owner only (0600 whatever the umask)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    os.replace(temporary, path)


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (field 3 on), or [] when no such process exists."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_identity(pid: int) -> str | None:
    """What tells this process apart from a later one with the same pid: its start time in clock
    ticks since boot (field 22 of /proc/PID/stat). None when no such process runs."""
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else None


def same_process(pid: int, identity: str | None) -> bool:
    """True when `pid` is still the process whose identity was recorded (a reused pid is not)."""
    return identity is not None and process_identity(pid) == identity


def still_running(pid: int, identity: str | None) -> bool:
    """True while the recorded process runs; a zombie (exited, not yet reaped) counts as gone."""
    fields = _stat_fields(pid)
    return identity is not None and len(fields) > 19 and fields[19] == identity and fields[0] != "Z"


def owner_of(state_dir: Path) -> dict[str, Any] | None:
    """The owner mark of a state directory, or None when it has none (not crossnet's)."""
    try:
        data = json.loads((state_dir / OWNER_MARK).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
        return None
    return data


def _refusal(state_dir: Path) -> str:
    owner = owner_of(state_dir)
    if owner is None:
        return (
            f"the state directory {state_dir} already exists and was not made by crossnet; crossnet "
            "removes its state directory at the end, so it only uses a new one\n"
            "    fix: pass a --state-dir that does not exist yet (or leave it out for .crossnet/<run-id>)"
        )
    state = state_dir / "state.json"
    return (
        f"the state directory {state_dir} belongs to crossnet run {owner['run_id']}, which may still be "
        f"running ({state if state.exists() else 'no state file'})\n"
        f"    fix: to probe a running lab use `pytest suites/ --attach {state_dir}`; to end it or remove "
        f"what is left use `crossnet down --state-dir {state_dir}`; or pass a new --state-dir"
    )


def refuse_existing_state_dir(state_dir: Path) -> None:
    """Raise StateDirError (with the command that fits) when `state_dir` exists in any form."""
    if state_dir.exists() or state_dir.is_symlink():
        raise StateDirError(_refusal(state_dir))


def claim_state_dir(state_dir: Path, run_id: str) -> None:
    """Create `state_dir` new (0700) with an owner mark for `run_id`; refuse any existing path."""
    if not RUN_ID.match(run_id):
        raise StateDirError(f"run id {run_id[:80]!r} is not [A-Za-z0-9._-] (at most 63 characters)")
    refuse_existing_state_dir(state_dir)
    parent = state_dir.parent
    made_parent = False
    for _ in range(20):  # a sibling run may remove an empty parent between our two mkdirs: retry
        if not parent.is_dir():
            try:
                os.makedirs(parent, mode=0o700)
                made_parent = True
            except FileExistsError:
                pass
            except OSError as exc:
                raise StateDirError(
                    f"cannot create {parent}: {exc.strerror}\n    fix: pass a --state-dir in a "
                    "directory you can write (or run as root)"
                ) from None
        try:
            os.mkdir(state_dir, 0o700)
            break
        except FileExistsError:
            raise StateDirError(_refusal(state_dir)) from None
        except FileNotFoundError:
            time.sleep(0.001)
        except OSError as exc:
            raise StateDirError(
                f"cannot create {state_dir}: {exc.strerror}\n    fix: pass a --state-dir in a "
                "directory you can write (or run as root)"
            ) from None
    else:
        raise StateDirError(f"cannot create {state_dir}: its parent keeps disappearing")
    os.chmod(state_dir, 0o700)  # whatever the umask: sockets in it run commands as root
    write_private(
        state_dir / OWNER_MARK,
        json.dumps({"run_id": run_id, "made_parent": made_parent, "pid": os.getpid(), "uid": os.getuid()}),
    )


def release_state_dir(state_dir: Path, run_id: str) -> bool:
    """Remove `state_dir` if its owner mark names `run_id` (and its parent if this run made it and
    it is empty). Returns False, removing nothing, when the directory is not this run's."""
    owner = owner_of(state_dir)
    if owner is None or owner.get("run_id") != run_id:
        return False
    for _ in range(3):  # a file still being written when the first pass ran is removed by the next
        shutil.rmtree(state_dir, ignore_errors=True)
        if not state_dir.exists():
            break
        time.sleep(0.05)
    if owner.get("made_parent"):
        with contextlib.suppress(OSError):  # not empty (another run) or gone: leave it
            state_dir.parent.rmdir()
    return True
