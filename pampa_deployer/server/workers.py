"""The threads that do the access point's work off the event loop, taking turns between client addresses.

Every request's database work (and the parsing and encoding around it) runs here, so the event loop
only moves bytes, parks long polls and keeps time. A plain thread pool serves jobs in arrival order: one
client with 20 connections queues 20 jobs ahead of everyone else's next one. Here each source address
has its own queue and the workers take one job from each address in turn, so a client flooding from one
address waits behind itself: another client's job waits at most one job per busy address.
"""
from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from typing import Callable

#: The address whose turn a job takes: set per request (a task copies it to what it starts).
source: contextvars.ContextVar[str] = contextvars.ContextVar("source", default="")


class Workers:
    def __init__(self, count: int, name: str = "pampa-ap-db"):
        self._queues: dict[str, deque] = {}
        self._turns: deque[str] = deque()   # addresses with work waiting, in the order they get their turn
        self._cond = threading.Condition()
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def run(self, fn: Callable, *args) -> asyncio.Future:
        """``fn(*args)`` in a worker, in the caller's address's turn; a future of the loop that called."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        who = source.get()
        with self._cond:
            if self._stopped:
                raise RuntimeError("the access point is stopping")
            queue = self._queues.get(who)
            if queue is None:
                queue = self._queues[who] = deque()
                self._turns.append(who)
            queue.append((fn, args, future, loop))
            self._cond.notify()
        return future

    def _next(self):
        with self._cond:
            while not self._turns and not self._stopped:
                self._cond.wait()
            if not self._turns:
                return None
            who = self._turns.popleft()
            queue = self._queues[who]
            job = queue.popleft()
            if queue:
                self._turns.append(who)  # its next job waits for every other address's turn
            else:
                del self._queues[who]
            return job

    def _work(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            fn, args, future, loop = job
            if future.cancelled():
                continue
            try:
                result, error = fn(*args), None
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting request
                result, error = None, e
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop closed: nobody waits any more
                pass

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the jobs taken, drop the rest; the threads end."""
        with self._cond:
            self._stopped = True
            self._queues.clear()
            self._turns.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)


def _settle(future: asyncio.Future, result, error) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
