"""The reference access point: the protocol of docs/access-point.md over HTTP, stored in SQLite
(or PostgreSQL, for several processes behind a proxy: docs/pull-mode.md).

Standard library only (asyncio + sqlite3; psycopg for PostgreSQL). The HTTP layer (``http.py``) bounds every
connection; this module authenticates, scopes, routes and answers, and parks long
polls on the event loop (a waiting agent costs no thread). Credentials are compared
in constant time and never logged.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from .database import DatabaseError
from .http import AsyncHTTPServer, HttpError, Limits, Request, Response
from .store import ApiError, Store

#: Ids are SQLite integers; longer digit strings are answered 404 without being parsed.
MAX_ID_DIGITS = 15
#: The longest a long poll may wait (``wait=`` is capped to this).
MAX_WAIT = 30.0
_ID = r"(\d+)"
_NAME = r"([^/]+)"

# (method, path, action, who may call it: "admin", "node" (its own name only), "any" (scoped))
ROUTES = [
    ("POST", r"/api/v1/deploys", "create", "admin"),
    ("GET", r"/api/v1/deploys", "list", "any"),
    ("GET", rf"/api/v1/deploys/{_ID}", "get", "any"),
    ("GET", rf"/api/v1/deploys/{_ID}/events", "events", "any"),
    ("POST", rf"/api/v1/deploys/{_ID}/take", "take", "admin"),
    ("POST", rf"/api/v1/deploys/{_ID}/allow", "allow", "admin"),
    ("POST", rf"/api/v1/deploys/{_ID}/finish", "finish", "admin"),
    ("POST", rf"/api/v1/deploys/{_ID}/nodes/{_NAME}/start", "start", "node"),
    ("POST", rf"/api/v1/deploys/{_ID}/nodes/{_NAME}/progress", "progress", "node"),
    ("POST", rf"/api/v1/deploys/{_ID}/nodes/{_NAME}/finish", "finish_run", "node"),
    ("GET", rf"/api/v1/nodes/{_NAME}/next", "next", "node"),
    ("POST", rf"/api/v1/nodes/{_NAME}/hello", "hello", "node"),
    ("POST", rf"/api/v1/nodes/{_NAME}/version", "report", "node-or-admin"),
    ("GET", r"/api/v1/nodes", "nodes", "admin"),
    ("POST", r"/api/v1/tokens", "token", "admin"),
]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin key (the developer, `pampa deploy`), or one node of one stage."""

    admin: bool
    stage: str | None = None
    node: str | None = None


def parse_id(text: str) -> int:
    """A path id: digits only (the route says so), and short enough to be one of ours."""
    if len(text) > MAX_ID_DIGITS:
        raise ApiError(404, f"no deploy with an id of {len(text)} digits")
    return int(text)


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so timing says nothing about how much of a key was right."""
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def _wait_seconds(query: dict) -> float:
    try:
        return max(0.0, min(MAX_WAIT, float(query.get("wait") or 0)))
    except ValueError:
        raise ApiError(400, "'wait' must be a number of seconds") from None


class App:
    """Authenticate, scope, route, call the store; every failure is an ``ApiError`` with a 4xx."""

    def __init__(self, store: Store, api_key: str | None):
        self.store = store
        self.api_key = api_key
        # Parked polls wait on one of these: agents' `next` on request-level changes (a request created or
        # moved), followers of one request on any change to it. A progress report wakes only the latter.
        self._requests_changed: asyncio.Event | None = None
        self._deploy_changed: dict[int, asyncio.Event] = {}
        store.on_change = self._wake

    # -- long polls ----------------------------------------------------------------------------------
    def _wake(self, deploys: set, moved: bool) -> None:
        """Called after every write (in the loop's thread): wake the polls that may now have an answer."""
        if moved and self._requests_changed is not None:
            self._requests_changed.set()
            self._requests_changed = None
        for deploy_id in deploys:
            event = self._deploy_changed.pop(deploy_id, None)
            if event is not None:
                event.set()

    def _channel(self, deploy_id: int | None) -> asyncio.Event:
        if deploy_id is None:
            if self._requests_changed is None:
                self._requests_changed = asyncio.Event()
            return self._requests_changed
        return self._deploy_changed.setdefault(deploy_id, asyncio.Event())

    async def _poll(self, check, wait: float, deploy_id: int | None = None):
        """``check()`` now, then after each relevant change until it returns something or ``wait`` runs out."""
        deadline = time.monotonic() + wait
        while True:
            found = check()
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            # A follower re-checks every 5 s anyway (stalls come from the clock); an agent's poll only
            # changes answer on a write, so it sleeps until one, at no cost while idle.
            try:
                await asyncio.wait_for(self._channel(deploy_id).wait(),
                                       remaining if deploy_id is None else min(remaining, 5.0))
            except asyncio.TimeoutError:
                pass

    # -- requests ------------------------------------------------------------------------------------
    def authenticate(self, request: Request) -> Principal:
        token = bearer(request)
        if not self.api_key:
            return Principal(admin=True)
        if same_secret(token, self.api_key):
            return Principal(admin=True)
        scope = self.store.token_scope(token) if token else None
        if scope is None:
            raise ApiError(401, "missing or wrong API key")
        return Principal(admin=False, stage=scope["stage"], node=scope["node"])

    async def __call__(self, request: Request) -> Response:
        try:
            who = self.authenticate(request)
            url = urlsplit(request.target)
            try:
                query = {k: v[0] for k, v in parse_qs(url.query, max_num_fields=20).items()}
            except ValueError:
                raise ApiError(400, "too many query parameters") from None
            body = self._body(request)
            for verb, pattern, action, allowed in ROUTES:
                m = re.fullmatch(pattern, url.path)
                if m and verb == request.method:
                    groups = [unquote(g) for g in m.groups()]
                    self._permit(who, allowed, groups)
                    status, answer = await self._dispatch(action, who, groups, body, query)
                    return Response(status, answer)
            raise ApiError(404, f"no route {request.method} {url.path[:100]}")
        except ApiError as e:
            return Response(e.status, {"error": e.message})
        except DatabaseError as e:
            print(f"pampa access point: {e}", file=sys.stderr, flush=True)
            return Response(503, {"error": "the access point's database is unavailable; retry later"})

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

    @staticmethod
    def _body(request: Request) -> dict:
        if not request.body:
            return {}
        try:
            body = json.loads(request.body)
        except (ValueError, RecursionError):
            raise ApiError(400, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        return body

    async def _dispatch(self, action, who: Principal, groups, body, query):
        store = self.store
        scope = None if who.admin else who.stage
        if action == "create":
            return 201, store.create(body)
        if action == "list":
            stage = query.get("stage")
            if scope is not None and stage not in (None, scope):
                raise ApiError(403, f"this token is for stage {scope}")
            return 200, {"deploys": store.list(scope or stage, query.get("state"))}
        if action == "get":
            return 200, store.get(parse_id(groups[0]), scope)
        if action == "events":
            return 200, await self._events(parse_id(groups[0]), scope, query)
        if action == "take":
            return 200, store.move(parse_id(groups[0]), "TAKEN", taken_by=str(body.get("node") or "")[:128])
        if action == "allow":
            return 200, store.move(parse_id(groups[0]), "ALLOWED")
        if action == "finish":
            result = body.get("result")
            if result not in ("done", "failed"):
                raise ApiError(400, "'result' must be 'done' or 'failed'")
            return 200, store.move(parse_id(groups[0]), result.upper(), detail=str(body.get("detail") or "")[:2000])
        if action == "start":
            return 200, store.start(parse_id(groups[0]), who.stage, who.node)
        if action == "progress":
            return 200, store.progress(parse_id(groups[0]), who.stage, who.node, body.get("events"))
        if action == "finish_run":
            return 200, store.finish_run(parse_id(groups[0]), who.stage, who.node, body)
        if action == "next":
            found = await self._poll(lambda: store.next_for(who.stage, who.node), _wait_seconds(query))
            return 200, {"deploy": found or None}
        if action == "hello":
            return 200, store.hello(who.stage, who.node, body)
        if action == "report":
            return 200, store.report(groups[0], body, scope)
        if action == "nodes":
            return 200, {"nodes": store.nodes(query.get("stage"))}
        if action == "token":
            return 201, store.issue_token(body)
        raise ApiError(404, "no such action")

    async def _events(self, deploy_id: int, scope: str | None, query: dict) -> dict:
        try:
            after = int(query.get("after") or 0)
        except ValueError:
            raise ApiError(400, "'after' must be an event number") from None
        self.store.get(deploy_id, scope)  # 404 for unknown ids and other stages

        def check():
            events = self.store.events(deploy_id, after)
            deploy = self.store.get(deploy_id, scope)
            if events or deploy.get("stalled") or deploy["state"] in ("DONE", "FAILED") and \
                    all(n["state"] not in ("waiting", "running") for n in deploy.get("nodes", [])):
                return events or [None]
            return None

        found = await self._poll(check, _wait_seconds(query), deploy_id)
        events = [e for e in (found or []) if e is not None]
        return {"events": events, "last": events[-1]["seq"] if events else after,
                "deploy": self.store.get(deploy_id, scope)}


def make_server(bind: str, port: int, db: str, api_key: str | None, limits: Limits | None = None,
                stall_after: float = 60.0) -> AsyncHTTPServer:
    """The access point on ``bind:port`` (port 0: any free port, see ``server_address``).

    ``db``: a SQLite file, or a ``postgresql://`` URL shared with other access point processes.
    """
    fresh = "://" not in db and not os.path.exists(db)  # a SQLite file this call creates
    store = Store(db, stall_after=stall_after)
    try:
        server = AsyncHTTPServer(bind, port, App(store, api_key), limits, on_close=store.close)
    except OSError:
        store.close()
        if fresh:  # it could not listen: leave no empty database behind
            for leftover in (db, f"{db}-wal", f"{db}-shm", f"{db}-journal"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
        raise
    server.store = store
    store.listen(lambda deploys, moved: _in_loop(server, lambda: store.on_change(deploys, moved)))
    return server


def _in_loop(server: AsyncHTTPServer, wake) -> None:
    """Another process changed requests: wake this process's polls, in its loop's thread."""
    try:
        server.call_soon(wake)
    except RuntimeError:  # the loop is closed: the server is stopping
        pass


__all__ = ["App", "HttpError", "Limits", "Principal", "make_server"]
