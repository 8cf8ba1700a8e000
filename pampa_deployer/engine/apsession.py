"""The access point's side of one run, in one place: register (create + take), allow, report, finish, abandon.

The engine talks to the access point only through this object. A dry run, or a stage
without ``access_point.url``, has no session (``None``): nothing is registered or reported.

Requests a dead deploy left open (TAKEN or ALLOWED) are closed as abandoned by the next deploy
that holds the lock. With ``optional`` (``access_point.optional``, ``--access-point-optional``), an
access point that cannot be *reached* does not stop the run: the first failure is announced loudly,
nothing more is sent to it, and ``unreported`` lists what it never heard (for the summary and report).
An access point that answers with an error (a wrong key) still fails as usual: that is not an outage.

Version reports (``VersionReports``, shared with the pull-mode agent's node session) ride out a short
outage: each is retried with back-off for ``access_point.report_retry`` seconds; one still not
delivered is a warning and a note, not a failed host (the host *is* deployed), unless the stage sets
``access_point.report_required``. After one report gave up, the others of the run try once each, so an
outage costs the run one retry period, not one per host.
"""
from __future__ import annotations

import time
from typing import Callable, Protocol

from ..accesspoint.client import AccessPointClient
from ..errors import AccessPointError

#: Pauses between tries of a version report (seconds; the last repeats) while its retry period lasts.
REPORT_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0)


class Session(Protocol):
    """What a run asks of its access point: the stage's own (``AccessPointSession``), or a pull-mode
    node's (``agent/runner.NodeSession``), which reports into a request the developer registered."""

    deploy_id: int | None
    down: str | None         # why the access point could not be reached (optional mode, or a version
                             # report it could not take in its retry period), or None
    unreported: list[str]    # what it was never told, for the summary and the report

    def register(self, stage: str, branch: str, revision: str | None, requested_by: str, node: str,
                 lock_held: bool = False, message: str | None = None) -> int | None: ...

    def allow(self) -> None: ...

    def report(self, node: str, stage: str, revision: str, roles: tuple[str, ...]) -> None: ...

    def finish(self, ok: bool, detail: str = "") -> None: ...

    def abandon(self, detail: str) -> None: ...


class VersionReports:
    """The version reports of one run: retried through a short outage, then a warning and a note.

    ``send`` raises ``AccessPointError`` when the host's step must fail: the access point *answered*
    with a refusal (4xx), or ``required`` and the report could not be delivered in time. Otherwise an
    undelivered report is added to ``unreported`` (``reason`` says why), and the run goes on.
    """

    def __init__(self, client: AccessPointClient, warn: Callable[[str], None], stop=None, retry: float = 30.0,
                 required: bool = False, unreported: list[str] | None = None):
        self.client, self.warn, self.stop = client, warn, stop
        self.retry, self.required = retry, required
        self.away: str | None = None    # the last report gave up and none was delivered since: try once
        self.reason: str | None = None  # why a report was not delivered (for the note)
        self.unreported = unreported if unreported is not None else []

    @classmethod
    def for_stage(cls, client: AccessPointClient, stage, warn: Callable[[str], None], stop=None,
                  unreported: list[str] | None = None) -> "VersionReports":
        ap = stage.access_point
        return cls(client, warn, stop, ap.report_retry, ap.report_required, unreported)

    def send(self, node: str, stage: str, revision: str, roles: tuple[str, ...], deploy_id: int | None) -> bool:
        """Report; True if delivered, False if not (warned once, listed in ``unreported``)."""
        error = self._deliver(lambda: self.client.report_version(node, stage, revision, roles, deploy_id))
        if error is None:
            return True
        if self.required:
            raise AccessPointError(f"{error.message} (tried for {self.retry:g}s; access_point.report_required)",
                                   error.status, error.unreachable)
        if self.reason is None:
            self.warn(f"ACCESS POINT UNREACHABLE: {error.message}. {node} is deployed; its version report (and any "
                      f"other this run cannot deliver in {self.retry:g}s) is listed as not reported in the summary "
                      "and the report (access_point.report_required: true makes it fail the host)")
        self.away = self.reason = error.message
        self.unreported.append(f"version of {node}: {revision[:12]}")
        return False

    def _deliver(self, call) -> AccessPointError | None:
        """Call until it succeeds (None), is refused (raised), or the retry period is over (the last error).

        While an earlier report of the run gave up, one try only: the access point is known to be away.
        """
        deadline = time.monotonic() + (0.0 if self.away is not None else self.retry)
        attempt = 0
        while True:
            try:
                call()
                self.away = None
                return None
            except AccessPointError as e:
                if not e.unreachable:
                    raise
                pause = REPORT_PAUSES[min(attempt, len(REPORT_PAUSES) - 1)]
                attempt += 1
                if time.monotonic() + pause > deadline or self._stopping(pause):
                    return e

    def _stopping(self, pause: float) -> bool:
        """Sleep ``pause`` seconds; True if the run is being stopped (then no more tries)."""
        if self.stop is None:
            time.sleep(pause)
            return False
        return self.stop.soft.wait(pause)


class AccessPointSession:
    """One deploy request on the access point, from registration to its finish."""

    def __init__(self, client: AccessPointClient, warn: Callable[[str], None], optional: bool = False,
                 stage=None, stop=None):
        self.client = client
        self.warn = warn
        self.optional = optional
        self.deploy_id: int | None = None
        self.finished = False
        self.gone: str | None = None  # optional mode: the access point could not be reached; nothing more is sent
        self.unreported: list[str] = []
        self.reports = VersionReports.for_stage(client, stage, warn, stop, self.unreported) if stage is not None \
            else VersionReports(client, warn, stop, unreported=self.unreported)

    @classmethod
    def for_stage(cls, stage, warn: Callable[[str], None], optional: bool | None = None, stop=None
                  ) -> "AccessPointSession | None":
        client = AccessPointClient.from_stage(stage, warn)
        if client is None:
            return None
        return cls(client, warn, stage.access_point.optional if optional is None else optional, stage, stop)

    @property
    def down(self) -> str | None:
        """Why the access point could not be reached: optional mode, or a version report it never got."""
        return self.gone or self.reports.reason

    def _outage(self, what: str, error: AccessPointError | None = None) -> bool:
        """True (and ``what`` recorded as not reported) when the run goes on without the access point."""
        if self.gone is None:
            if error is None or not (self.optional and error.unreachable):
                return False
            self.gone = error.message
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
        if self.gone is not None:
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
        """A host's version after its steps, retried through a short outage (``VersionReports``); raises
        AccessPointError (the host's step fails) only when the access point refused it or it is required
        (and the run does not go on without the access point)."""
        what = f"version of {node}: {revision[:12]}"
        if self.gone is not None:
            self._outage(what)
            return
        try:
            self.reports.send(node, stage, revision, roles, self.deploy_id)
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
