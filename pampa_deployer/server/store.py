"""The access point's state: deploy requests, node runs, events, versions, tokens.

It lives in a SQLite file (one server process, the default) or a PostgreSQL database (several
processes behind a proxy); ``database.py`` is the seam, the SQL here is written once for both.

Two kinds of deploy request share the ``deploys`` table:

- push (``pampa deploy``): the deployer moves the request itself (take, allow, finish);
- pull (``pampa request``): the request lists the nodes that act on it, agents report each
  node's run, and the state follows from those runs (``rules.request_state``).

Every call is serialised by one lock in the process; each write is one transaction. With several
processes, a write locks its deploy row first (``SELECT ... FOR UPDATE``), so the gate rule is
applied to one request by one transaction at a time and sees every run the others committed.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from contextlib import contextmanager
from typing import Callable

from ..accesspoint import rules, wire
from ..accesspoint.wire import MAX_LINE, MAX_NAME, MAX_NODES
from .database import encode, open_database

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
"""

#: Columns added to ``deploys`` since the first protocol version (old databases are upgraded in place).
DEPLOY_COLUMNS = {"mode": "TEXT NOT NULL DEFAULT 'push'", "message": "TEXT", "allowed_at": "DOUBLE PRECISION",
                  "ended_at": "DOUBLE PRECISION", "kind": "TEXT NOT NULL DEFAULT 'deploy'"}

#: What a pull request asks its nodes to do: deploy the branch, or roll back to ``revision``.
KINDS = wire.REQUEST_KINDS

#: state -> states it may move to, for push requests (pull requests follow rules.request_state)
TRANSITIONS = {"PENDING": {"TAKEN", "FAILED"}, "TAKEN": {"ALLOWED", "DONE", "FAILED"},
               "ALLOWED": {"DONE", "FAILED"}, "DONE": set(), "FAILED": set()}



class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def digest(token: str) -> str:
    """Tokens are stored as SHA-256 digests: the database never holds a usable credential."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _name(body: dict, key: str, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_NAME or "/" in value:
        raise ApiError(400, f"'{key}' is required: a name of 1 to {MAX_NAME} characters without '/'")
    return value


def _text(value, limit: int = MAX_LINE) -> str:
    return str(value if value is not None else "")[:limit]


class Store:
    """All state behind one lock; ``on_change`` is called after every write (wakes long polls).

    ``database``: a SQLite file path, or a ``postgresql://`` URL (see ``database.open_database``).
    """

    def __init__(self, database: str, stall_after: float = 60.0, clock: Callable[[], float] = time.time):
        self.db = open_database(database)
        try:
            self.db.create(SCHEMA.replace("{id}", self.db.id_column), DEPLOY_COLUMNS)
        except Exception:
            self.db.close()
            raise
        self.lock = threading.RLock()
        self.stall_after = stall_after
        self.clock = clock
        #: called after every write with (deploy ids touched, whether a request appeared or changed state)
        self.on_change: Callable[[set, bool], None] = lambda deploys, moved: None
        self._touched: set = set()
        self._moved = False
        self.seen: dict[tuple[str, str], float] = {}  # (stage, node) -> last time its agent called here

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def listen(self, deliver: Callable[[set, bool], None]) -> None:
        """``deliver(deploys, moved)`` (from another thread) when another process changed them."""
        self.db.listen(deliver)

    @contextmanager
    def _write(self):
        """One transaction; then the polls waiting on what it touched are woken, here and (NOTIFY) elsewhere."""
        with self.lock:
            self._touched, self._moved = set(), False
            with self.db.transaction():
                yield
                if self._touched or self._moved:
                    self.db.notify(encode(self._touched, self._moved))  # delivered on commit
            touched, moved = self._touched, self._moved
        if touched or moved:
            try:
                self.on_change(touched, moved)
            except Exception:  # noqa: BLE001 - waking pollers must never fail a write
                pass

    # -- helpers -------------------------------------------------------------------------------------
    def _deploy(self, deploy_id: int, lock: bool = False) -> dict | None:
        """``lock``: hold the row until the transaction ends (PostgreSQL), so writes to one request queue up."""
        row = self.db.execute("SELECT * FROM deploys WHERE id = ?" + (self.db.for_update if lock else ""),
                              (deploy_id,)).fetchone()
        return dict(row) if row else None

    def _require(self, deploy_id: int, lock: bool = False) -> dict:
        deploy = self._deploy(deploy_id, lock)
        if deploy is None:
            raise ApiError(404, f"no deploy {deploy_id}")
        return deploy

    def _runs(self, deploy_id: int, openers_only: bool = False) -> list[dict]:
        where = " AND opens_gate = 1" if openers_only else ""
        rows = self.db.execute(f"SELECT * FROM runs WHERE deploy_id = ?{where} ORDER BY opens_gate DESC, gated, node",
                               (deploy_id,))
        out = []
        for r in rows:
            run = dict(r)
            run["roles"] = run["roles"].split(",") if run["roles"] else []
            run["gated"], run["opens_gate"] = bool(run["gated"]), bool(run["opens_gate"])
            out.append(run)
        return out

    def _event(self, deploy_id: int | None, kind: str, body: dict, now: float) -> None:
        self.db.execute("INSERT INTO events (deploy_id, kind, body, at) VALUES (?, ?, ?, ?)",
                        (deploy_id, kind, json.dumps(body), now))

    def _touch(self, deploy_id: int | None, moved: bool = False) -> None:
        """Inside ``_write``: this request changed (``moved``: a request appeared or changed state)."""
        if deploy_id is not None:
            self._touched.add(deploy_id)
        self._moved = self._moved or moved

    def view(self, deploy: dict, with_runs: bool = True) -> dict:
        """A deploy as the API shows it: pull requests carry their nodes' runs and any stall."""
        out = dict(deploy)
        if deploy.get("mode") == "pull" and with_runs:
            now = self.clock()
            runs = self._runs(deploy["id"])
            for run in runs:
                run["stalled"] = rules.stalled(run, deploy, now, self.stall_after)
            out["nodes"] = runs
            out["stalled"] = deploy["state"] not in rules.TERMINAL_REQUEST and any(r["stalled"] for r in runs)
        return out

    # -- deploy requests -----------------------------------------------------------------------------
    def create(self, body: dict) -> dict:
        stage, branch = _name(body, "stage"), body.get("branch")
        if not isinstance(branch, str) or not branch or len(branch) > 255:
            raise ApiError(400, "'branch' is required")
        nodes = body.get("nodes")
        if nodes is not None:
            nodes = self._check_nodes(nodes)
        kind = self._check_kind(body, nodes is not None)
        with self._write():
            now = self.clock()
            mode = "pull" if nodes is not None else "push"
            deploy_id = self.db.execute(
                "INSERT INTO deploys (stage, branch, revision, requested_by, state, created_at, updated_at, mode, "
                "message, kind) VALUES (?, ?, ?, ?, 'PENDING', ?, ?, ?, ?, ?) RETURNING id",
                (stage, branch, _text(body.get("revision"), 64) or None, _text(body.get("requested_by"), 128) or None,
                 now, now, mode, _text(body.get("message")) or None, kind)).fetchone()["id"]
            for n in nodes or []:
                self.db.execute("INSERT INTO runs (deploy_id, node, roles, gated, opens_gate, state) "
                                "VALUES (?, ?, ?, ?, ?, 'waiting')",
                                (deploy_id, n["node"], ",".join(n["roles"]), int(n["gated"]), int(n["opens_gate"])))
            self._event(deploy_id, "created", {k: body.get(k) for k in ("stage", "branch", "revision",
                                                                         "requested_by", "message")}, now)
            if nodes is not None:
                self._settle(deploy_id, now)
            self._touch(deploy_id, moved=True)
            deploy = self._deploy(deploy_id)
        return self.view(deploy)

    @staticmethod
    def _check_kind(body: dict, pull: bool) -> str:
        """``kind`` of a request: a rollback is a pull request that names its one target ``revision``."""
        kind = body.get("kind") or "deploy"
        if kind not in KINDS:
            raise ApiError(400, f"'kind' must be one of {', '.join(KINDS)}")
        if kind == "rollback" and not pull:
            raise ApiError(400, "a rollback request is a pull request: it needs 'nodes'")
        revision = body.get("revision")
        if kind == "rollback" and (not isinstance(revision, str) or not revision or len(revision) > 64):
            raise ApiError(400, "a rollback request needs 'revision': the one target of every node")
        return kind

    @staticmethod
    def _check_nodes(nodes) -> list[dict]:
        if not isinstance(nodes, list) or not nodes or len(nodes) > MAX_NODES:
            raise ApiError(400, f"'nodes' must be a list of 1 to {MAX_NODES} nodes")
        out, seen = [], set()
        for n in nodes:
            if not isinstance(n, dict):
                raise ApiError(400, "each of 'nodes' must be an object {node, roles, gated, opens_gate}")
            name = _name(n, "node")
            roles = n.get("roles")
            if not isinstance(roles, list) or not all(isinstance(r, str) and 0 < len(r) <= MAX_NAME for r in roles):
                raise ApiError(400, f"node {name}: 'roles' must be a list of role names")
            if name in seen:
                raise ApiError(400, f"node {name} is listed twice")
            seen.add(name)
            out.append({"node": name, "roles": roles, "gated": bool(n.get("gated")),
                        "opens_gate": bool(n.get("opens_gate"))})
        return out

    def move(self, deploy_id: int, state: str, **fields) -> dict:
        """Push requests: the deployer moves its own request (PENDING -> TAKEN -> ALLOWED -> DONE|FAILED)."""
        with self._write():
            deploy = self._require(deploy_id, lock=True)
            if deploy.get("mode") == "pull":
                raise ApiError(409, f"deploy {deploy_id} is a pull request: its nodes' reports move it")
            if state not in TRANSITIONS[deploy["state"]]:
                raise ApiError(409, f"deploy {deploy_id} is {deploy['state']}; it cannot become {state}")
            now = self.clock()
            if state == "ALLOWED":
                fields["allowed_at"] = now
            if state in rules.TERMINAL_REQUEST:
                fields["ended_at"] = now
            sets = ", ".join(f"{k} = ?" for k in fields)
            self.db.execute(f"UPDATE deploys SET state = ?, updated_at = ?{', ' + sets if sets else ''} "
                            "WHERE id = ?", (state, now, *fields.values(), deploy_id))
            self._event(deploy_id, state.lower(), {k: v for k, v in fields.items() if not k.endswith("_at")}, now)
            self._touch(deploy_id, moved=True)
            deploy = self._deploy(deploy_id)
        return deploy

    def get(self, deploy_id: int, stage: str | None = None) -> dict:
        with self.lock:
            deploy = self._require(deploy_id)
            if stage is not None and deploy["stage"] != stage:
                raise ApiError(404, f"no deploy {deploy_id}")  # other stages' requests do not exist for a node
            return self.view(deploy)

    def list(self, stage: str | None, state: str | None) -> list[dict]:
        query, params = "SELECT * FROM deploys WHERE 1=1", []
        if stage:
            query, params = query + " AND stage = ?", params + [stage]
        if state:
            query, params = query + " AND state = ?", params + [state]
        with self.lock:
            return [dict(r) for r in self.db.execute(query + " ORDER BY id DESC LIMIT 100", params)]

    # -- node runs (pull mode) -------------------------------------------------------------------------
    def _settle(self, deploy_id: int, now: float) -> None:
        """Apply the gate rule after a run changed: move the request, skip gated nodes if it closed.

        Called on every start and finish, so it must not cost O(nodes) in Python: with 1,000 nodes that
        made a request O(nodes²) (7 of 24 server CPU-seconds at 400 agents). The rules read only the keplers'
        runs in full and, of the others, which (opens_gate, state) pairs occur: the database counts those.
        """
        deploy = self._deploy(deploy_id, lock=True)  # already held by every caller but create's
        openers = self._runs(deploy_id, openers_only=True)
        closed = rules.gate_closed_reason(openers)
        if closed:
            why = f"gate closed: {closed}; not touched"
            skipped = self.db.execute("SELECT node FROM runs WHERE deploy_id = ? AND gated = 1 AND state = 'waiting'",
                                      (deploy_id,)).fetchall()
            self.db.execute("UPDATE runs SET state = 'skipped', detail = ?, ended_at = ? "
                            "WHERE deploy_id = ? AND gated = 1 AND state = 'waiting'", (why, now, deploy_id))
            for node in (r["node"] for r in skipped):
                self._event(deploy_id, "node", {"node": node, "state": "skipped", "detail": why}, now)
        self._touched.add(deploy_id)
        state = rules.request_state(deploy["state"], self._run_kinds(deploy_id))
        if state == deploy["state"]:
            return
        self._moved = True
        extra = ""
        params: list = [state, now]
        if state == rules.ALLOWED:
            extra += ", allowed_at = ?"
            params.append(now)
        reached = rules.gate_revision(openers) if not deploy.get("revision") else None
        if reached is not None and state in (rules.ALLOWED, rules.DONE):
            extra += ", revision = ?"  # the history a pull-mode rollback goes back in
            params.append(reached)
        if state in rules.TERMINAL_REQUEST:
            extra += ", ended_at = ?, detail = ?"
            bad = self.db.execute("SELECT node, state FROM runs WHERE deploy_id = ? AND state != 'ok' "
                                  "ORDER BY opens_gate DESC, gated, node LIMIT 20", (deploy_id,)).fetchall()
            params += [now, (f"gate closed: {closed}" if closed else "; ".join(f"{r['node']} {r['state']}" for r in bad))]
        self.db.execute(f"UPDATE deploys SET state = ?, updated_at = ?{extra} WHERE id = ?", (*params, deploy_id))
        self._event(deploy_id, state.lower(), {"detail": closed or ""}, now)

    def _run_kinds(self, deploy_id: int) -> list[dict]:
        """One stand-in run per distinct (opens_gate, state) of a request: all ``rules.request_state`` reads
        (its any/all over runs do not change when duplicates are dropped)."""
        rows = self.db.execute("SELECT DISTINCT opens_gate, state FROM runs WHERE deploy_id = ?", (deploy_id,))
        return [{"opens_gate": bool(r["opens_gate"]), "state": r["state"]} for r in rows]

    def _run(self, deploy: dict, node: str, lock: bool = False) -> dict:
        if deploy.get("mode") != "pull":
            raise ApiError(409, f"deploy {deploy['id']} is not a pull request")
        row = self.db.execute("SELECT * FROM runs WHERE deploy_id = ? AND node = ?" + (self.db.for_update if lock else ""),
                              (deploy["id"], node)).fetchone()
        if row is None:
            raise ApiError(404, f"node {node} is not part of deploy {deploy['id']}")
        run = dict(row)
        run["gated"], run["opens_gate"] = bool(run["gated"]), bool(run["opens_gate"])
        return run

    def next_for(self, stage: str, node: str) -> dict | None:
        """The newest request this node should act on now, or None."""
        with self.lock:
            self._seen(stage, node)
            rows = self.db.execute(
                "SELECT d.* FROM runs r JOIN deploys d ON d.id = r.deploy_id WHERE r.node = ? AND d.stage = ? "
                "AND r.state = 'waiting' ORDER BY d.id DESC LIMIT 20", (node, stage)).fetchall()
            for row in rows:
                deploy = dict(row)
                if rules.actionable(self._run(deploy, node), deploy["state"]):
                    return self.view(deploy, with_runs=False)
            return None

    def _seen(self, stage: str, node: str) -> None:
        """Liveness in memory only: a write per long poll would cost 1,000 commits per wake-up."""
        self.seen[(stage, node)] = self.clock()

    def _node_run(self, deploy_id: int, stage: str, node: str) -> tuple[dict, dict]:
        """A deploy of ``stage`` (404 for another stage's: a node token never sees it) and ``node``'s run.

        Both rows stay locked until the write ends. Every write that adds to a request locks its
        deploy row first: one transaction settles a request at a time, and its events get their
        ids in commit order (a follower reading "events after N" never skips one committed late).
        Lock order, to never deadlock: a deploy before its runs, newer deploys before older ones.
        """
        deploy = self._require(deploy_id, lock=True)
        if deploy["stage"] != stage:
            raise ApiError(404, f"no deploy {deploy_id}")
        return deploy, self._run(deploy, node, lock=True)

    def start(self, deploy_id: int, stage: str, node: str) -> dict:
        """A node begins its run; 409 if it already did (a restarted agent never runs a request twice)."""
        with self._write():
            deploy, run = self._node_run(deploy_id, stage, node)
            if run["state"] != rules.WAITING:
                raise ApiError(409, f"node {node} already has run {deploy_id}: it is {run['state']}")
            if not rules.actionable(run, deploy["state"]):
                raise ApiError(409, f"deploy {deploy_id} is {deploy['state']}: node {node} waits for the gate")
            now = self.clock()
            self.db.execute("UPDATE runs SET state = 'running', started_at = ?, updated_at = ? "
                            "WHERE deploy_id = ? AND node = ?", (now, now, deploy_id, node))
            # Older requests this node never started are superseded: it deploys the newest.
            older = self.db.execute("SELECT deploy_id FROM runs WHERE node = ? AND state = 'waiting' AND deploy_id < ? "
                                    "AND deploy_id IN (SELECT id FROM deploys WHERE stage = ?) ORDER BY deploy_id DESC",
                                    (node, deploy_id, stage)).fetchall()
            for old in (r["deploy_id"] for r in older):
                self._deploy(old, lock=True)
                why = f"superseded by deploy {deploy_id}"
                self.db.execute("UPDATE runs SET state = 'skipped', detail = ?, ended_at = ? "
                                "WHERE deploy_id = ? AND node = ?", (why, now, old, node))
                self._event(old, "node", {"node": node, "state": "skipped", "detail": why}, now)
                self._settle(old, now)
            if deploy["taken_by"] is None:
                self.db.execute("UPDATE deploys SET taken_by = ? WHERE id = ?", (node, deploy_id))
            self._event(deploy_id, "node", {"node": node, "state": "running"}, now)
            self._settle(deploy_id, now)
            self._touch(deploy_id)
            run = self._run(self._deploy(deploy_id), node)
        return run

    def progress(self, deploy_id: int, stage: str, node: str, events) -> dict:
        """Step progress and output tails from a running node; also its heartbeat."""
        try:
            batch = wire.decode_batch(events)  # checked at the door: 400 before anything is written
        except wire.WireError as e:
            raise ApiError(400, str(e)) from None
        with self._write():
            deploy, run = self._node_run(deploy_id, stage, node)
            if run["state"] != rules.RUNNING:
                raise ApiError(409, f"node {node} is {run['state']} on deploy {deploy_id}, not running")
            now = self.clock()
            step = run["step"]
            for p in batch:
                if p.kind == wire.STEP_STARTED:
                    step = p.step
                self._event(deploy_id, "progress", wire.stored(p, node, now), now)
            self.db.execute("UPDATE runs SET step = ?, updated_at = ? WHERE deploy_id = ? AND node = ?",
                            (step, now, deploy_id, node))
            self._seen(stage, node)
            self._touch(deploy_id)
        return {"ok": True}

    def finish_run(self, deploy_id: int, stage: str, node: str, body: dict) -> dict:
        """A node's run ended: ok, failed or interrupted; the gate rule is applied at once."""
        result = body.get("result")
        if result not in (rules.OK, rules.NODE_FAILED, rules.INTERRUPTED):
            raise ApiError(400, "'result' must be 'ok', 'failed' or 'interrupted'")
        with self._write():
            deploy, run = self._node_run(deploy_id, stage, node)
            if run["state"] in rules.NODE_FINAL:
                if run["state"] == result:
                    return run  # a retried report after a lost answer: same outcome, nothing to do
                raise ApiError(409, f"node {node} already ended deploy {deploy_id} as {run['state']}")
            if run["state"] == rules.WAITING and result == rules.OK:
                raise ApiError(409, f"node {node} never started deploy {deploy_id}")
            now = self.clock()
            detail, step = _text(body.get("detail")), _text(body.get("step"), MAX_NAME) or run["step"]
            revision = _text(body.get("revision"), 64) or None
            self.db.execute("UPDATE runs SET state = ?, step = ?, detail = ?, revision = ?, ended_at = ?, "
                            "updated_at = ? WHERE deploy_id = ? AND node = ?",
                            (result, step, detail, revision, now, now, deploy_id, node))
            self._event(deploy_id, "node", {"node": node, "state": result, "step": step, "detail": detail,
                                            "revision": revision}, now)
            self._settle(deploy_id, now)
            run = self._run(self._deploy(deploy_id), node)
        return run

    def hello(self, stage: str, node: str, body: dict) -> dict:
        """An agent (re)started: any run the server still shows running for it was cut short."""
        with self._write():
            now = self.clock()
            rows = self.db.execute("SELECT r.deploy_id, r.step FROM runs r JOIN deploys d ON d.id = r.deploy_id "
                                   "WHERE r.node = ? AND d.stage = ? AND r.state = 'running' ORDER BY r.deploy_id DESC",
                                   (node, stage)).fetchall()
            cut = []
            for deploy_id, step in ((r["deploy_id"], r["step"]) for r in rows):
                if self._run(self._require(deploy_id, lock=True), node, lock=True)["state"] != rules.RUNNING:
                    continue  # another process ended it meanwhile
                why = _text(body.get("detail")) or f"the agent restarted during {step or 'its first step'}"
                self.db.execute("UPDATE runs SET state = 'interrupted', detail = ?, ended_at = ?, updated_at = ? "
                                "WHERE deploy_id = ? AND node = ?", (why, now, now, deploy_id, node))
                self._event(deploy_id, "node", {"node": node, "state": "interrupted", "step": step, "detail": why}, now)
                self._settle(deploy_id, now)
                cut.append(deploy_id)
            self._seen(stage, node)
        return {"node": node, "stage": stage, "interrupted": cut}

    def events(self, deploy_id: int, after: int, limit: int = 1000) -> list[dict]:
        with self.lock:
            rows = self.db.execute("SELECT id, kind, body, at FROM events WHERE deploy_id = ? AND id > ? "
                                   "ORDER BY id LIMIT ?", (deploy_id, after, limit)).fetchall()
        return [{"seq": r["id"], "kind": r["kind"], "at": r["at"], **json.loads(r["body"] or "{}")} for r in rows]

    # -- versions ------------------------------------------------------------------------------------
    def report(self, node: str, body: dict, stage: str | None = None) -> dict:
        if not isinstance(body.get("stage"), str) or not isinstance(body.get("revision"), str):
            raise ApiError(400, "'stage' and 'revision' are required")
        if stage is not None and body["stage"] != stage:
            raise ApiError(403, f"this token is for stage {stage}, not {body['stage'][:MAX_NAME]}")
        deploy_id = body.get("deploy_id")
        if deploy_id is not None and (not isinstance(deploy_id, int) or deploy_id < 0 or deploy_id > 2 ** 62):
            raise ApiError(400, "'deploy_id' must be an integer")
        roles = body.get("roles") or []
        if not isinstance(roles, list):
            raise ApiError(400, "'roles' must be a list")
        with self._write():
            now = self.clock()
            if deploy_id is not None:
                self._deploy(deploy_id, lock=True)  # its events stay in commit order (see _node_run)
            self.db.execute("INSERT INTO nodes (node, stage, revision, roles, deploy_id, reported_at) "
                            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node, stage) DO UPDATE SET revision = excluded.revision, "
                            "roles = excluded.roles, deploy_id = excluded.deploy_id, reported_at = excluded.reported_at",
                            (node, body["stage"], _text(body["revision"], 64),
                                                          ",".join(_text(r, MAX_NAME) for r in roles), deploy_id, now))
            if deploy_id is not None:
                self._event(deploy_id, "version", {"node": node, "stage": body["stage"],
                                                   "revision": _text(body["revision"], 64)}, now)
            self._touch(deploy_id)
        return {"node": node, **body, "reported_at": now}

    def nodes(self, stage: str | None) -> list[dict]:
        with self.lock:
            rows = self.db.execute("SELECT * FROM nodes" + (" WHERE stage = ?" if stage else "") + " ORDER BY node",
                                   (stage,) if stage else ())
            return [{**dict(r), "seen_at": self.seen.get((r["stage"], r["node"]))} for r in rows]

    # -- node tokens ---------------------------------------------------------------------------------
    def issue_token(self, body: dict) -> dict:
        """A new token for one node of one stage (replacing its old one); shown once, stored as a digest."""
        stage, node = _name(body, "stage"), _name(body, "node")
        roles = body.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) and 0 < len(r) <= MAX_NAME for r in roles):
            raise ApiError(400, "'roles' must be a list of role names")
        token = "pnt_" + secrets.token_urlsafe(32)
        with self._write():
            old = self.db.execute("DELETE FROM tokens WHERE stage = ? AND node = ?", (stage, node)).rowcount
            self.db.execute("INSERT INTO tokens (digest, stage, node, roles, created_at) VALUES (?, ?, ?, ?, ?)",
                            (digest(token), stage, node, ",".join(roles), self.clock()))
        # "replaced": the node's earlier token stopped working now (whoever holds it must be given this one).
        return {"token": token, "stage": stage, "node": node, "roles": roles, "replaced": bool(old and old > 0)}

    def token_scope(self, token: str) -> dict | None:
        """The (stage, node) a node token is for, or None. Looked up by digest, not compared."""
        with self.lock:
            row = self.db.execute("SELECT stage, node, roles FROM tokens WHERE digest = ?", (digest(token),)).fetchone()
        return dict(row) if row else None
