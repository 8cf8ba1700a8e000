"""Two reasons a run stops: the agent is stopping (SIGTERM, Ctrl-C), or the run's request was cancelled.

The engine reads one ``StopSignal`` per run. ``AgentStop`` is the agent's (the signal handlers set
it) and hands each run a stop of its own (``for_run``) that follows it; cancelling a request stops
only that run's (``cancel``): the running step gets the grace period, no new step starts, and the
agent goes on polling. No lock is taken here: signal handlers call into this in the main thread.
"""
from __future__ import annotations

import threading

from ..engine.stop import StopSignal

#: ``signum`` of a run stopped because its request was cancelled: no signal at all.
CANCELLED = 0


class AgentStop(StopSignal):
    """The agent's stop; the run in progress (``for_run``) stops with it."""

    def __init__(self) -> None:
        super().__init__()
        self._run: StopSignal | None = None
        self._timer: threading.Timer | None = None
        self.cancelled_by: str | None = None  # "cancelled by WHO" once the run's request was cancelled

    def for_run(self) -> StopSignal:
        """A stop for the next run: set when this one is (a signal), or by ``cancel``."""
        run = StopSignal()
        self._run, self.cancelled_by = run, None
        if self.soft.is_set() and not run.soft.is_set():
            run.request(self.signum or CANCELLED)
        if self.hard.is_set():
            run.abort()
        return run

    def run_ended(self) -> None:
        self._run = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def request(self, signum: int) -> str:
        said = super().request(signum)
        run = self._run
        if run is not None and not run.soft.is_set():
            run.request(signum)
        return said

    def abort(self) -> None:
        super().abort()
        run = self._run
        if run is not None:
            run.abort()

    def cancelling(self) -> bool:
        """The run in progress was already told its request is cancelled."""
        return self._run is not None and self.cancelled_by is not None

    def cancel(self, why: str, grace: float) -> bool:
        """Stop the run in progress only: no new step; its running command gets ``grace`` seconds.

        Returns False when there is no run, or it is already stopping.
        """
        run = self._run
        if run is None or run.soft.is_set():
            return False
        self.cancelled_by = why
        run.request(CANCELLED)
        self._timer = threading.Timer(grace, run.abort)
        self._timer.daemon = True
        self._timer.start()
        return True
