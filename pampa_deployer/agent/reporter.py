"""Streams one run's progress to the access point from a background thread.

The run never waits on the network: events go into a bounded queue, a sender posts them
in batches and sends a heartbeat when there is nothing to say, so the server can tell a
long step from a dead agent. While the access point is unreachable the sender backs off
and keeps the queue, dropping the oldest output lines first (step events are kept). An answer
that says the request was cancelled is handed to ``on_cancel`` (the run stops at its next step).
"""
from __future__ import annotations

import threading
from collections import deque

from ..accesspoint import wire
from ..accesspoint.client import cancelled
from ..engine import events as ev
from ..errors import AccessPointError
from .backoff import Backoff

HEARTBEAT = 10.0      # seconds between heartbeats while nothing else is sent
BATCH = 200           # events per POST
MAX_QUEUED = 2000     # events kept while the access point is away
OUTPUT_TAIL = 40      # output lines kept per batch window: a tail, not the whole log


class Reporter:
    """A bus subscriber: ``__call__`` queues, the sender thread posts; ``close`` flushes (bounded)."""

    def __init__(self, client, deploy_id: int, node: str, on_step=None, heartbeat: float = HEARTBEAT,
                 on_cancel=None):
        self.client, self.deploy_id, self.node = client, deploy_id, node
        self.on_step, self.on_cancel = on_step, on_cancel
        self.heartbeat = heartbeat
        self._queue: deque[wire.Progress] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._gone = False  # the server no longer takes progress for this run (409)
        self.dropped = 0
        self._thread = threading.Thread(target=self._send_loop, name="pampa-reporter", daemon=True)
        self._thread.start()

    # -- the bus side ------------------------------------------------------------------------------
    def __call__(self, event: ev.Event) -> None:
        item = progress_of(event)
        if item is None:
            return
        if item.kind == wire.STEP_STARTED and self.on_step is not None:
            self.on_step(item.step)
        with self._cond:
            self._queue.append(item)
            self._trim()
            self._cond.notify()

    def _trim(self) -> None:
        outputs = sum(1 for e in self._queue if e.kind == wire.OUTPUT)
        while outputs > OUTPUT_TAIL or len(self._queue) > MAX_QUEUED:
            victim = next((e for e in self._queue if e.kind == wire.OUTPUT), None)
            if victim is None:
                victim = self._queue[0]
            self._queue.remove(victim)
            self.dropped += 1
            outputs -= victim.kind == wire.OUTPUT

    # -- the network side --------------------------------------------------------------------------
    def _send_loop(self) -> None:
        backoff = Backoff(first=0.5, cap=10.0)
        while True:
            with self._cond:
                if not self._queue and not self._closed:
                    self._cond.wait(self.heartbeat)
                if self._closed and (not self._queue or self._gone):
                    return
                batch = list(self._queue)[:BATCH]
            try:
                if not self._gone:
                    self._told(self.client.progress(self.deploy_id, self.node, [wire.encode(p) for p in batch]))
                backoff.reset()
            except AccessPointError as e:
                if e.unreachable:
                    with self._cond:
                        self._cond.wait(backoff.next_delay())
                    continue
                self._told(getattr(e, "answer", None))
                if e.status == 409:
                    self._gone = True
                # 4xx: this batch will never be taken; drop it rather than loop on it
            with self._cond:
                for _ in range(len(batch)):
                    if self._queue:
                        self._queue.popleft()

    def _told(self, answer) -> None:
        if cancelled(answer) and self.on_cancel is not None:
            self.on_cancel()

    def close(self, timeout: float = 30.0) -> bool:
        """Flush what is queued (at most ``timeout`` seconds); True if everything was delivered."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive() and not self._queue


def progress_of(e: ev.Event) -> wire.Progress | None:
    """An engine event -> the progress event the access point is told, or None if it is not forwarded."""
    if isinstance(e, ev.StepStarted):
        return wire.Progress(wire.STEP_STARTED, e.step, e.at)
    if isinstance(e, ev.CommandStarted):
        return wire.Progress(wire.COMMAND, e.step, e.at, display=e.display)
    if isinstance(e, ev.Output):
        return wire.Progress(wire.OUTPUT, e.step, e.at, line=e.line, stream=e.stream)
    if isinstance(e, ev.StepFinished):
        return wire.Progress(wire.STEP_FINISHED, e.step, e.at, ok=e.ok, exit_code=e.exit_code, message=e.message,
                             stderr_tail=e.stderr_tail, started=e.started, skipped=e.skipped or "")
    return None
