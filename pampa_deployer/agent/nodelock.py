"""One agent per node: an exclusive ``flock`` held for the agent's whole life.

The kernel drops the lock when the process dies, however it dies, so a crashed agent
never leaves a stale lock behind, and two agents can never deploy one node at once.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import LockHeld


class NodeLock:
    def __init__(self, path: Path | str, node: str):
        self.path = Path(path)
        self.node = node
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LockHeld(f"another pampa agent already runs for node {self.node} (pid {holder}, lock "
                           f"{self.path}); stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "NodeLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
