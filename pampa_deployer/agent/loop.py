"""The agent's life: take the node lock, settle what a previous agent left, then long-poll and deploy.

One request at a time, newest first. A request the server says this node already ran is
never run again (``start`` answers 409). Whatever stops the agent (SIGTERM from systemd,
Ctrl-C, a crash), the journal tells the next agent what was cut short.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, TextIO

from ..accesspoint.client import Stopped, interruptible, request_run_id
from ..engine import events as ev
from ..engine.results import INTERRUPTED, OK, SKIPPED
from ..errors import AccessPointError, ConfigError, PampaError
from ..render.plain import PlainRenderer, stamp
from . import cutshort
from .backoff import Backoff
from .journal import Journal
from .nodelock import NodeLock
from .reporter import Reporter
from .runner import run_sequence

#: Seconds one long poll waits at the server (the server caps it at 30).
POLL_WAIT = 25.0


class Agent:
    """``run()`` until ``stop`` is set; ``load_stage(branch)`` reads the stage files afresh for each request."""

    def __init__(self, node: str, stage_name: str, load_stage: Callable[[str | None], object], client, stop,
                 state_dir: Path, out: TextIO | None = None, poll_wait: float = POLL_WAIT,
                 home: str | None = None):
        self.node, self.stage_name, self.load_stage = node, stage_name, load_stage
        self.client, self.stop = client, stop
        self.state_dir = Path(state_dir)
        self.journal = Journal(self.state_dir / f"{stage_name}-{node}.json")
        self.lock = NodeLock(self.state_dir / f"{stage_name}-{node}.lock", node)
        self.out = out or sys.stdout
        self.poll_wait = poll_wait
        self.home = home
        self.backoff = Backoff()
        self._told_unreachable = False
        self._settled = False

    def say(self, message: str) -> None:
        self.out.write(f"{stamp(time.time())} {self.node} agent {message}\n")
        self.out.flush()

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> None:
        with self.lock:
            self.say(f"started for stage {self.stage_name}; access point {self.client.url}")
            while not self.stop.stopping:
                if not self._settled:
                    self._settle()
                    if not self._settled:
                        continue
                deploy = self._poll()
                if deploy is not None and not self.stop.stopping:
                    self._deploy(deploy)
            self.say("stopped")

    def _call(self, fn, *args, **kwargs):
        return interruptible(self.stop, fn, *args, **kwargs)

    def _unreachable(self, e: AccessPointError) -> None:
        delay = self.backoff.next_delay() if e.unreachable else 60.0
        if not self._told_unreachable or not e.unreachable:
            self.say(f"{e.message}; retrying in {delay:.0f}s" + ("" if e.unreachable else
                                                                   " (fix the token or the stage)"))
        self._told_unreachable = e.unreachable
        self.stop.soft.wait(delay)

    def _ok(self) -> None:
        if self._told_unreachable:
            self.say("access point reachable again")
        self._told_unreachable = False
        self.backoff.reset()

    # -- settling what a previous agent left --------------------------------------------------------
    def _settle(self) -> None:
        """Report the journal's run (cut short, or finished but unreported), then say hello."""
        entry = self.journal.read()
        try:
            if entry is not None:
                if entry.get("state") == "running":
                    detail = self._cut_short(entry)
                    entry = {**entry, "state": "finished", "result": INTERRUPTED, "detail": detail}
                    self.journal.write(**entry)
                    self.say(f"request {entry['deploy_id']} was cut short ({detail}); reporting it as interrupted")
                self._call(self._send_finish, entry)
                self.journal.clear()
            self._call(self.client.hello, self.node)
            self._settled = True
            self._ok()
        except Stopped:
            return
        except AccessPointError as e:
            self._unreachable(e)

    def _cut_short(self, entry: dict) -> str:
        """The detail of a run a previous agent did not finish: its step, and where ``current`` is now."""
        root = entry.get("release_root")
        release = (entry.get("current_before"), cutshort.read_current(self.node, self.home, root)) if root else None
        return cutshort.detail(entry.get("step"), release)

    def _send_finish(self, entry: dict) -> None:
        try:
            self.client.finish_run(entry["deploy_id"], self.node, entry["result"], entry.get("step"),
                                   entry.get("detail") or "", entry.get("revision"))
        except AccessPointError as e:
            if e.status in (404, 409):  # the server already has an outcome, or forgot the request
                self.say(f"request {entry['deploy_id']}: {e.message}")
                return
            raise

    # -- polling and deploying ----------------------------------------------------------------------
    def _poll(self) -> dict | None:
        try:
            deploy = self._call(self.client.next_request, self.node, self.poll_wait)
            self._ok()
            return deploy
        except Stopped:
            return None
        except AccessPointError as e:
            self._unreachable(e)
            return None

    def _deploy(self, deploy: dict) -> None:
        deploy_id = deploy["id"]
        try:
            self._call(self.client.start_run, deploy_id, self.node)
        except Stopped:
            return
        except AccessPointError as e:
            if e.status == 409:
                self.say(f"request {deploy_id}: {e.message}")
                return
            self._unreachable(e)
            return
        self.journal.write(deploy_id=deploy_id, state="running", step=None, started=time.time())
        why = f" ({deploy['message']})" if deploy.get("message") else ""
        what = (f"rolling back to {deploy['revision']}" if deploy.get("kind") == "rollback" else
                f"deploying branch {deploy['branch']}")
        self.say(f"request {deploy_id}: {what} for {deploy.get('requested_by') or '?'}"
                 f"{why}")
        entry = self._run(deploy)
        self.journal.write(**entry)
        self.say(f"request {deploy_id}: {entry['result']}" + (f" at {entry['step']}" if entry.get("step") else "")
                 + (f": {entry['detail']}" if entry.get("detail") and entry["result"] != OK else ""))
        self._deliver(entry)

    def _run(self, deploy: dict) -> dict:
        deploy_id = deploy["id"]
        base = {"deploy_id": deploy_id, "state": "finished"}
        try:
            stage = self.load_stage(deploy.get("branch"))
        except PampaError as e:
            return {**base, "result": "failed", "step": "config", "detail": e.message.splitlines()[0][:500]}
        root = cutshort.release_root(stage, self.node)
        if root is not None:  # before anything runs: a restart compares it with where current is then
            self.journal.update(release_root=root, current_before=cutshort.read_current(self.node, self.home, root))
        bus = ev.EventBus()
        bus.subscribe(PlainRenderer(self.out))
        reporter = Reporter(self.client, deploy_id, self.node,
                            on_step=lambda step: self.journal.update(step=step))
        bus.subscribe(reporter)
        kind = deploy.get("kind") or "deploy"
        try:
            result = run_sequence(stage, self.node, deploy_id, self.client, bus, self.stop, self.home, kind,
                                  deploy.get("revision"), deploy.get("message"),
                                  request_run_id(deploy_id, deploy.get("created_at")))
        except PampaError as e:  # it could not start: bad config, or (rollback) the target is not here
            reporter.close(5)
            step = "config" if isinstance(e, ConfigError) else kind
            return {**base, "result": "failed", "step": step, "detail": e.message.splitlines()[0][:500]}
        reporter.close(10 if self.stop.stopping else 30)
        host = result.hosts[0]
        if host.result == OK:
            outcome = OK
        elif host.result in (INTERRUPTED, SKIPPED) and self.stop.stopping:
            outcome = INTERRUPTED
        else:
            outcome = "failed"
        return {**base, "result": outcome, "step": host.failed_step, "revision": host.revision_after,
                "detail": host.reason if outcome != OK else ""}

    def _deliver(self, entry: dict) -> None:
        """Tell the access point how the run ended; retry with back-off until it knows.

        When the agent is stopping it tries three times; if the outcome is still not delivered,
        the journal keeps it and the next agent start reports it.
        """
        attempts_while_stopping = 0
        while True:
            try:
                self._send_finish(entry)  # bounded by the client's timeout
                self.journal.clear()
                self._ok()
                return
            except AccessPointError as e:
                if not self.stop.stopping:
                    self._unreachable(e)
                    continue
                attempts_while_stopping += 1
                if attempts_while_stopping >= 3:
                    self.say(f"request {entry['deploy_id']}: outcome not delivered ({e.message}); "
                             "the next agent start reports it")
                    return
                time.sleep(1)
