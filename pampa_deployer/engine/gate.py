"""The kepler gate: a barrier that opens when every kepler host arrived, and closes for good if one fails."""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

WAITING, OPEN, CLOSED = "waiting", "open", "closed"


class Gate:
    """Gated hosts ``wait()``; kepler hosts ``arrive()`` on success or ``fail()`` otherwise."""

    def __init__(self, openers: Iterable[str], on_change: Callable[[str, str], None] | None = None):
        self._pending = set(openers)
        self._cond = threading.Condition()
        self._on_change = on_change
        self.reason = ""
        self.state = OPEN if not self._pending else WAITING
        self.opened_at: float | None = None  # when the last kepler arrived (None: never opened by one)

    def _set(self, state: str, reason: str) -> None:
        self.state, self.reason = state, reason
        if state == OPEN:
            self.opened_at = time.time()
        self._cond.notify_all()
        if self._on_change:
            self._on_change(state, reason)

    def arrive(self, host: str) -> None:
        with self._cond:
            self._pending.discard(host)
            if self.state == WAITING and not self._pending:
                self._set(OPEN, "every kepler host finished")

    def fail(self, host: str, why: str) -> None:
        with self._cond:
            if self.state == WAITING:
                self._set(CLOSED, f"{host} {why}")

    def wait(self, should_stop: Callable[[], bool] = lambda: False,
             on_wait: Callable[[], None] | None = None) -> bool:
        """Block until the gate opens (True) or closes (False). Polls ``should_stop`` for interrupts.

        ``on_wait`` runs only if the caller really has to wait, under the gate's lock: so "host
        waiting" is always told before "gate open", never after it.
        """
        with self._cond:
            if self.state == WAITING and on_wait is not None:
                on_wait()
            while self.state == WAITING:
                if should_stop():
                    return False
                self._cond.wait(0.2)
            return self.state == OPEN
