"""Deploy requests: creating them, moving push requests, cancelling pull requests, showing them.

A mixin of ``Store`` (``store.py``): it uses the store's ``db``, ``_write``, ``_require`` and friends.
"""
from __future__ import annotations

from ..accesspoint import rules, wire
from .checks import MAX_LINE, MAX_NAME, MAX_NODES, ApiError, flag, name, plain, roles, text

#: What a pull request asks its nodes to do: deploy the branch, or roll back to ``revision``.
KINDS = wire.REQUEST_KINDS

#: state -> states it may move to, for push requests (pull requests follow rules.request_state)
TRANSITIONS = {"PENDING": {"TAKEN", "FAILED"}, "TAKEN": {"ALLOWED", "DONE", "FAILED"},
               "ALLOWED": {"DONE", "FAILED"}, "DONE": set(), "FAILED": set(), rules.CANCELLED: set()}


class Requests:
    def create(self, body: dict) -> dict:
        stage, branch = name(body, "stage"), plain(body.get("branch"), "branch")
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
                (stage, branch, text(body.get("revision"), 64) or None, text(body.get("requested_by"), 128) or None,
                 now, now, mode, text(body.get("message")) or None, kind)).fetchone()["id"]
            self.db.executemany("INSERT INTO runs (deploy_id, node, roles, gated, opens_gate, state) "
                                "VALUES (?, ?, ?, ?, ?, 'waiting')",
                                [(deploy_id, n["node"], ",".join(n["roles"]), int(n["gated"]), int(n["opens_gate"]))
                                 for n in nodes or []])
            self._event(deploy_id, "created", {k: text(body.get(k), MAX_LINE) or None
                                               for k in ("stage", "branch", "revision", "requested_by", "message")},
                        now)
            if nodes is not None:
                self._settle(deploy_id, now)
            self._touch(deploy_id, moved=True)
            self._prune(stage)
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
            node = name(n, "node")
            try:
                checked = {"node": node, "roles": roles(n.get("roles")), "gated": flag(n, "gated"),
                           "opens_gate": flag(n, "opens_gate")}
            except ApiError as e:
                raise ApiError(400, f"node {node}: {e.message}") from None
            if not isinstance(n.get("roles"), list):
                raise ApiError(400, f"node {node}: 'roles' must be a list of role names")
            if node in seen:
                raise ApiError(400, f"node {node} is listed twice")
            seen.add(node)
            out.append(checked)
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

    def cancel(self, deploy_id: int, body: dict) -> dict:
        """A pull request stops being handed out: CANCELLED for good, waiting nodes skipped, running ones told.

        Runs already running go on until their agent sees ``"cancelled": true`` in an answer and finishes
        (docs/access-point.md, *Cancelling a request*). Cancelling again answers the same request.
        """
        by, reason = text(body.get("by"), MAX_NAME) or "the API key", text(body.get("reason"), 500)
        with self._write():
            deploy = self._require(deploy_id, lock=True)
            if deploy.get("mode") != "pull":
                raise ApiError(409, f"deploy {deploy_id} is a push request: stop the `pampa deploy` that runs it")
            if deploy["state"] == rules.CANCELLED:
                return self.view(deploy)
            live = self.db.execute("SELECT COUNT(*) AS n FROM runs WHERE deploy_id = ? AND state IN ('waiting', "
                                   "'running')", (deploy_id,)).fetchone()["n"]
            if not live:
                raise ApiError(409, f"deploy {deploy_id} already ended as {deploy['state']}: nothing to cancel")
            now, detail = self.clock(), f"cancelled by {by}" + (f": {reason}" if reason else "")
            waiting = [r["node"] for r in self.db.execute("SELECT node FROM runs WHERE deploy_id = ? AND state = "
                                                          "'waiting' ORDER BY node", (deploy_id,))]
            self.db.execute("UPDATE runs SET state = 'skipped', detail = ?, ended_at = ? WHERE deploy_id = ? AND "
                            "state = 'waiting'", (f"{detail}; not touched", now, deploy_id))
            for node in waiting:
                self._event(deploy_id, "node", {"node": node, "state": "skipped", "detail": f"{detail}; not touched"},
                            now, node=node)
            self.db.execute("UPDATE deploys SET state = ?, detail = ?, ended_at = ?, updated_at = ? WHERE id = ?",
                            (rules.CANCELLED, detail, now, now, deploy_id))
            self._event(deploy_id, "cancelled", {"detail": detail, "by": by}, now)
            self._touch(deploy_id, moved=True)
            deploy = self._deploy(deploy_id)
        return self.view(deploy)

    def get(self, deploy_id: int, stage: str | None = None) -> dict:
        with self.lock:
            return self.view(self._require(deploy_id, stage=stage))

    def get_row(self, deploy_id: int) -> dict:
        """The request's own row (404 if none): what scope checks need, not its runs."""
        with self.lock:
            return self._require(deploy_id)

    def list(self, stage: str | None, state: str | None) -> list[dict]:
        query, params = "SELECT * FROM deploys WHERE 1=1", []
        if stage:
            query, params = query + " AND stage = ?", params + [stage]
        if state:
            query, params = query + " AND state = ?", params + [state]
        with self.lock:
            return [dict(r) for r in self.db.execute(query + " ORDER BY id DESC LIMIT 100", params)]

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
