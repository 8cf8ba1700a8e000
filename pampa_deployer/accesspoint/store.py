"""The access point's state: deploy requests, node versions and events in one SQLite file."""
from __future__ import annotations

import json
import sqlite3
import threading
import time

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

    def close(self) -> None:
        with self.lock:
            self.db.close()

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
