"""Concurrency as its own object: a bounded pool, rolling batches, and max-fail.

Hosts are started in plan order (keplers, then ungated, then gated), so a kepler
always gets a worker before a gated host that will wait on it.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from typing import Callable, Sequence, TypeVar

from ..errors import UsageError

T = TypeVar("T")
R = TypeVar("R")


#: What a count of hosts may be, in the words every message about one uses.
COUNT_WORDS = "a positive count or a percentage like 25%"


def count_of(value: int | str, total: int) -> int:
    """``5`` or ``"25%"`` of ``total`` (at least 1) -> a count; ValueError for anything else."""
    text = str(value).strip()
    if text.endswith("%"):
        pct = float(text[:-1])
        if not 0 < pct <= 100:
            raise ValueError(text)
        return max(1, math.ceil(total * pct / 100))
    count = int(text)
    if count < 1:
        raise ValueError(text)
    return count


def parse_count(value: int | str | None, total: int, what: str) -> int | None:
    """``count_of`` for the request's setting ``what``; None stays None."""
    if value is None:
        return None
    try:
        return count_of(value, total)
    except ValueError:
        raise UsageError(f"{what}: expected {COUNT_WORDS}, got {value!r}") from None


class Scheduler:
    """Runs ``work`` for every item with at most ``parallel`` at once, in batches if asked."""

    def __init__(self, parallel: int, batch: int | None = None, batch_wait: float = 0.0,
                 max_fail: int | None = None, stopping: Callable[[], bool] = lambda: False,
                 halted: Callable[[], str | None] = lambda: None):
        self.parallel = max(1, parallel)
        self.batch = batch
        self.batch_wait = batch_wait
        self.max_fail = max_fail
        self.stopping = stopping
        self.halted = halted
        self.failures = 0
        self.halted_reason: str | None = None
        self._lock = threading.Lock()

    def record(self, failed: bool) -> None:
        """Count a finished item; reaching max-fail stops starting new ones."""
        if not failed:
            return
        with self._lock:
            self.failures += 1
            if self.max_fail is not None and self.failures >= self.max_fail and not self.halted_reason:
                failed = "1 failed host" if self.failures == 1 else f"{self.failures} failed hosts"
                self.halted_reason = f"max-fail reached ({failed}): no new hosts started"

    def should_start(self) -> str | None:
        """None when an item may start, else why not."""
        if self.stopping():
            return "interrupted before it started"
        halted = self.halted()
        if halted:
            return f"not started: {halted}"
        return self.halted_reason

    def run(self, items: Sequence[T], work: Callable[[T], R],
            abandon: Callable[[], bool] = lambda: False,
            on_batch: Callable[[int, int, list[T]], None] | None = None) -> list[R | None]:
        """``work(item)`` for every item; an item whose work has not returned when ``abandon()`` turns
        true is left to its (daemon) thread and its result is None. With batches, ``on_batch(number,
        count, items)`` is told as each one starts.

        Plain daemon threads, not a ThreadPoolExecutor: the interpreter joins an executor's threads
        at exit, so one thread stuck on a dead host would keep pampa from exiting.
        """
        results: list[R | None] = [None] * len(items)
        size = self.batch or len(items) or 1
        batches = [list(range(i, min(i + size, len(items)))) for i in range(0, len(items), size)]
        todo: queue.Queue = queue.Queue()
        done: dict[int, threading.Event] = {i: threading.Event() for i in range(len(items))}

        def worker() -> None:
            while True:
                i = todo.get()
                if i is None:
                    return
                try:
                    results[i] = work(items[i])
                finally:
                    done[i].set()

        workers = [threading.Thread(target=worker, name=f"pampa-host-{n}", daemon=True)
                   for n in range(min(self.parallel, max(1, size)))]
        for thread in workers:
            thread.start()
        try:
            for number, batch in enumerate(batches):
                if number and self.batch_wait and not self.halted_reason:
                    self._sleep(self.batch_wait)
                if on_batch is not None and len(batches) > 1:
                    on_batch(number + 1, len(batches), [items[i] for i in batch])
                for i in batch:
                    todo.put(i)
                for i in batch:
                    while not done[i].wait(0.2):
                        if abandon():
                            return results
        finally:
            for _ in workers:
                todo.put(None)
        return results

    def _sleep(self, seconds: float) -> None:
        waited = 0.0
        while waited < seconds and not self.stopping():
            time.sleep(min(0.2, seconds - waited))
            waited += 0.2
