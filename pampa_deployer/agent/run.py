"""One request carried out by the agent: load the stage, run the node's sequence, and say how it ended.

The run has a stop of its own (``AgentStop.for_run``): a signal to the agent stops it, and so does
the request's cancellation, which the access point says in its answers to the node's progress
reports (``"cancelled": true``; a heartbeat every 10 s keeps one coming during a long step). Then no
new step starts, the running command gets the agent's ``--grace`` seconds, and the run ends
``interrupted`` with the detail ``cancelled by WHO; ...``.
"""
from __future__ import annotations

from ..accesspoint import wire
from ..accesspoint.client import request_run_id
from ..engine import events as ev
from ..engine.results import INTERRUPTED, OK, SKIPPED
from ..errors import AccessPointError, ConfigError, PampaError
from ..printable import printable
from ..render.plain import PlainRenderer
from . import cutshort
from .reporter import Reporter
from .runner import run_sequence


class Run:
    """``carry_out()`` returns the journal entry of the finished run (its result, step, detail, revision)."""

    def __init__(self, agent, deploy: dict):
        self.agent, self.deploy = agent, deploy
        self.deploy_id = deploy["id"]

    def carry_out(self) -> dict:
        agent, deploy = self.agent, self.deploy
        base = {"deploy_id": self.deploy_id, "state": "finished"}
        why = f" ({deploy['message']})" if deploy.get("message") else ""
        what = (f"rolling back to {deploy['revision']}" if deploy.get("kind") == "rollback" else
                f"deploying branch {deploy.get('branch') or 'of the stage'}")
        agent.say(f"request {self.deploy_id}: {what} for {deploy.get('requested_by') or '?'}{why}")
        try:
            stage = agent.load_stage(deploy.get("branch"))
        except PampaError as e:
            return {**base, "result": "failed", "step": "config", "detail": e.message.splitlines()[0][:500]}
        root = cutshort.release_root(stage, agent.node)
        if root is not None:  # before anything runs: a restart compares it with where current is then
            agent.journal.update(release_root=root,
                                 current_before=cutshort.read_current(agent.node, agent.home, root))
        stop = agent.stop.for_run()
        try:
            return {**base, **self._sequence(stage, stop)}
        finally:
            agent.stop.run_ended()

    def _sequence(self, stage, stop) -> dict:
        agent, deploy = self.agent, self.deploy
        bus = ev.EventBus()
        bus.subscribe(PlainRenderer(agent.out))
        reporter = Reporter(agent.client, self.deploy_id, agent.node,
                            on_step=lambda step: agent.journal.update(step=step), on_cancel=self.cancel)
        bus.subscribe(reporter)
        kind = deploy.get("kind") or "deploy"
        try:
            result, unsent = run_sequence(stage, agent.node, self.deploy_id, agent.client, bus, stop, agent.home,
                                          kind, deploy.get("revision"), agent.pgid_file, deploy.get("message"),
                                          request_run_id(self.deploy_id, deploy.get("created_at")))
        except PampaError as e:  # it could not start: bad config, or (rollback) the target is not here
            reporter.close(5)
            step = "config" if isinstance(e, ConfigError) else kind
            return {"result": "failed", "step": step, "detail": e.message.splitlines()[0][:500]}
        reporter.close(10 if stop.stopping else 30)
        host = result.hosts[0]
        if host.result == OK:
            outcome = OK
        elif host.result in (INTERRUPTED, SKIPPED) and stop.stopping:
            outcome = INTERRUPTED
        else:
            outcome = "failed"
        detail = host.reason if outcome != OK else ""
        if outcome == INTERRUPTED and agent.stop.cancelled_by:
            detail = f"{agent.stop.cancelled_by}; {detail or 'interrupted'}"
        entry = {"result": outcome, "step": host.failed_step, "revision": host.revision_after, "detail": detail}
        if unsent is not None:
            entry["unsent"] = unsent
        return entry

    def cancel(self) -> None:
        """The access point says the request was cancelled (from the reporter's thread)."""
        if self.agent.stop.cancelling():
            return
        why = self.who_cancelled()
        if self.agent.stop.cancel(why, self.agent.grace):
            self.agent.say(f"request {self.deploy_id}: {why}: starting no new step; the running command gets "
                           f"{self.agent.grace:g}s to finish")

    def who_cancelled(self) -> str:
        """``cancelled by WHO[: reason]``, as the request's detail says (the answers only say that it was)."""
        try:
            detail = wire.text(self.agent.client.deploy(self.deploy_id).get("detail"), 300)
        except AccessPointError:
            detail = ""
        return printable(detail) if detail.startswith("cancelled") else "cancelled"
