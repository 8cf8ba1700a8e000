"""Is the host still there? Keepalives and a dead-peer rule, as OpenSSH's ServerAliveInterval/CountMax.

Every ``interval`` seconds a ``keepalive@openssh.com`` request asking for a reply goes
to the host; sshd answers it (with a refusal, which is enough) whatever its commands
are doing, so a long migration on a live host is never mistaken for a dead one. A host
that has answered nothing for ``interval * count_max`` seconds is *unresponsive*: its
transport is closed, which wakes every call blocked on it (a channel read, a channel
open, an SFTP write), and its neighbours carry on.

One watchdog thread checks every heartbeat of the process; each connection has one
small thread that sends the pings (paramiko's ``global_request`` blocks until the reply).
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class HostUnresponsive(Exception):
    """The host answered nothing (not even keepalives) for the dead-peer time."""


class ConnectionLost(Exception):
    """The connection closed under a command: the host crashed, rebooted or the network dropped."""


class Heartbeat:
    """Keepalives for one paramiko transport, and the verdict: alive or unresponsive."""

    def __init__(self, transport, interval: float = 5.0, count_max: int = 3,
                 on_dead: Callable[[], None] | None = None):
        self.transport = transport
        self.interval = max(0.2, float(interval))
        self.dead_after = self.interval * max(1, int(count_max))
        self.on_dead = on_dead
        self.heard = time.monotonic()
        self.dead = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, name: str = "") -> "Heartbeat":
        self._thread = threading.Thread(target=self._ping, name=f"pampa-keepalive-{name}", daemon=True)
        self._thread.start()
        _WATCHDOG.add(self)
        return self

    def _ping(self) -> None:
        while not self._stop.is_set() and self.transport.is_active():
            try:
                self.transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:  # noqa: BLE001 - a closed transport ends the loop below
                pass
            if not self.transport.is_active():
                break
            self.heard = time.monotonic()
            self._stop.wait(self.interval)

    def silent_for(self) -> float:
        return time.monotonic() - self.heard

    def check(self) -> bool:
        """Apply the dead-peer rule now; True when the host has just been declared unresponsive."""
        if self.dead or self._stop.is_set() or self.silent_for() <= self.dead_after:
            return False
        self.dead = True
        self.stop()
        if self.on_dead is not None:
            try:
                self.on_dead()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        return True

    def stop(self) -> None:
        self._stop.set()
        _WATCHDOG.remove(self)


class _Watchdog:
    """One thread for the whole process that applies the dead-peer rule to every heartbeat."""

    def __init__(self, tick: float = 0.5):
        self.tick = tick
        self._beats: set[Heartbeat] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, beat: Heartbeat) -> None:
        with self._lock:
            self._beats.add(beat)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="pampa-watchdog", daemon=True)
                self._thread.start()

    def remove(self, beat: Heartbeat) -> None:
        with self._lock:
            self._beats.discard(beat)

    def _loop(self) -> None:
        while True:
            time.sleep(self.tick)
            with self._lock:
                beats = list(self._beats)
            for beat in beats:
                beat.check()


_WATCHDOG = _Watchdog()
