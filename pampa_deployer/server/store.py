"""The access point's state: deploy requests, node runs, events, versions, tokens.

It lives in a SQLite file (one server process, the default) or a PostgreSQL database (several
processes behind a proxy); ``database.py`` is the seam, the SQL is written once for both.
``Store`` is assembled from one module per concept: ``requests.py`` (creating, moving, cancelling
and showing requests), ``runs.py`` (what each node of a pull request did), ``eventlog.py`` (a
request's events: writing them within a run's quota, reading them page by page, stalls, retention)
and ``nodes.py`` (the versions nodes report, node tokens). This module owns what they share: the
schema, the lock, and ``_write``, the one transaction each write is.

Two kinds of deploy request share the ``deploys`` table:

- push (``pampa deploy``): the deployer moves the request itself (take, allow, finish);
- pull (``pampa request``): the request lists the nodes that act on it, agents report each
  node's run, and the state follows from those runs (``rules.request_state``).

With SQLite every call is serialised by one lock in the process; each write is one transaction.
With PostgreSQL each worker thread has its own connection, and a write locks its deploy row first
(``SELECT ... FOR UPDATE``), so the gate rule is applied to one request by one transaction at a time
and sees every run the other threads and processes committed.
"""
from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable

from .change import Change, encode
from .checks import ApiError
from .database import open_database
from .eventlog import EventLog
from .nodes import Nodes
from .requests import Requests
from .runs import Runs

SCHEMA = """
CREATE TABLE IF NOT EXISTS deploys (
  id {id}, stage TEXT NOT NULL, branch TEXT NOT NULL, revision TEXT,
  requested_by TEXT, state TEXT NOT NULL, taken_by TEXT, detail TEXT,
  created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
  node TEXT NOT NULL, stage TEXT NOT NULL, revision TEXT NOT NULL, roles TEXT, deploy_id BIGINT,
  reported_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (node, stage));
CREATE TABLE IF NOT EXISTS events (
  id {id}, deploy_id BIGINT, kind TEXT, body TEXT, at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  deploy_id BIGINT NOT NULL, node TEXT NOT NULL, roles TEXT NOT NULL, gated INTEGER NOT NULL,
  opens_gate INTEGER NOT NULL, state TEXT NOT NULL, step TEXT, detail TEXT, revision TEXT,
  started_at DOUBLE PRECISION, updated_at DOUBLE PRECISION, ended_at DOUBLE PRECISION,
  PRIMARY KEY (deploy_id, node));
CREATE INDEX IF NOT EXISTS runs_by_node ON runs (node, state);
CREATE INDEX IF NOT EXISTS events_by_deploy ON events (deploy_id, id);
CREATE TABLE IF NOT EXISTS tokens (
  digest TEXT PRIMARY KEY, stage TEXT NOT NULL, node TEXT NOT NULL, roles TEXT NOT NULL,
  created_at DOUBLE PRECISION NOT NULL, UNIQUE (stage, node));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

#: Columns added since the first protocol version (old databases are upgraded in place).
COLUMNS = {
    "deploys": {"mode": "TEXT NOT NULL DEFAULT 'push'", "message": "TEXT", "allowed_at": "DOUBLE PRECISION",
                "ended_at": "DOUBLE PRECISION", "kind": "TEXT NOT NULL DEFAULT 'deploy'"},
    # seq: the last event about this run (a follower reads the runs that changed after its cursor);
    # events/bytes: what the run wrote so far, against its quota; stalled_at: when it was reported stalled.
    "runs": {"seq": "BIGINT NOT NULL DEFAULT 0", "events": "INTEGER NOT NULL DEFAULT 0",
             "bytes": "BIGINT NOT NULL DEFAULT 0", "stalled_at": "DOUBLE PRECISION"},
}
#: Indexes on those columns, made once they exist.
INDEXES = """
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (deploy_id, state, opens_gate);
CREATE INDEX IF NOT EXISTS runs_by_seq ON runs (deploy_id, seq);
CREATE INDEX IF NOT EXISTS runs_stalled ON runs (deploy_id, stalled_at);
CREATE INDEX IF NOT EXISTS runs_live ON runs (state, stalled_at);
"""


@dataclass(frozen=True)
class Quotas:
    """What one node may write into one request, and how many requests' events a stage keeps."""

    events_per_run: int = 10_000        # progress events one node's run keeps; then one marker, then none
    bytes_per_run: int = 2 * 1024 ** 2  # bytes of those events (their JSON)
    keep: int = 100                     # requests per stage whose events are kept (0: all); older ones keep
    #                                     their request, runs and versions, not their events


class Store(Requests, Runs, EventLog, Nodes):
    """All state; ``on_change(Change)`` is called after every write that changed something (wakes long polls).

    ``database``: a SQLite file path, or a ``postgresql://`` URL (see ``database.open_database``).
    """

    def __init__(self, database: str, stall_after: float = 60.0, clock: Callable[[], float] = time.time,
                 quotas: Quotas | None = None):
        self.db = open_database(database)
        try:
            self.db.create(SCHEMA.replace("{id}", self.db.id_column), COLUMNS, INDEXES)
        except Exception:
            self.db.close()
            raise
        # SQLite: one connection, one lock. PostgreSQL: a connection per thread, the row locks order writes.
        self.lock = threading.RLock() if self.db.workers == 1 else nullcontext()
        self.workers = self.db.workers
        self.stall_after = stall_after
        self.clock = clock
        self.quotas = quotas or Quotas()
        self.on_change: Callable[[Change], None] = lambda change: None
        self._local = threading.local()
        self.seen: dict[tuple[str, str], float] = {}  # (stage, node) -> last time its agent called here

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def listen(self, deliver: Callable[[Change], None]) -> None:
        """``deliver(change)`` (from another thread) when another process changed something."""
        self.db.listen(deliver)

    def probe_write(self) -> str | None:
        """Why this database cannot be written (said at start), or None: one small real write."""
        try:
            with self.lock, self.db.transaction():
                self.db.execute("INSERT INTO meta (key, value) VALUES ('started_at', ?) ON CONFLICT (key) DO UPDATE "
                                "SET value = excluded.value", (json.dumps(self.clock()),))
        except Exception as e:  # noqa: BLE001 - said once at start, the server still answers reads
            return str(e)
        return None

    @contextmanager
    def _write(self):
        """One transaction; then the polls waiting on what it changed are woken, here and (NOTIFY) elsewhere."""
        state = self._local
        with self.lock:
            state.touched, state.moved, state.revoked = set(), False, set()
            with self.db.transaction():
                yield
                change = Change(frozenset(state.touched), state.moved, frozenset(state.revoked))
                if change:
                    self.db.notify(encode(change))  # delivered on commit
        if change:
            try:
                self.on_change(change)
            except Exception:  # noqa: BLE001 - waking pollers must never fail a write
                pass

    def _touch(self, deploy_id: int | None, moved: bool = False) -> None:
        """Inside ``_write``: this request changed (``moved``: a request appeared or changed state)."""
        if deploy_id is not None:
            self._local.touched.add(deploy_id)
        self._local.moved = self._local.moved or moved

    def _revoke(self, stage: str, node: str) -> None:
        """Inside ``_write``: this node's old token was replaced (its parked polls re-check and end)."""
        self._local.revoked.add((stage, node))

    # -- rows every concept reads ---------------------------------------------------------------------
    def _deploy(self, deploy_id: int, lock: bool = False) -> dict | None:
        """``lock``: hold the row until the transaction ends (PostgreSQL), so writes to one request queue up."""
        row = self.db.execute("SELECT * FROM deploys WHERE id = ?" + (self.db.for_update if lock else ""),
                              (deploy_id,)).fetchone()
        return dict(row) if row else None

    def _require(self, deploy_id: int, lock: bool = False, stage: str | None = None) -> dict:
        """The deploy, or 404; ``stage``: a node token's, whose other stages' requests do not exist for it."""
        deploy = self._deploy(deploy_id, lock)
        if deploy is None or (stage is not None and deploy["stage"] != stage):
            raise ApiError(404, f"no deploy {deploy_id}")
        return deploy


__all__ = ["ApiError", "Quotas", "Store"]
