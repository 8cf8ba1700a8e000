"""Who holds a lock, as a process: this one's identity, and whether a holder on this machine is gone.

A deploy killed with ``kill -9`` (or a laptop closed mid-deploy and the process killed) leaves its
lock behind with a lease that only runs out later. When the next deploy runs on the *same* machine,
the lease is not the only sign of life there is: the holder's process can be looked up. If it no
longer runs, the lock is stale at once. Across machines nothing can be looked up and the lease rule
stays. "Same machine" means the same host name, and where Linux says so, the same boot and the same
pid namespace (a container with the host's name does not see the host's processes). A pid that was
reused by another process is told apart by its start time.
"""
from __future__ import annotations

import os

from .. import provenance


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _boot_id() -> str | None:
    return _read("/proc/sys/kernel/random/boot_id")


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _started(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), where there is /proc."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def identity(pid: int | None = None) -> dict:
    """What a lock records so that a later run on this machine can tell whether its holder still runs."""
    pid = os.getpid() if pid is None else pid
    found = {"boot_id": _boot_id(), "pid_namespace": _pid_namespace(), "pid_started": _started(pid)}
    return {k: v for k, v in found.items() if v is not None}


def gone(info: dict) -> str | None:
    """Why the lock's holder is known to be dead: it ran on this machine and its process no longer does.

    None when that cannot be known (another machine, another boot or pid namespace, a maintenance lock,
    no pid) or when the process still runs: then only the lease says whether the lock is stale.
    """
    if not isinstance(info, dict) or info.get("maintenance") or info.get("machine") != provenance.machine():
        return None
    for key, ours in (("boot_id", _boot_id()), ("pid_namespace", _pid_namespace())):
        if info.get(key) != ours:  # recorded and different, or recorded on one side only: cannot tell
            return None
    pid = info.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"its process {pid} on this machine is no longer running"
    except OSError:
        return None  # it exists (another user's): alive as far as we can tell
    started = info.get("pid_started")
    if started is not None and _started(pid) not in (None, started):
        return f"its process {pid} on this machine is no longer running (the pid now belongs to another process)"
    return None
