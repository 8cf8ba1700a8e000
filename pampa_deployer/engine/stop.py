"""Interruption: the first signal stops new steps; the second (or the grace period) aborts running commands."""
from __future__ import annotations

import signal
import threading
from typing import Callable


class StopSignal:
    """Shared by every host thread. ``soft`` = start nothing new; ``hard`` = abort what runs."""

    def __init__(self) -> None:
        self.soft = threading.Event()
        self.hard = threading.Event()
        self.signum: int | None = None
        self.aborted = threading.Event()  # set once every on_hard callback has returned
        self.halted: str | None = None  # why no new host may start (e.g. the lock was lost); steps go on
        self._on_hard: list[Callable[[], None]] = []
        self._on_soft: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def on_hard(self, callback: Callable[[], None]) -> None:
        self._on_hard.append(callback)

    def on_soft(self, callback: Callable[[], None]) -> None:
        """Called (on a thread of its own) at the first signal: e.g. hosts told to start no step sent ahead."""
        self._on_soft.append(callback)

    def request(self, signum: int) -> str:
        """Record a signal; returns "soft" for the first, "hard" after that."""
        with self._lock:
            first = not self.soft.is_set()
            if first:
                self.signum = signum
                self.soft.set()
        if not first:
            self.abort()
            return "hard"
        if self._on_soft:  # outside the lock (a second signal may come meanwhile); on a thread: never block
            threading.Thread(target=lambda: [c() for c in self._on_soft], name="pampa-hold", daemon=True).start()
        return "soft"

    def abort(self) -> None:
        if self.hard.is_set():
            return
        self.hard.set()

        def run_callbacks() -> None:
            try:
                for callback in self._on_hard:
                    callback()
            finally:
                self.aborted.set()

        # Often called from a signal handler in the main thread: never take locks there.
        threading.Thread(target=run_callbacks, name="pampa-abort", daemon=True).start()

    def halt(self, reason: str) -> None:
        """Start no new host (hosts already running finish their steps); not an interruption."""
        if self.halted is None:
            self.halted = reason

    @property
    def stopping(self) -> bool:
        return self.soft.is_set()


def install(stop: StopSignal, grace: float, notify: Callable[[str], None]) -> Callable[[], None]:
    """Route SIGINT/SIGTERM to ``stop``; returns a function that restores the old handlers."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    timer: list[threading.Timer] = []

    def say(message: str) -> None:
        # The handler runs in the main thread between two of its bytecodes, maybe while that thread holds
        # the event bus's lock (delivering an event): telling from here would wait for itself forever.
        threading.Thread(target=notify, args=(message,), name="pampa-signal-notice", daemon=True).start()

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if stop.request(signum) == "soft":
            say(f"{name}: starting no new steps; running commands get {grace:g}s to finish "
                f"(send it again to stop at once)")
            t = threading.Timer(grace, stop.abort)
            t.daemon = True
            t.start()
            timer.append(t)
        else:
            say(f"{name} again: aborting running commands now")

    for s in previous:
        signal.signal(s, handler)

    def restore() -> None:
        for t in timer:
            t.cancel()
        for s, h in previous.items():
            signal.signal(s, h)

    return restore
