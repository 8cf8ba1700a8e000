"""What each node of a pull request does: the next request it should start, starting, finishing, an agent's
restart, and the gate rule applied after each of them.

A mixin of ``Store`` (``store.py``).
"""
from __future__ import annotations

from ..accesspoint import rules
from .checks import MAX_NAME, ApiError, text

#: Columns of a run that are the server's bookkeeping, not part of the protocol.
INTERNAL = ("seq", "events", "bytes", "stalled_at")

#: One probe per (opens_gate, state) pair: which kinds of run a request has, from the index, not its rows.
_KINDS = ", ".join(f"({g}, '{s}')" for g in (0, 1) for s in rules.NODE_STATES)


def public(row) -> dict:
    """A run as the API shows it."""
    run = {k: v for k, v in dict(row).items() if k not in INTERNAL}
    run["roles"] = run["roles"].split(",") if run["roles"] else []
    run["gated"], run["opens_gate"] = bool(run["gated"]), bool(run["opens_gate"])
    return run


class Runs:
    def _runs(self, deploy_id: int, openers_only: bool = False) -> list[dict]:
        where = " AND opens_gate = 1" if openers_only else ""
        rows = self.db.execute(f"SELECT * FROM runs WHERE deploy_id = ?{where} ORDER BY opens_gate DESC, gated, node",
                               (deploy_id,))
        return [public(r) for r in rows]

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

    def _settle(self, deploy_id: int, now: float) -> None:
        """Apply the gate rule after a run changed: move the request, skip gated nodes if it closed.

        Called on every finish, so it must not cost O(nodes): with 1,000 nodes that made a request
        O(nodes²) (7 of 24 server CPU-seconds at 400 agents). The rules read only the keplers' runs in
        full and, of the others, which (opens_gate, state) pairs occur: probed in the index.
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
                self._event(deploy_id, "node", {"node": node, "state": "skipped", "detail": why}, now, node=node)
        self._touch(deploy_id)
        state = rules.request_state(deploy["state"], self._run_kinds(deploy_id))
        if state == deploy["state"]:
            return
        self._touch(deploy_id, moved=True)
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
        rows = self.db.execute(f"WITH k(g, s) AS (VALUES {_KINDS}) SELECT g, s FROM k WHERE EXISTS "
                               "(SELECT 1 FROM runs WHERE deploy_id = ? AND opens_gate = k.g AND state = k.s)",
                               (deploy_id,))
        return [{"opens_gate": bool(r["g"]), "state": r["s"]} for r in rows]

    # -- what an agent asks ------------------------------------------------------------------------------
    def next_for(self, stage: str, node: str) -> dict | None:
        """The newest request this node should act on now, or None."""
        with self.lock:
            self._seen(stage, node)
            rows = self.db.execute(
                "SELECT d.* FROM runs r JOIN deploys d ON d.id = r.deploy_id WHERE r.node = ? AND d.stage = ? "
                "AND r.state = 'waiting' AND d.state != 'CANCELLED' ORDER BY d.id DESC LIMIT 20", (node, stage)).fetchall()
            for row in rows:
                deploy = dict(row)
                if rules.actionable(self._run(deploy, node), deploy["state"]):
                    return self.view(deploy, with_runs=False)
            return None

    def woken_by(self, deploy_id: int) -> list[tuple[str, str]]:
        """(stage, node) of every node that may start this request now, keplers first: whose polls to wake."""
        with self.lock:
            rows = self.db.execute(
                "SELECT d.stage, r.node FROM runs r JOIN deploys d ON d.id = r.deploy_id WHERE r.deploy_id = ? "
                "AND r.state = 'waiting' AND d.state != 'CANCELLED' AND (r.gated = 0 OR d.state IN ('ALLOWED', 'DONE')) "
                "ORDER BY r.opens_gate DESC", (deploy_id,))
            return [(r["stage"], r["node"]) for r in rows]

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
        deploy = self._require(deploy_id, lock=True, stage=stage)
        return deploy, self._run(deploy, node, lock=True)

    def start(self, deploy_id: int, stage: str, node: str) -> dict:
        """A node begins its run; 409 if it already did (a restarted agent never runs a request twice)."""
        with self._write():
            deploy, run = self._node_run(deploy_id, stage, node)
            if deploy["state"] == rules.CANCELLED:
                raise ApiError(409, f"deploy {deploy_id} was {deploy['detail']}", cancelled=True)
            if run["state"] != rules.WAITING:
                raise ApiError(409, f"node {node} already has run {deploy_id}: it is {run['state']}")
            if not rules.actionable(run, deploy["state"]):
                raise ApiError(409, f"deploy {deploy_id} is {deploy['state']}: node {node} waits for the gate")
            now = self.clock()
            self.db.execute("UPDATE runs SET state = 'running', started_at = ?, updated_at = ?, stalled_at = NULL "
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
                self._event(old, "node", {"node": node, "state": "skipped", "detail": why}, now, node=node)
                self._settle(old, now)
            if deploy["taken_by"] is None:
                self.db.execute("UPDATE deploys SET taken_by = ? WHERE id = ?", (node, deploy_id))
            self._event(deploy_id, "node", {"node": node, "state": "running"}, now, node=node)
            if deploy["state"] == rules.PENDING:  # a start can only move PENDING to TAKEN (rules.request_state)
                self._settle(deploy_id, now)
            self._touch(deploy_id)
            run = public(self._run(self._deploy(deploy_id), node))
        return run

    def finish_run(self, deploy_id: int, stage: str, node: str, body: dict) -> dict:
        """A node's run ended: ok, failed or interrupted; the gate rule is applied at once."""
        result = body.get("result")
        if result not in (rules.OK, rules.NODE_FAILED, rules.INTERRUPTED):
            raise ApiError(400, "'result' must be 'ok', 'failed' or 'interrupted'")
        with self._write():
            deploy, run = self._node_run(deploy_id, stage, node)
            told = {"cancelled": True} if deploy["state"] == rules.CANCELLED else {}
            if run["state"] in rules.NODE_FINAL:
                if run["state"] == result:
                    return {**public(run), **told}  # a retried report after a lost answer: nothing to do
                raise ApiError(409, f"node {node} already ended deploy {deploy_id} as {run['state']}", **told)
            if run["state"] == rules.WAITING and result == rules.OK:
                raise ApiError(409, f"node {node} never started deploy {deploy_id}", **told)
            now = self.clock()
            detail, step = text(body.get("detail")), text(body.get("step"), MAX_NAME) or run["step"]
            revision = text(body.get("revision"), 64) or None
            self.db.execute("UPDATE runs SET state = ?, step = ?, detail = ?, revision = ?, ended_at = ?, "
                            "updated_at = ?, stalled_at = NULL WHERE deploy_id = ? AND node = ?",
                            (result, step, detail, revision, now, now, deploy_id, node))
            self._event(deploy_id, "node", {"node": node, "state": result, "step": step, "detail": detail,
                                            "revision": revision}, now, node=node)
            self._settle(deploy_id, now)
            run = public(self._run(self._deploy(deploy_id), node))
        return {**run, **told}

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
                why = text(body.get("detail")) or f"the agent restarted during {step or 'its first step'}"
                self.db.execute("UPDATE runs SET state = 'interrupted', detail = ?, ended_at = ?, updated_at = ?, "
                                "stalled_at = NULL WHERE deploy_id = ? AND node = ?", (why, now, now, deploy_id, node))
                self._event(deploy_id, "node", {"node": node, "state": "interrupted", "step": step, "detail": why},
                            now, node=node)
                self._settle(deploy_id, now)
                cut.append(deploy_id)
            self._seen(stage, node)
        return {"node": node, "stage": stage, "interrupted": cut}
