"""A request's events: written within each node's quota, read page by page after a cursor, stalls recorded
as events, and old requests' events dropped (retention).

A mixin of ``Store`` (``store.py``). Why each piece:

- **Quotas.** A node token writes into its own run only, but as fast as it likes: each run keeps at
  most ``quotas.events_per_run`` progress events and ``quotas.bytes_per_run`` bytes of them; the event
  that would cross either is replaced by one visible marker (``"truncated": true``) and later ones are
  dropped, while the run's step and heartbeat are still recorded.
- **Pages.** A follower (``GET /deploys/ID/events?after=SEQ``) gets the events after its cursor and
  only the runs those events changed (each run remembers its last event, ``runs.seq``), never the
  whole request: what a poll costs follows what is new, not how many nodes the request lists.
- **Stalls as events.** A run that goes quiet is written once as a ``stalled`` event (and once more when
  it reports again), so a follower learns of it through its cursor like anything else.
- **Retention.** A stage keeps the events of its ``quotas.keep`` newest requests; older requests keep
  their row, runs and versions (the history rollbacks read), not their events.
"""
from __future__ import annotations

import json

from ..accesspoint import rules, wire
from .checks import ApiError
from .runs import public

#: A page of events: at most this many, and at most about this many bytes of them.
PAGE_EVENTS = 1000
PAGE_BYTES = 512 * 1024


class EventLog:
    def _event(self, deploy_id: int | None, kind: str, body: dict, now: float, node: str | None = None) -> int:
        """Write one event; ``node``: it is about that node's run (a follower's next page shows the run)."""
        seq = self.db.execute("INSERT INTO events (deploy_id, kind, body, at) VALUES (?, ?, ?, ?) RETURNING id",
                              (deploy_id, kind, json.dumps(body), now)).fetchone()["id"]
        if node is not None:
            self.db.execute("UPDATE runs SET seq = ? WHERE deploy_id = ? AND node = ?", (seq, deploy_id, node))
        return seq

    # -- writing progress --------------------------------------------------------------------------------
    def progress(self, deploy_id: int, stage: str, node: str, events) -> dict:
        """Step progress and output tails from a running node; also its heartbeat."""
        try:
            batch = wire.decode_batch(events)  # checked at the door: 400 before anything is written
        except wire.WireError as e:
            raise ApiError(400, str(e)) from None
        now = self.clock()
        bodies = [wire.stored(p, node, now) for p in batch]
        with self._write():
            deploy, run = self._node_run(deploy_id, stage, node)
            if run["state"] != rules.RUNNING:
                raise ApiError(409, f"node {node} is {run['state']} on deploy {deploy_id}, not running",
                               **({"cancelled": True} if deploy["state"] == rules.CANCELLED else {}))
            now = self.clock()
            step = run["step"]
            for body in bodies:
                if body["kind"] == "step_started":
                    step = body["step"]
            kept, size, marker = self._within_quota(run, bodies)
            self.db.executemany("INSERT INTO events (deploy_id, kind, body, at) VALUES (?, 'progress', ?, ?)",
                                [(deploy_id, encoded, now) for encoded in kept])
            if marker:
                self.db.execute("INSERT INTO events (deploy_id, kind, body, at) VALUES (?, 'progress', ?, ?)",
                                (deploy_id, json.dumps(self._marker(node, step)), now))
            seq = run["seq"]
            if kept or marker:
                seq = self.db.execute("SELECT MAX(id) AS last FROM events WHERE deploy_id = ?",
                                      (deploy_id,)).fetchone()["last"]  # ours: the deploy row is locked
            # one past the quota: the marker is written, nothing more will be
            count = self.quotas.events_per_run + 1 if marker else run["events"] + len(kept)
            self.db.execute("UPDATE runs SET step = ?, updated_at = ?, events = ?, bytes = bytes + ?, seq = ? "
                            "WHERE deploy_id = ? AND node = ?", (step, now, count, size, seq, deploy_id, node))
            if run["stalled_at"] is not None:  # it reports again: followers learn it is no longer stalled
                self.db.execute("UPDATE runs SET stalled_at = NULL WHERE deploy_id = ? AND node = ?", (deploy_id, node))
                self._event(deploy_id, "stalled", {"node": node, "stalled": None}, now, node=node)
            self._seen(stage, node)
            self._touch(deploy_id)
        answer = {"ok": True}
        if len(kept) < len(bodies):
            answer["truncated"] = True
        if deploy["state"] == rules.CANCELLED:
            answer["cancelled"] = True
        return answer

    def _within_quota(self, run: dict, bodies: list[dict]) -> tuple[list[str], int, bool]:
        """The events the run may still keep (encoded), their size, and whether this call crossed the quota."""
        quotas = self.quotas
        events, size = run["events"], run["bytes"]
        if events > quotas.events_per_run:
            return [], 0, False  # over for good: the marker was written when it crossed (and counted one past it)
        kept, added = [], 0
        for body in bodies:
            encoded = json.dumps(body)
            if events + len(kept) + 1 > quotas.events_per_run or size + added + len(encoded) > quotas.bytes_per_run:
                return kept, added, True
            kept.append(encoded)
            added += len(encoded)
        return kept, added, False

    def _marker(self, node: str, step: str | None) -> dict:
        q = self.quotas
        return {"node": node, "kind": "output", "step": step or "", "stream": "stderr", "truncated": True,
                "line": f"[access point] this run reached its quota ({q.events_per_run} events or "
                        f"{q.bytes_per_run // 1024} KiB of them): its later output, commands and steps are not kept; "
                        "its outcome still is"}

    # -- reading --------------------------------------------------------------------------------------
    def last_event(self, deploy_id: int) -> int | None:
        """The newest event of a request: it changes with everything a view of the request shows (but the clock)."""
        with self.lock:
            row = self.db.execute("SELECT MAX(id) AS last FROM events WHERE deploy_id = ?", (deploy_id,)).fetchone()
        return row["last"] if row else None

    def page(self, deploy_id: int, after: int, stage: str | None = None) -> dict:
        """What a follower at cursor ``after`` has not seen: ``{"events", "last", "deploy", "ended", "more"}``.

        ``deploy`` is the request with ``stalled`` and, as ``nodes``, only the runs the page's events
        changed (merge them by ``node``); ``ended``: nothing more will happen (the request ended and
        no node is still waiting or running); ``more``: the page is full, more events wait after it.
        """
        with self.lock:
            deploy = self._require(deploy_id, stage=stage)
            rows = self.db.execute("SELECT id, kind, body, at FROM events WHERE deploy_id = ? AND id > ? ORDER BY id "
                                   "LIMIT ?", (deploy_id, after, PAGE_EVENTS)).fetchall()
            events, size, more = [], 0, len(rows) == PAGE_EVENTS
            for r in rows:
                size += len(r["body"] or "")
                if events and size > PAGE_BYTES:
                    more = True
                    break
                events.append({"seq": r["id"], "kind": r["kind"], "at": r["at"], **json.loads(r["body"] or "{}")})
            last = events[-1]["seq"] if events else after
            summary = dict(deploy)
            if deploy.get("mode") == "pull":
                now = self.clock()
                runs = self.db.execute("SELECT * FROM runs WHERE deploy_id = ? AND seq > ? AND seq <= ? ORDER BY "
                                       "opens_gate DESC, gated, node", (deploy_id, after, last)).fetchall() if events else []
                summary["nodes"] = [{**run, "stalled": rules.stalled(run, deploy, now, self.stall_after)}
                                    for run in map(public, runs)]
                live = self.db.execute(
                    "SELECT EXISTS (SELECT 1 FROM runs WHERE deploy_id = ? AND state IN ('waiting', 'running')) AS live, "
                    "EXISTS (SELECT 1 FROM runs WHERE deploy_id = ? AND stalled_at IS NOT NULL AND state IN "
                    "('waiting', 'running')) AS stalled", (deploy_id, deploy_id)).fetchone()
                summary["stalled"] = deploy["state"] not in rules.TERMINAL_REQUEST and bool(live["stalled"])
                ended = deploy["state"] in rules.TERMINAL_REQUEST and not live["live"]
            else:
                ended = deploy["state"] in rules.TERMINAL_REQUEST
        return {"events": events, "last": last, "deploy": summary, "ended": ended, "more": more}

    # -- stalls ---------------------------------------------------------------------------------------
    def sweep_stalls(self) -> int:
        """Write a ``stalled`` event for each run that went quiet since the last sweep; how many."""
        now = self.clock()
        with self.lock:
            candidates = self.db.execute(
                "SELECT DISTINCT r.deploy_id FROM runs r JOIN deploys d ON d.id = r.deploy_id WHERE r.state IN "
                "('waiting', 'running') AND r.stalled_at IS NULL AND d.state != 'CANCELLED' AND "
                "((r.state = 'running' AND COALESCE(r.updated_at, r.started_at, 0) < ?) OR (r.state = 'waiting' AND "
                "((r.gated = 0 AND d.created_at < ?) OR (r.gated = 1 AND d.allowed_at < ?)))) ORDER BY r.deploy_id DESC",
                (now - self.stall_after,) * 3).fetchall()
        found = 0
        for deploy_id in (r["deploy_id"] for r in candidates):
            with self._write():  # one request at a time, newest first (the lock order)
                deploy = self._require(deploy_id, lock=True)
                runs = self.db.execute("SELECT * FROM runs WHERE deploy_id = ? AND state IN ('waiting', 'running') AND "
                                       "stalled_at IS NULL", (deploy_id,)).fetchall()
                for row in runs:
                    run = public(row)
                    why = rules.stalled(run, deploy, now, self.stall_after)
                    if why is None:
                        continue
                    self.db.execute("UPDATE runs SET stalled_at = ? WHERE deploy_id = ? AND node = ?",
                                    (now, deploy_id, run["node"]))
                    self._event(deploy_id, "stalled", {"node": run["node"], "stalled": why}, now, node=run["node"])
                    found += 1
                self._touch(deploy_id)
        return found

    # -- retention ------------------------------------------------------------------------------------
    def _prune(self, stage: str) -> None:
        """Inside a write: drop the events of this stage's ended requests older than its ``keep`` newest."""
        keep = self.quotas.keep
        if keep <= 0:
            return
        self.db.execute(
            "DELETE FROM events WHERE deploy_id IN (SELECT id FROM deploys WHERE stage = ? AND state IN ('DONE', "
            "'FAILED', 'CANCELLED') AND id < (SELECT MIN(id) FROM (SELECT id FROM deploys WHERE stage = ? ORDER BY id "
            "DESC LIMIT ?) newest))", (stage, stage, keep))
