"""The reference access point: the protocol of docs/access-point.md over HTTP, stored in SQLite.

Standard library only (http.server + sqlite3): small enough to read in one sitting,
good enough for the demo, the tests and a small team.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from ..errors import UsageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS deploys (
  id INTEGER PRIMARY KEY AUTOINCREMENT, stage TEXT NOT NULL, branch TEXT NOT NULL, revision TEXT,
  requested_by TEXT, state TEXT NOT NULL, taken_by TEXT, detail TEXT,
  created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
  node TEXT NOT NULL, stage TEXT NOT NULL, revision TEXT NOT NULL, roles TEXT, deploy_id INTEGER,
  reported_at REAL NOT NULL, PRIMARY KEY (node, stage));
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, deploy_id INTEGER, kind TEXT, body TEXT, at REAL NOT NULL);
"""

#: state -> states it may move to
TRANSITIONS = {"PENDING": {"TAKEN", "FAILED"}, "TAKEN": {"ALLOWED", "DONE", "FAILED"},
               "ALLOWED": {"DONE", "FAILED"}, "DONE": set(), "FAILED": set()}


class Store:
    """Deploy requests and node versions in one SQLite file, serialised by a lock."""

    def __init__(self, path: str):
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()

    def _deploy(self, deploy_id: int) -> dict | None:
        row = self.db.execute("SELECT * FROM deploys WHERE id = ?", (deploy_id,)).fetchone()
        return dict(row) if row else None

    def create(self, body: dict) -> dict:
        for key in ("stage", "branch"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise ApiError(400, f"'{key}' is required")
        with self.lock, self.db:
            now = time.time()
            cur = self.db.execute(
                "INSERT INTO deploys (stage, branch, revision, requested_by, state, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'PENDING', ?, ?)",
                (body["stage"], body["branch"], body.get("revision"), body.get("requested_by"), now, now))
            self.db.execute("INSERT INTO events (deploy_id, kind, body, at) VALUES (?, 'created', ?, ?)",
                            (cur.lastrowid, json.dumps(body), now))
            return self._deploy(cur.lastrowid)

    def move(self, deploy_id: int, state: str, **fields) -> dict:
        with self.lock, self.db:
            deploy = self._deploy(deploy_id)
            if deploy is None:
                raise ApiError(404, f"no deploy {deploy_id}")
            if state not in TRANSITIONS[deploy["state"]]:
                raise ApiError(409, f"deploy {deploy_id} is {deploy['state']}; it cannot become {state}")
            now = time.time()
            sets = ", ".join(f"{k} = ?" for k in fields)
            self.db.execute(f"UPDATE deploys SET state = ?, updated_at = ?{', ' + sets if sets else ''} "
                            "WHERE id = ?", (state, now, *fields.values(), deploy_id))
            self.db.execute("INSERT INTO events (deploy_id, kind, body, at) VALUES (?, ?, ?, ?)",
                            (deploy_id, state.lower(), json.dumps(fields), now))
            return self._deploy(deploy_id)

    def get(self, deploy_id: int) -> dict:
        with self.lock:
            deploy = self._deploy(deploy_id)
        if deploy is None:
            raise ApiError(404, f"no deploy {deploy_id}")
        return deploy

    def list(self, stage: str | None, state: str | None) -> list[dict]:
        query, params = "SELECT * FROM deploys WHERE 1=1", []
        if stage:
            query, params = query + " AND stage = ?", params + [stage]
        if state:
            query, params = query + " AND state = ?", params + [state]
        with self.lock:
            return [dict(r) for r in self.db.execute(query + " ORDER BY id DESC LIMIT 100", params)]

    def report(self, node: str, body: dict) -> dict:
        if not isinstance(body.get("stage"), str) or not isinstance(body.get("revision"), str):
            raise ApiError(400, "'stage' and 'revision' are required")
        with self.lock, self.db:
            now = time.time()
            self.db.execute("INSERT OR REPLACE INTO nodes (node, stage, revision, roles, deploy_id, reported_at) "
                            "VALUES (?, ?, ?, ?, ?, ?)", (node, body["stage"], body["revision"],
                                                          ",".join(body.get("roles") or []), body.get("deploy_id"),
                                                          now))
            if body.get("deploy_id") is not None:
                self.db.execute("INSERT INTO events (deploy_id, kind, body, at) VALUES (?, 'version', ?, ?)",
                                (body["deploy_id"], json.dumps({"node": node, **body}), now))
        return {"node": node, **body, "reported_at": now}

    def nodes(self, stage: str | None) -> list[dict]:
        with self.lock:
            rows = self.db.execute("SELECT * FROM nodes" + (" WHERE stage = ?" if stage else "") + " ORDER BY node",
                                   (stage,) if stage else ())
            return [dict(r) for r in rows]


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


ROUTES = [
    ("POST", r"/api/v1/deploys", "create"),
    ("GET", r"/api/v1/deploys", "list"),
    ("GET", r"/api/v1/deploys/(\d+)", "get"),
    ("POST", r"/api/v1/deploys/(\d+)/take", "take"),
    ("POST", r"/api/v1/deploys/(\d+)/allow", "allow"),
    ("POST", r"/api/v1/deploys/(\d+)/finish", "finish"),
    ("POST", r"/api/v1/nodes/([^/]+)/version", "report"),
    ("GET", r"/api/v1/nodes", "nodes"),
]


def make_handler(store: Store, api_key: str | None):
    class Handler(BaseHTTPRequestHandler):
        server_version = "pampa-access-point/1"

        def log_message(self, fmt, *args):  # quiet: never log request bodies or keys
            pass

        def _send(self, status: int, body) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            try:
                if api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
                    raise ApiError(401, "missing or wrong API key")
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                if not isinstance(body, dict):
                    raise ApiError(400, "the body must be a JSON object")
                for verb, pattern, action in ROUTES:
                    m = re.fullmatch(pattern, url.path)
                    if m and verb == method:
                        self._send(*self._dispatch(action, m.groups(), body, query))
                        return
                raise ApiError(404, f"no route {method} {url.path}")
            except ApiError as e:
                self._send(e.status, {"error": e.message})
            except ValueError:
                self._send(400, {"error": "the body is not valid JSON"})

        def _dispatch(self, action, groups, body, query):
            if action == "create":
                return 201, store.create(body)
            if action == "list":
                return 200, {"deploys": store.list(query.get("stage"), query.get("state"))}
            if action == "get":
                return 200, store.get(int(groups[0]))
            if action == "take":
                return 200, store.move(int(groups[0]), "TAKEN", taken_by=str(body.get("node") or ""))
            if action == "allow":
                return 200, store.move(int(groups[0]), "ALLOWED")
            if action == "finish":
                result = body.get("result")
                if result not in ("done", "failed"):
                    raise ApiError(400, "'result' must be 'done' or 'failed'")
                return 200, store.move(int(groups[0]), result.upper(), detail=str(body.get("detail") or ""))
            if action == "report":
                return 200, store.report(groups[0], body)
            if action == "nodes":
                return 200, {"nodes": store.nodes(query.get("stage"))}
            raise ApiError(404, "no such action")

        def do_GET(self):  # noqa: N802 - http.server API
            self._handle("GET")

        def do_POST(self):  # noqa: N802 - http.server API
            self._handle("POST")

    return Handler


def make_server(bind: str, port: int, db: str, api_key: str | None) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((bind, port), make_handler(Store(db), api_key))
    server.daemon_threads = True
    return server


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
