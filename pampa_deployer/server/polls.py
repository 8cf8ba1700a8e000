"""Long polls parked on the event loop: agents waiting for a request, followers waiting for a request's events.

A parked poll costs a future, never a thread. What a wake-up costs is bounded by what changed:

- **Agents** (``GET /nodes/NAME/next``) park per node. A request appearing or moving wakes only the nodes
  that may now start it (keplers first: the gate waits on them), not every agent; a replaced token wakes
  its node's polls, which check their credential again and end with 401.
- **Followers** (``GET /deploys/ID/events?after=SEQ``) park per request. Their answer is the page after
  their cursor (``Store.page``: the new events and the runs they changed), computed once per change and
  shared by every follower at the same cursor; a long poll that finds something waits ``LINGER`` seconds
  from its arrival before answering, so a request reporting 100 times a second costs each follower a
  few answers a second, not a hundred.
- A waiter is registered before the database is asked, so a change landing in between is never missed.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from typing import Awaitable, Callable

from .change import Change
from .checks import ApiError

#: Seconds an events long poll that found something waits (from its arrival) to gather more.
LINGER = 0.25
#: Seconds a shared page is reused while nothing is known to have changed (a lost notification's bound).
PAGE_TTL = 2.0
MAX_PAGES = 512
#: Agents woken at once by a request appearing or opening its gate, and the pause between such batches: the
#: keplers (first in line) get their answers and start before thousands of others queue up behind them.
WAKE_BATCH, WAKE_PAUSE = 250, 0.005


class Polls:
    def __init__(self, store, db: Callable[..., Awaitable], quick: Callable[..., Awaitable] | None = None):
        self.store, self.db, self.quick = store, db, quick or db
        self.agents: dict[tuple[str, str], set[asyncio.Future]] = {}
        self.followers: dict[int, set[asyncio.Future]] = {}
        self.versions: dict[int, int] = {}
        self.epoch = 0
        self.pages: OrderedDict[tuple[int, int], tuple[tuple, float, asyncio.Task]] = OrderedDict()
        self.stages: dict[int, str] = {}  # deploy id -> its stage (it never changes): scope checks from memory
        self._background: set[asyncio.Task] = set()

    # -- wake-ups (in the loop's thread) -------------------------------------------------------------------
    def changed(self, change: Change) -> None:
        if change.everything:
            self.epoch += 1
            self.pages.clear()
            for key in list(self.agents):
                self._wake(self.agents, key)
            for deploy_id in list(self.followers):
                self._wake(self.followers, deploy_id)
            return
        for deploy_id in change.deploys:
            self.versions[deploy_id] = self.versions.get(deploy_id, 0) + 1
            self._wake(self.followers, deploy_id)
        for key in change.revoked:
            self._wake(self.agents, key)
        if change.moved and change.deploys and self.agents:
            task = asyncio.get_running_loop().create_task(self._wake_nodes(sorted(change.deploys, reverse=True)))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _wake_nodes(self, deploy_ids: list[int]) -> None:
        for deploy_id in deploy_ids:
            try:
                keys = await self.db(self.store.woken_by, deploy_id)
            except Exception:  # noqa: BLE001 - the database is away: every poll re-checks when it times out
                continue
            parked = [key for key in keys if key in self.agents]
            for start in range(0, len(parked), WAKE_BATCH):  # keplers first; the herd a batch at a time
                for key in parked[start:start + WAKE_BATCH]:
                    self._wake(self.agents, key)
                await asyncio.sleep(WAKE_PAUSE)

    @staticmethod
    def _wake(table: dict, key) -> None:
        for waiter in table.pop(key, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _park(self, table: dict, key) -> asyncio.Future:
        waiter = asyncio.get_running_loop().create_future()
        table.setdefault(key, set()).add(waiter)
        return waiter

    @staticmethod
    def _leave(table: dict, key, waiter: asyncio.Future) -> None:
        waiters = table.get(key)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del table[key]

    async def _sleep_on(self, waiter: asyncio.Future, seconds: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(waiter), seconds)
        except asyncio.TimeoutError:
            pass

    # -- agents ---------------------------------------------------------------------------------------------
    async def next(self, stage: str, node: str, wait: float, still_valid: Callable[[], bool]) -> dict | None:
        """The newest request this node should start, waiting up to ``wait`` seconds for one.

        ``still_valid`` (run in the database's thread) re-checks the caller's credential after each wake-up:
        a token replaced while its poll was parked gets 401, never the next request.
        """
        key = (stage, node)
        deadline = time.monotonic() + wait
        woken = False
        while True:
            waiter = self._park(self.agents, key)
            try:
                found = await self.quick(self._next_check, stage, node, still_valid if woken else None)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                await self._sleep_on(waiter, remaining)
                woken = True
            finally:
                self._leave(self.agents, key, waiter)

    def _next_check(self, stage: str, node: str, still_valid) -> dict | None:
        if still_valid is not None and not still_valid():
            raise ApiError(401, "this node token was replaced or revoked while its poll waited")
        return self.store.next_for(stage, node)

    # -- followers ------------------------------------------------------------------------------------------
    async def events(self, deploy_id: int, after: int, stage: str | None, wait: float) -> bytes:
        """The page after ``after`` once it has something (or the request ended, or ``wait`` ran out), as the
        answer's JSON: encoded once per page, in the database thread, for every follower it goes to."""
        await self.visible(deploy_id, stage)
        arrived = time.monotonic()
        deadline = arrived + wait
        while True:
            waiter = self._park(self.followers, deploy_id)
            try:
                page = await self.page(deploy_id, after)
                remaining = deadline - time.monotonic()
                if page["events"] or page["ended"] or remaining <= 0:
                    break
                await self._sleep_on(waiter, remaining)
            finally:
                self._leave(self.followers, deploy_id, waiter)
        linger = min(arrived + LINGER, deadline) - time.monotonic()
        if page["events"] and not page["ended"] and not page["more"] and linger > 0:
            await asyncio.sleep(linger)  # gather what else arrives: one answer instead of many
            page = await self.page(deploy_id, after)
        return page["answer"]

    async def visible(self, deploy_id: int, stage: str | None) -> None:
        """404 unless the request exists (and is of the caller's stage); from memory after the first time."""
        known = self.stages.get(deploy_id)
        if known is None:
            deploy = await self.quick(self.store.get_row, deploy_id)
            known = self.stages[deploy_id] = deploy["stage"]
            if len(self.stages) > 100_000:
                self.stages.pop(next(iter(self.stages)))
        if stage is not None and known != stage:
            raise ApiError(404, f"no deploy {deploy_id}")

    async def view(self, deploy_id: int, stage: str | None) -> bytes:
        """``GET /deploys/ID``'s answer, built once per change of the request (its newest event, read from the
        index: right across processes too) and at most every PAGE_TTL seconds (stalls and heartbeats show then),
        so asking again and again for a request that did not change costs two small reads, not its runs."""
        await self.visible(deploy_id, stage)
        mark = await self.quick(self.store.last_event, deploy_id)
        return await self._shared(("view", deploy_id), (mark,), _encoded, self.store.get, deploy_id)

    async def page(self, deploy_id: int, after: int) -> dict:
        """``Store.page``, asked once per change for all followers at the same cursor."""
        version = (self.epoch, self.versions.get(deploy_id, 0))
        return await self._shared((deploy_id, after), version, _answered, self.store.page, deploy_id, after)

    async def _shared(self, key, version, *job):
        """``job`` run in a worker once per ``version`` (and at most every PAGE_TTL seconds) for every caller
        asking with this ``key`` meanwhile."""
        hit = self.pages.get(key)
        if hit is not None and hit[0] == version and hit[1] > time.monotonic():
            self.pages.move_to_end(key)
            return hit[2].result() if hit[2].done() else await asyncio.shield(hit[2])
        task = asyncio.get_running_loop().create_task(self.db(*job))  # tied to no one caller's connection
        self.pages[key] = (version, time.monotonic() + PAGE_TTL, task)
        while len(self.pages) > MAX_PAGES:
            self.pages.popitem(last=False)
        try:
            return await asyncio.shield(task)
        except Exception:
            if self.pages.get(key, (None, None, None))[2] is task:
                del self.pages[key]
            raise


def _answered(page, deploy_id: int, after: int) -> dict:
    """``page(deploy_id, after)`` with ``answer``: the bytes a follower gets (``events``, ``last``, ``deploy``,
    ``ended``)."""
    found = page(deploy_id, after)
    answer = {k: found[k] for k in ("events", "last", "deploy", "ended")}
    return {**found, "answer": json.dumps(answer).encode()}


def _encoded(fn, *args) -> bytes:
    return json.dumps(fn(*args)).encode()
