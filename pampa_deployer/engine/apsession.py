"""The access point's side of one run, in one place: register (create + take), allow, report, finish, abandon.

The engine talks to the access point only through this object. A dry run, or a stage
without ``access_point.url``, has no session (``None``): nothing is registered or reported.

Requests a dead deploy left open (TAKEN or ALLOWED) are closed as abandoned by the next deploy
that holds the lock. With ``optional`` (``access_point.optional``, ``--access-point-optional``), an
access point that cannot be *reached* does not stop the run: the first failure is announced loudly,
nothing more is sent to it, and ``unreported`` lists what it never heard (for the summary and report).
An access point that answers with an error (a wrong key) still fails as usual: that is not an outage.
"""
from __future__ import annotations

from typing import Callable, Protocol

from ..accesspoint.client import AccessPointClient
from ..errors import AccessPointError


class Session(Protocol):
    """What a run asks of its access point: the stage's own (``AccessPointSession``), or a pull-mode
    node's (``agent/runner.NodeSession``), which reports into a request the developer registered."""

    deploy_id: int | None
    down: str | None         # why the access point could not be reached (optional mode), or None
    unreported: list[str]    # what it was never told, for the summary and the report

    def register(self, stage: str, branch: str, revision: str | None, requested_by: str, node: str,
                 lock_held: bool = False, message: str | None = None) -> int | None: ...

    def allow(self) -> None: ...

    def report(self, node: str, stage: str, revision: str, roles: tuple[str, ...]) -> None: ...

    def finish(self, ok: bool, detail: str = "") -> None: ...

    def abandon(self, detail: str) -> None: ...


class AccessPointSession:
    """One deploy request on the access point, from registration to its finish."""

    def __init__(self, client: AccessPointClient, warn: Callable[[str], None], optional: bool = False):
        self.client = client
        self.warn = warn
        self.optional = optional
        self.deploy_id: int | None = None
        self.finished = False
        self.down: str | None = None  # why the access point could not be reached (optional mode)
        self.unreported: list[str] = []

    @classmethod
    def for_stage(cls, stage, warn: Callable[[str], None], optional: bool | None = None
                  ) -> "AccessPointSession | None":
        client = AccessPointClient.from_stage(stage)
        if client is None:
            return None
        return cls(client, warn, stage.access_point.optional if optional is None else optional)

    def _outage(self, what: str, error: AccessPointError | None = None) -> bool:
        """True (and ``what`` recorded as not reported) when the run goes on without the access point."""
        if self.down is None:
            if error is None or not (self.optional and error.unreachable):
                return False
            self.down = error.message
            self.warn(f"ACCESS POINT UNREACHABLE: {error.message}. Going on without it (access_point.optional): "
                      "nothing more is sent to it in this run; the summary lists what it was not told")
        self.unreported.append(what)
        return True

    def close_abandoned(self, stage: str) -> None:
        """Requests left TAKEN or ALLOWED by a deploy that died; the caller holds the lock, so none is live."""
        for d in self.client.deploys(stage):
            if d.get("state") not in ("TAKEN", "ALLOWED") or d.get("mode") == "pull":  # agents own pull requests
                continue
            self.client.finish(d["id"], "failed", f"abandoned: the deploy that took it (requested by "
                               f"{d.get('requested_by') or '?'}, taken by {d.get('taken_by') or '?'}) ended without "
                               "closing it; closed by the next deploy")
            self.warn(f"access point: deploy request {d['id']} was left {d['state']} by a deploy that died; "
                      "closed it as abandoned")

    def register(self, stage: str, branch: str, revision: str | None, requested_by: str, node: str,
                 lock_held: bool = False, message: str | None = None) -> int | None:
        """Create the deploy request (with the run's ``-m``) and take it for ``node`` (the lock host); raises AccessPointError
        (or, optional and unreachable, returns None and the run goes on unregistered)."""
        what = "the deploy request (registration, ALLOWED, final result)"
        if self.down is not None:
            self._outage(what)
            return None
        try:
            if lock_held:
                self.close_abandoned(stage)
            request = self.client.create_deploy(stage, branch, requested_by, revision, message)
        except AccessPointError as e:
            if self._outage(what, e):
                return None
            if e.unreachable:  # the run stops before any command: say how to go on without it, this once
                raise AccessPointError(f"{e.message}; nothing was changed. To go on without it this once: "
                                       "--access-point-optional", e.status, e.unreachable) from None
            raise
        self.deploy_id = request["id"]
        try:
            self.client.take(self.deploy_id, node)
        except AccessPointError as e:
            self.abandon(f"could not take the request: {e.message}")
            raise
        return self.deploy_id

    def allow(self) -> None:
        """The kepler gate opened: the request becomes ALLOWED (a failure is a warning, not a stop)."""
        if self.deploy_id is None:
            return
        try:
            self.client.allow(self.deploy_id)
        except AccessPointError as e:
            self.warn(f"gate opened, but marking the deploy ALLOWED failed: {e}")

    def report(self, node: str, stage: str, revision: str, roles: tuple[str, ...]) -> None:
        """A host's version after its steps; raises AccessPointError (the host's step fails) unless
        the run goes on without the access point."""
        what = f"version of {node}: {revision[:12]}"
        if self.down is not None:
            self._outage(what)
            return
        try:
            self.client.report_version(node, stage, revision, roles, self.deploy_id)
        except AccessPointError as e:
            if not self._outage(what, e):
                raise

    def finish(self, ok: bool, detail: str = "") -> None:
        """Close the request as done or failed (a failure is a warning: the run already ended)."""
        if self.deploy_id is None or self.finished:
            return
        self.finished = True
        try:
            self.client.finish(self.deploy_id, "done" if ok else "failed", "" if ok else detail)
        except AccessPointError as e:
            self.warn(f"could not mark the deploy finished: {e}")

    def abandon(self, detail: str) -> None:
        """The run ends without a result (refused, crashed): close the request as failed, if still open."""
        self.finish(False, f"abandoned: {detail}")
