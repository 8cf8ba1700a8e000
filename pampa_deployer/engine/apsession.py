"""The access point's side of one run, in one place: register (create + take), allow, report, finish, abandon.

The engine talks to the access point only through this object. A dry run, or a stage
without ``access_point.url``, has no session (``None``): nothing is registered or reported.
"""
from __future__ import annotations

from typing import Callable

from ..accesspoint.client import AccessPointClient
from ..errors import AccessPointError


class AccessPointSession:
    """One deploy request on the access point, from registration to its finish."""

    def __init__(self, client: AccessPointClient, warn: Callable[[str], None]):
        self.client = client
        self.warn = warn
        self.deploy_id: int | None = None
        self.finished = False

    @classmethod
    def for_stage(cls, stage, warn: Callable[[str], None]) -> "AccessPointSession | None":
        client = AccessPointClient.from_stage(stage)
        return cls(client, warn) if client is not None else None

    def register(self, stage: str, branch: str, revision: str | None, requested_by: str, node: str) -> int:
        """Create the deploy request and take it for ``node`` (the lock host); raises AccessPointError."""
        request = self.client.create_deploy(stage, branch, requested_by, revision)
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
        """A host's version after its steps; raises AccessPointError (the host's step fails)."""
        self.client.report_version(node, stage, revision, roles, self.deploy_id)

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
