"""The reference access point: the protocol of docs/access-point.md over HTTP, stored in SQLite.

Standard library only (asyncio + sqlite3). The HTTP layer (``http.py``) bounds every
connection; this module authenticates, routes and answers. Credentials are compared
in constant time and never logged.
"""
from __future__ import annotations

import hmac
import json
import os
import re
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import UsageError
from .http import AsyncHTTPServer, HttpError, Limits, Request, Response
from .store import ApiError, Store

#: Ids are SQLite integers; longer digit strings are answered 404 without being parsed.
MAX_ID_DIGITS = 15
_ID = r"(\d+)"
_NAME = r"([^/]+)"

ROUTES = [
    ("POST", rf"/api/v1/deploys", "create"),
    ("GET", rf"/api/v1/deploys", "list"),
    ("GET", rf"/api/v1/deploys/{_ID}", "get"),
    ("POST", rf"/api/v1/deploys/{_ID}/take", "take"),
    ("POST", rf"/api/v1/deploys/{_ID}/allow", "allow"),
    ("POST", rf"/api/v1/deploys/{_ID}/finish", "finish"),
    ("POST", rf"/api/v1/nodes/{_NAME}/version", "report"),
    ("GET", rf"/api/v1/nodes", "nodes"),
]


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


class App:
    """Authenticate, route, call the store; every failure is an ``ApiError`` with a 4xx."""

    def __init__(self, store: Store, api_key: str | None):
        self.store = store
        self.api_key = api_key

    async def __call__(self, request: Request) -> Response:
        try:
            if self.api_key and not same_secret(bearer(request), self.api_key):
                raise ApiError(401, "missing or wrong API key")
            url = urlsplit(request.target)
            try:
                query = {k: v[0] for k, v in parse_qs(url.query, max_num_fields=20, strict_parsing=False).items()}
            except ValueError:
                raise ApiError(400, "too many query parameters") from None
            body = self._body(request)
            for verb, pattern, action in ROUTES:
                m = re.fullmatch(pattern, url.path)
                if m and verb == request.method:
                    status, answer = self._dispatch(action, [unquote(g) for g in m.groups()], body, query)
                    return Response(status, answer)
            raise ApiError(404, f"no route {request.method} {url.path[:100]}")
        except ApiError as e:
            return Response(e.status, {"error": e.message})

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

    def _dispatch(self, action, groups, body, query):
        store = self.store
        if action == "create":
            return 201, store.create(body)
        if action == "list":
            return 200, {"deploys": store.list(query.get("stage"), query.get("state"))}
        if action == "get":
            return 200, store.get(parse_id(groups[0]))
        if action == "take":
            return 200, store.move(parse_id(groups[0]), "TAKEN", taken_by=str(body.get("node") or ""))
        if action == "allow":
            return 200, store.move(parse_id(groups[0]), "ALLOWED")
        if action == "finish":
            result = body.get("result")
            if result not in ("done", "failed"):
                raise ApiError(400, "'result' must be 'done' or 'failed'")
            return 200, store.move(parse_id(groups[0]), result.upper(), detail=str(body.get("detail") or ""))
        if action == "report":
            return 200, store.report(groups[0], body)
        if action == "nodes":
            return 200, {"nodes": store.nodes(query.get("stage"))}
        raise ApiError(404, "no such action")


def make_server(bind: str, port: int, db: str, api_key: str | None, limits: Limits | None = None) -> AsyncHTTPServer:
    """The access point on ``bind:port`` (port 0: any free port, see ``server_address``)."""
    store = Store(db)
    return AsyncHTTPServer(bind, port, App(store, api_key), limits, on_close=store.close)


def serve_cli(args) -> int:
    api_key = args.api_key or os.environ.get("PAMPA_AP_KEY")
    if not api_key:
        raise UsageError("access-point serve: set an API key with --api-key or PAMPA_AP_KEY")
    server = make_server(args.bind, args.port, args.db, api_key)
    print(f"pampa access point on http://{args.bind}:{server.server_address[1]} (db {args.db})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


__all__ = ["App", "HttpError", "Limits", "make_server", "serve_cli"]
