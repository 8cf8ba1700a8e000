"""Nodes: the version each reports, and the tokens that say which node of which stage is calling.

A mixin of ``Store`` (``store.py``). A node's roles are what the access point knows of it (the
request's node list, or the roles its token was issued for), never what the node says: rollback
trusts the roles recorded here, so a newton must not be able to record itself as a kepler.
"""
from __future__ import annotations

import hashlib
import secrets

from .checks import ApiError, integer, name, roles, text


def digest(token: str) -> str:
    """Tokens are stored as SHA-256 digests: the database never holds a usable credential."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class Nodes:
    def report(self, node: str, body: dict, scope: dict | None = None) -> dict:
        """A node runs ``revision`` now. ``scope``: the node token's (stage, node, roles); None for the API key.

        A node token reports into its own stage only, and into a request only if that request exists,
        is of its stage and lists it; its roles are the request's for it, else its token's.
        """
        stage = name(body, "stage")
        revision = body.get("revision")
        if not isinstance(revision, str) or not revision:
            raise ApiError(400, "'stage' and 'revision' are required")
        revision = text(revision, 64)
        deploy_id = integer(body.get("deploy_id"), "deploy_id")
        if scope is not None and stage != scope["stage"]:
            raise ApiError(403, f"this token is for stage {scope['stage']}, not {stage}")
        with self._write():
            now = self.clock()
            run = None
            if deploy_id is not None:
                deploy = self._require(deploy_id, lock=True, stage=scope["stage"] if scope else None)
                if scope is not None:
                    run = self._run(deploy, node, lock=True)  # 404 unless the request lists this node
            if scope is None:
                recorded = roles(body.get("roles"))
            else:
                recorded = run["roles"].split(",") if run and run["roles"] else list(scope["roles"])
            self.db.execute("INSERT INTO nodes (node, stage, revision, roles, deploy_id, reported_at) VALUES "
                            "(?, ?, ?, ?, ?, ?) ON CONFLICT (node, stage) DO UPDATE SET revision = excluded.revision, "
                            "roles = excluded.roles, deploy_id = excluded.deploy_id, reported_at = excluded.reported_at",
                            (node, stage, revision, ",".join(recorded), deploy_id, now))
            if deploy_id is not None and (run is None or run["events"] < self.quotas.events_per_run):
                self._event(deploy_id, "version", {"node": node, "stage": stage, "revision": revision}, now,
                            node=node if run else None)
                if run is not None:
                    self.db.execute("UPDATE runs SET events = events + 1 WHERE deploy_id = ? AND node = ?",
                                    (deploy_id, node))
            self._touch(deploy_id)
        return {"node": node, "stage": stage, "revision": revision, "roles": recorded, "deploy_id": deploy_id,
                "reported_at": now}

    def nodes(self, stage: str | None) -> list[dict]:
        with self.lock:
            rows = self.db.execute("SELECT * FROM nodes" + (" WHERE stage = ?" if stage else "") + " ORDER BY node",
                                   (stage,) if stage else ())
            return [{**dict(r), "seen_at": self.seen.get((r["stage"], r["node"]))} for r in rows]

    def issue_token(self, body: dict) -> dict:
        """A new token for one node of one stage (replacing its old one); shown once, stored as a digest."""
        stage, node = name(body, "stage"), name(body, "node")
        granted = roles(body.get("roles"))
        token = "pnt_" + secrets.token_urlsafe(32)
        with self._write():
            old = self.db.execute("DELETE FROM tokens WHERE stage = ? AND node = ?", (stage, node)).rowcount
            self.db.execute("INSERT INTO tokens (digest, stage, node, roles, created_at) VALUES (?, ?, ?, ?, ?)",
                            (digest(token), stage, node, ",".join(granted), self.clock()))
            self._revoke(stage, node)
        # "replaced": the node's earlier token stopped working now (whoever holds it must be given this one).
        return {"token": token, "stage": stage, "node": node, "roles": granted, "replaced": bool(old and old > 0)}

    def token_scope(self, token: str) -> dict | None:
        """The (stage, node, roles) a node token is for, or None. Looked up by digest, not compared."""
        with self.lock:
            row = self.db.execute("SELECT stage, node, roles FROM tokens WHERE digest = ?", (digest(token),)).fetchone()
        if row is None:
            return None
        return {"stage": row["stage"], "node": row["node"], "roles": row["roles"].split(",") if row["roles"] else []}
