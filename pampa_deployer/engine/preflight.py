"""What must be done before any host runs a command, done while the hosts connect.

Taking the stage lock and registering with the access point take round trips of their own;
doing them in a thread while every host connects saves that time. Hosts ``wait`` on the
preflight before their first command; if it fails, no host runs anything and the run is
refused with its error (``settle`` raises it once the hosts have stopped).
"""
from __future__ import annotations

import threading
from typing import Callable


class Preflight:
    """A one-shot piece of work in its own thread, that hosts wait on and whose error refuses the run."""

    def __init__(self, work: Callable[[], None] | None = None):
        self._work = work
        self._done = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> "Preflight":
        threading.Thread(target=self._run, name="pampa-preflight", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            if self._work is not None:
                self._work()
        except BaseException as e:  # noqa: BLE001 - raised in the run's own thread by settle()
            self.error = e
        finally:
            self._done.set()

    def wait(self, stopping: Callable[[], bool], tick: float = 0.2) -> bool:
        """Until the preflight is done (True when it succeeded) or the run is stopping (False)."""
        while not self._done.wait(tick):
            if stopping():
                return False
        return self.error is None

    def settle(self, timeout: float | None = None) -> None:
        """Wait for the preflight to end (at most ``timeout`` seconds) and raise its error, if it failed."""
        self._done.wait(timeout)
        if self.error is not None:
            raise self.error
