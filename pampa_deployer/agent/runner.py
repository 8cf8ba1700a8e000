"""Run this node's sequence locally: the same Deployment, plan, step builders and executor as ``pampa deploy``.

The only differences from a push deploy: commands run on this machine (``LocalBackend``), the
run has one host (this node) and no stage lock (the agent holds the node's lock), the gate is
kept by the access point (a gated node only ever starts an ALLOWED request), and the access point
session reports into the existing pull request with the node's own token.
"""
from __future__ import annotations

from pathlib import Path

from ..engine import events as ev
from ..engine.apsession import VersionReports
from ..engine.backends.local import LocalBackend
from ..engine.deployment import Deployment, DeployRequest


class NodeSession:
    """The engine's access point session (``engine.apsession.Session``) for one node of one pull request.

    Its version report rides out a short outage like a push deploy's (``VersionReports``); one still
    not delivered is kept in ``unsent``, which the agent writes in its journal and delivers with the
    run's outcome.
    """

    def __init__(self, client, deploy_id: int, reports: VersionReports):
        self.client, self.deploy_id = client, deploy_id
        self.reports = reports
        self.unreported = reports.unreported
        self.unsent: dict | None = None

    @property
    def down(self) -> str | None:
        return self.reports.reason

    def register(self, stage: str, branch: str, revision, requested_by: str, node: str,
                 lock_held: bool = False, message: str | None = None) -> int:
        """Nothing to register: the developer's `pampa request` did, and this node started it."""
        return self.deploy_id

    def allow(self) -> None:
        """Nothing to do: the server opens the gate itself when every kepler reported success."""

    def report(self, node: str, stage: str, revision: str, roles: tuple[str, ...]) -> None:
        if not self.reports.send(node, stage, revision, roles, self.deploy_id):
            self.unsent = {"node": node, "stage": stage, "revision": revision, "roles": list(roles)}

    def finish(self, ok: bool, detail: str = "") -> None:
        """The agent reports its node's outcome itself (``finish_run``), after the run."""

    def abandon(self, detail: str) -> None:
        """As ``finish``: the agent's journal and ``finish_run`` say how the run ended."""


def run_sequence(stage, node: str, deploy_id: int, client, bus, stop, home: str | None = None,
                 kind: str = "deploy", revision: str | None = None, pgid_file: Path | None = None,
                 message: str | None = None, run_id: str | None = None):
    """Deploy this node (or roll it back to ``revision``); returns the engine's RunResult (one host) and
    the version report the access point could not take (None when it did).

    A rollback's target was chosen for the whole fleet when it was requested; the engine
    only checks that this node holds it (an intact release, or the commit) before changing
    anything, exactly as ``pampa rollback --to`` checks each host. ``pgid_file`` names the
    running command's process group, so the next agent can stop it if this one dies.

    The run's id is the request's (``accesspoint.client.request_run_id``) and its message the request's,
    so the node's revision-log line joins its request in ``pampa history``.
    """
    request = DeployRequest(stage=stage, kind=kind, to=revision, fleet_target=kind == "rollback",
                            hosts=(node,), lock=False, handle_signals=False, message=message,
                            run_id=run_id or f"request-{int(deploy_id)}")
    warn = lambda text: bus.emit(ev.Notice(message=text, level="warning"))  # noqa: E731
    session = NodeSession(client, deploy_id, VersionReports.for_stage(client, stage, warn, stop))
    deployment = Deployment(request, bus, stop, backends=lambda host: LocalBackend(host.name, home, pgid_file),
                            access_point=session)
    return deployment.run().result, session.unsent
