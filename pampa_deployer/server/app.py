"""The reference access point: the protocol of docs/access-point.md over HTTP, stored in SQLite
(or PostgreSQL, for several processes behind a proxy: docs/pull-mode.md).

Standard library only (asyncio + sqlite3; psycopg for PostgreSQL). The HTTP layer (``connections.py``)
bounds every connection; this module admits callers (before their body is read), routes, scopes and
answers. A request's work (parsing its body, the database, encoding the answer) runs in a few worker
threads that take turns between client addresses (``workers.py``: one for SQLite's one connection, four
for PostgreSQL), so a slow statement, a row lock or a flooding client delays its own requests, never the
event loop that every other client and every parked long poll (``polls.py``) lives on. Credentials are
compared in constant time, never logged, and wrong ones are counted per address (``guard.py``).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import math
import os
import re
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from .change import Change
from .checks import ApiError, text
from .connections import AsyncHTTPServer, give_back_memory
from .database import DatabaseError
from .door import check_text, parse
from .guard import Guard
from .http import HttpError, Limits, Request, Response
from .log import ServerLog
from .nodes import digest
from .polls import Polls
from .store import Quotas, Store
from .workers import Workers, source

#: Ids are 64-bit integers; longer digit strings are answered 404 without being parsed.
MAX_ID_DIGITS = 15
#: The longest a long poll may wait (``wait=`` is capped to this).
MAX_WAIT = 30.0
#: Actions whose work is a few indexed rows: with a small body they may run in the loop (``App.quick``).
LIGHT = frozenset({"start", "progress", "finish_run", "hello", "report", "take", "allow", "finish", "token"})
LIGHT_BODY = 16 * 1024
#: Node tokens whose scope is kept in memory at most (one process): a fleet of 10,000 nodes and more.
MAX_SCOPES = 100_000
_ID = r"(\d+)"
_NAME = r"([^/]+)"

# (method, path, action, who may call it: "admin", "node" (its own name only), "any" (scoped))
ROUTES = [(verb, re.compile(pattern), action, who) for verb, pattern, action, who in [
    ("POST", r"/api/v1/deploys", "create", "admin"),
    ("GET", r"/api/v1/deploys", "list", "any"),
    ("GET", rf"/api/v1/deploys/{_ID}", "get", "any"),
    ("GET", rf"/api/v1/deploys/{_ID}/events", "events", "any"),
    ("POST", rf"/api/v1/deploys/{_ID}/take", "take", "admin"),
    ("POST", rf"/api/v1/deploys/{_ID}/allow", "allow", "admin"),
    ("POST", rf"/api/v1/deploys/{_ID}/finish", "finish", "admin"),
    ("POST", rf"/api/v1/deploys/{_ID}/cancel", "cancel", "admin"),
    ("POST", rf"/api/v1/deploys/{_ID}/nodes/{_NAME}/start", "start", "node"),
    ("POST", rf"/api/v1/deploys/{_ID}/nodes/{_NAME}/progress", "progress", "node"),
    ("POST", rf"/api/v1/deploys/{_ID}/nodes/{_NAME}/finish", "finish_run", "node"),
    ("GET", rf"/api/v1/nodes/{_NAME}/next", "next", "node"),
    ("POST", rf"/api/v1/nodes/{_NAME}/hello", "hello", "node"),
    ("POST", rf"/api/v1/nodes/{_NAME}/version", "report", "node-or-admin"),
    ("GET", r"/api/v1/nodes", "nodes", "admin"),
    ("POST", r"/api/v1/tokens", "token", "admin"),
]]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin key (the developer, `pampa deploy`), or one node of one stage."""

    admin: bool
    stage: str | None = None
    node: str | None = None
    roles: tuple[str, ...] = ()
    token: str | None = None

    @property
    def scope(self) -> dict | None:
        return None if self.admin else {"stage": self.stage, "node": self.node, "roles": list(self.roles)}


def parse_id(value: str) -> int:
    """A path id: digits only (the route says so), and short enough to be one of ours."""
    if len(value) > MAX_ID_DIGITS:
        raise ApiError(404, f"no deploy with an id of {len(value)} digits")
    return int(value)


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so timing says nothing about how much of a key was right."""
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def route(method: str, path: str) -> tuple[str, str, list[str]]:
    """(action, who, path groups); 404 for no such path, 405 (with Allow) for a path without that method."""
    allowed = set()
    for verb, pattern, action, who in ROUTES:
        m = pattern.fullmatch(path)
        if m:
            if verb == method or (method == "HEAD" and verb == "GET"):
                return action, who, [check_text(unquote(g), "a name in the path") for g in m.groups()]
            allowed.add(verb)
    if allowed:
        allow = sorted(allowed | ({"HEAD"} if "GET" in allowed else set()))
        raise HttpError(405, f"{path[:100]} takes {', '.join(allow)}, not {method}", {"Allow": ", ".join(allow)})
    raise ApiError(404, f"no route {method} {path[:100]}")


def _wait_seconds(query: dict) -> float:
    try:
        wait = float(query.get("wait") or 0)
    except ValueError:
        wait = math.nan
    if not math.isfinite(wait):
        raise ApiError(400, "'wait' must be a number of seconds")
    return max(0.0, min(MAX_WAIT, wait))


def _cursor(query: dict) -> int:
    after = query.get("after") or "0"
    if not after.isascii() or not after.isdigit() or len(after) > MAX_ID_DIGITS:
        raise ApiError(400, "'after' must be an event number (the 'last' of the previous answer)")
    return int(after)


class App:
    """Admit, route, scope, call the store; every refusal is an ``ApiError`` (or ``HttpError``) with its 4xx."""

    def __init__(self, store: Store, api_key: str | None, limits: Limits | None = None,
                 log: ServerLog | None = None):
        self.store = store
        self.api_key = api_key
        self.limits = limits or Limits()
        self.log = log or ServerLog()
        self.guard = Guard()
        self.workers = Workers(store.workers)
        self.polls = Polls(store, self.db, self.quick)
        self._sweeper: asyncio.Task | None = None
        self._scopes: dict[str, dict] = {}  # token digest -> scope (one process only: see _scope)
        self._digest_of: dict[tuple[str, str], str] = {}

    async def db(self, fn, *args):
        """``fn(*args)`` in a worker thread, in the calling address's turn: the event loop goes on serving."""
        return await self.workers.run(fn, *args)

    async def quick(self, fn, *args):
        """A small, bounded job (a few indexed rows): on SQLite, run at once in the loop when the database is free,
        sparing the two thread hand-offs that cost more than the job; else in a worker like any other."""
        lock = self.store.lock
        if self.store.db.one_process and lock.acquire(blocking=False):
            try:
                return fn(*args)
            finally:
                lock.release()
        return await self.workers.run(fn, *args)

    # -- lifecycle (called by the HTTP server in its loop) ----------------------------------------------------
    async def started(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def stopping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        self.workers.stop()

    async def _sweep(self) -> None:
        """Record runs that went quiet as ``stalled`` events, so followers learn of it through their cursor."""
        every = max(0.1, min(5.0, self.store.stall_after / 4))
        trimmed = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(every)
            if asyncio.get_running_loop().time() - trimmed > 10:
                trimmed = asyncio.get_running_loop().time()
                give_back_memory()  # the sweeper's other chore: memory freed after a burst goes back
            try:
                await self.db(self.store.sweep_stalls)
            except DatabaseError as e:
                self.log.say(f"database {e.reason}", f"looking for stalled nodes: {e}")
            except Exception as e:  # noqa: BLE001 - logged once a minute; the next sweep tries again
                self.log.say(f"sweep {type(e).__name__}", f"looking for stalled nodes failed: {e}", e)

    def changed(self, change: Change) -> None:
        """A write here or in another process changed something (called in the loop's thread)."""
        if change.everything:
            self._scopes.clear()
        for key in change.revoked:
            self._scopes.pop(self._digest_of.pop(key, None), None)
        self.polls.changed(change)

    async def _scope(self, token: str) -> dict | None:
        """A node token's scope. With one process every token change is seen here first, so the answer is kept
        until its node's token is replaced; with several, each request asks the database."""
        key = digest(token)
        scope = self._scopes.get(key)
        if scope is None:
            scope = await self.quick(self.store.token_scope, token)
            if scope is not None and self.store.db.one_process:
                if len(self._scopes) >= MAX_SCOPES:
                    self._scopes.clear()
                self._scopes[key] = scope
                self._digest_of[(scope["stage"], scope["node"])] = key
        return scope

    # -- admission: who is asking, before the body is read ---------------------------------------------------
    async def admit(self, request: Request) -> int:
        """The caller (401 if unknown, 429 if its address guessed too often); its body limit."""
        token = bearer(request)
        source.set(request.peer)  # this request's work takes this address's turns
        if not self.api_key:
            request.caller = Principal(admin=True)
            return self.limits.max_admin_body
        wait = self.guard.blocked(request.peer)
        if wait:
            raise HttpError(429, f"too many wrong credentials from {request.peer}; retry in {math.ceil(wait)} s",
                            {"Retry-After": str(math.ceil(wait))})
        if same_secret(token, self.api_key):
            request.caller = Principal(admin=True)
            return self.limits.max_admin_body
        scope = None
        if token:
            try:
                scope = await self._scope(token)
            except DatabaseError as e:
                raise HttpError(503, f"the access point's database is unavailable ({e.reason}); retry later") from None
        if scope is None:
            if token:
                left = self.guard.failed(request.peer)
                self.log.say(f"wrong credential {request.peer}", f"wrong API key or node token from {request.peer} "
                             f"({request.method} {request.target.split('?', 1)[0][:100]}; {left} more before 429)")
            raise HttpError(401, "missing or wrong API key")
        request.caller = Principal(admin=False, stage=scope["stage"], node=scope["node"], roles=tuple(scope["roles"]),
                                   token=token)
        return self.limits.max_body

    # -- answering -------------------------------------------------------------------------------------------
    async def __call__(self, request: Request) -> Response:
        try:
            who = request.caller
            if who is None:  # a handler called without admission (tests): admit now
                await self.admit(request)
                who = request.caller
            url = urlsplit(request.target)
            try:
                query = {k: check_text(v[0], f"'{k}'") for k, v in parse_qs(url.query, max_num_fields=20).items()}
            except ValueError:
                raise ApiError(400, "too many query parameters") from None
            action, allowed, groups = route(request.method, url.path)
            self._permit(who, allowed, groups)
            if action == "events":
                deploy_id = parse_id(groups[0])
                return Response(200, await self.polls.events(deploy_id, _cursor(query), None if who.admin else who.stage,
                                                             _wait_seconds(query)))
            if action == "get":
                return Response(200, await self.polls.view(parse_id(groups[0]), None if who.admin else who.stage))
            if action == "next":
                found = await self.polls.next(who.stage, who.node, _wait_seconds(query),
                                              functools.partial(self._same_token, who))
                return Response(200, {"deploy": found or None})
            run = self.quick if action in LIGHT and len(request.body) <= LIGHT_BODY else self.db
            status, answer = await run(self._answer, action, who, groups, request.body, query)
            return Response(status, answer)
        except ApiError as e:
            return Response(e.status, {"error": e.message, **e.extra})
        except DatabaseError as e:
            self.log.say(f"database {e.reason}", str(e))
            return Response(503, {"error": f"the access point's database is unavailable ({e.reason}); retry later"})

    def _answer(self, action: str, who: Principal, groups: list[str], raw: bytes, query: dict) -> tuple[int, bytes]:
        """In a worker: the body read, the store asked, the answer encoded (none of it on the event loop)."""
        status, answer = self._dispatch(action, who, groups, parse(raw), query)
        return status, json.dumps(answer).encode()

    @staticmethod
    def _permit(who: Principal, allowed: str, groups: list[str]) -> None:
        if who.admin:
            if allowed == "node":
                raise ApiError(403, "this endpoint takes a node token (`pampa access-point token`), not the API key")
            return
        if allowed == "admin":
            raise ApiError(403, f"a node token (node {who.node} of stage {who.stage}) cannot do this")
        if allowed in ("node", "node-or-admin") and groups[-1] != who.node:
            raise ApiError(403, f"this token is for node {who.node} of stage {who.stage}, not {groups[-1][:128]}")

    def _dispatch(self, action, who: Principal, groups, body, query):
        store = self.store
        scope = None if who.admin else who.stage
        deploy_id = parse_id(groups[0]) if groups and action not in ("hello", "report") else None
        if action == "list":
            stage = query.get("stage")
            if scope is not None and stage not in (None, scope):
                raise ApiError(403, f"this token is for stage {scope}")
            return 200, {"deploys": store.list(scope or stage, query.get("state"))}
        if action == "finish" and body.get("result") not in ("done", "failed"):
            raise ApiError(400, "'result' must be 'done' or 'failed'")
        calls = {
            "create": (201, store.create, body),
            "get": (200, store.get, deploy_id, scope),
            "take": (200, functools.partial(store.move, taken_by=text(body.get("node"), 128)), deploy_id, "TAKEN"),
            "allow": (200, store.move, deploy_id, "ALLOWED"),
            "finish": (200, functools.partial(store.move, detail=text(body.get("detail"))), deploy_id,
                       str(body.get("result")).upper()),
            "cancel": (200, store.cancel, deploy_id, body),
            "start": (200, store.start, deploy_id, who.stage, who.node),
            "progress": (200, store.progress, deploy_id, who.stage, who.node, body.get("events")),
            "finish_run": (200, store.finish_run, deploy_id, who.stage, who.node, body),
            "hello": (200, store.hello, who.stage, who.node, body),
            "report": (200, store.report, groups[0] if groups else None, body, who.scope),
            "nodes": (200, lambda stage: {"nodes": store.nodes(stage)}, query.get("stage")),
            "token": (201, store.issue_token, body),
        }
        status, fn, *args = calls[action]
        return status, fn(*args)

    def _same_token(self, who: Principal) -> bool:
        """Is the caller's node token still the one issued for its node (not replaced since it was checked)?"""
        scope = self.store.token_scope(who.token) if who.token else None
        return scope is not None and (scope["stage"], scope["node"]) == (who.stage, who.node)


def make_server(bind: str, port: int, db: str, api_key: str | None, limits: Limits | None = None,
                stall_after: float = 60.0, quotas: Quotas | None = None, ssl_context: ssl.SSLContext | None = None,
                log: ServerLog | None = None) -> AsyncHTTPServer:
    """The access point on ``bind:port`` (port 0: any free port, see ``server_address``).

    ``db``: a SQLite file, or a ``postgresql://`` URL shared with other access point processes.
    """
    log = log or ServerLog()
    fresh = "://" not in db and not os.path.exists(db)  # a SQLite file this call creates
    store = Store(db, stall_after=stall_after, quotas=quotas)
    app = App(store, api_key, limits, log)
    try:
        server = AsyncHTTPServer(bind, port, app, limits, on_close=store.close, ssl_context=ssl_context, log=log)
    except OSError:
        app.workers.stop()
        store.close()
        if fresh:  # it could not listen: leave no empty database behind
            for leftover in (db, f"{db}-wal", f"{db}-shm", f"{db}-journal", f"{db}.lock"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
        raise
    server.store = store
    server.app = app
    store.on_change = lambda change: _in_loop(server, functools.partial(app.changed, change))
    store.listen(store.on_change)
    return server


def _in_loop(server: AsyncHTTPServer, wake) -> None:
    """A write (in a database thread, or another process's) changed something: wake polls in the loop's thread."""
    try:
        server.call_soon(wake)
    except RuntimeError:  # the loop is closed: the server is stopping
        pass


__all__ = ["App", "HttpError", "Limits", "Principal", "make_server"]
