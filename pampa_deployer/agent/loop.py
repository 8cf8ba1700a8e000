"""The agent's life: take the node lock, settle what a previous agent left, then long-poll and deploy.

One request at a time, newest first. A request the server says this node already ran is
never run again (``start`` answers 409). Whatever stops the agent (SIGTERM from systemd,
Ctrl-C, a crash), the journal tells the next agent what was cut short, and the pgid file names
the command it left running, which the next agent stops.

Nothing the access point answers can crash it: an answer of the wrong shape is one log line and
the usual back-off; polls are at least ``min_poll`` seconds apart whatever the server does; a 401
or a change of the token file makes it read the token again.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, TextIO

from ..accesspoint.client import Stopped, cancelled, interruptible
from ..engine.backends.local import stop_left_behind
from ..errors import AccessPointError, ConfigError
from ..printable import printable
from ..render.plain import stamp
from . import cutshort
from .backoff import Backoff
from .journal import Journal
from .nodelock import NodeLock
from .run import Run
from .runstop import AgentStop
from .token import TokenFile

#: Seconds one long poll waits at the server (the server caps it at 30).
POLL_WAIT = 25.0
#: Seconds at least between two polls, however fast the server answers.
MIN_POLL = 1.0
#: Seconds between looks at the token file while the agent waits (a refused token, a back-off).
TOKEN_LOOK = 2.0


class Agent:
    """``run()`` until ``stop`` is set; ``load_stage(branch)`` reads the stage files afresh for each request."""

    def __init__(self, node: str, stage_name: str, load_stage: Callable[[str | None], object], client,
                 stop: AgentStop, state_dir: Path, out: TextIO | None = None, poll_wait: float = POLL_WAIT,
                 home: str | None = None, token: TokenFile | None = None, grace: float = 30.0,
                 min_poll: float = MIN_POLL):
        self.node, self.stage_name, self.load_stage = node, stage_name, load_stage
        self.client, self.stop = client, stop
        self.state_dir = Path(state_dir)
        self.journal = Journal(self.state_dir / f"{stage_name}-{node}.json")
        self.lock = NodeLock(self.state_dir / f"{stage_name}-{node}.lock", node)
        self.pgid_file = self.state_dir / f"{stage_name}-{node}.pgid"
        self.out = out or sys.stdout
        self.poll_wait, self.min_poll = poll_wait, min_poll
        self.home, self.token, self.grace = home, token, grace
        self.backoff = Backoff()
        self._told_unreachable = False
        self._token_problem: str | None = None
        self._settled = False

    def say(self, message: str) -> None:
        """One line of the agent's log; whatever the access point or a command said in it is made printable."""
        self.out.write(f"{stamp(time.time())} {self.node} agent {printable(message)}\n")
        self.out.flush()

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> None:
        with self.lock:
            self.say(f"started for stage {self.stage_name}; access point {self.client.url}")
            last_poll = None
            while not self.stop.stopping:
                self.check_token()
                if not self._settled:
                    self._settle()
                    continue
                if last_poll is not None and time.monotonic() - last_poll < self.min_poll:
                    self.stop.soft.wait(self.min_poll - (time.monotonic() - last_poll))
                    continue
                last_poll = time.monotonic()
                deploy = self._poll()
                if deploy is not None and not self.stop.stopping:
                    self._deploy(deploy)
            self.say("stopped")

    def _call(self, fn, *args, **kwargs):
        return interruptible(self.stop, fn, *args, **kwargs)

    def _unreachable(self, e: AccessPointError) -> None:
        if e.status == 401 and self.check_token(force=True):
            return  # a new token: try again at once
        delay = self.backoff.next_delay() if e.unreachable else 60.0
        if not self._told_unreachable or not e.unreachable:
            self.say(f"{e.message}; retrying in {delay:.0f}s" + ("" if e.unreachable else
                                                                   " (fix the token or the stage)"))
        self._told_unreachable = e.unreachable
        self._pause(delay)

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` (or until stopped), looking at the token file now and then: a new token ends it."""
        deadline = time.monotonic() + seconds
        while not self.stop.stopping:
            left = deadline - time.monotonic()
            if left <= 0 or self.stop.soft.wait(min(left, TOKEN_LOOK)) or self.check_token():
                return

    def _ok(self) -> None:
        if self._told_unreachable:
            self.say("access point reachable again")
        self._told_unreachable = False
        self.backoff.reset()

    def check_token(self, force: bool = False) -> bool:
        """Read the token file again if it changed (or ``force``); True when a new token is now used."""
        if self.token is None:
            return False
        try:
            new = self.token.changed(force)
        except ConfigError as e:
            if e.message != self._token_problem:
                self.say(f"{e.message}; still using the token read before")
            self._token_problem = e.message
            return False
        self._token_problem = None
        if new is None:
            return False
        self.client.set_credential(new)
        self.say(f"token file {self.token.path} changed: using the new token")
        self.backoff.reset()
        return True

    # -- settling what a previous agent left --------------------------------------------------------
    def _settle(self) -> None:
        """Stop what a dead agent left running, report the journal's run (cut short, or finished but
        unreported), then say hello."""
        stopped = stop_left_behind(self.pgid_file)
        if stopped is not None:
            self.say(f"a command the previous agent started was still running (process group {stopped}); "
                     "stopped it")
        entry = self.journal.read()
        try:
            if entry is not None:
                if entry.get("state") == "running":
                    detail = self._cut_short(entry, stopped)
                    entry = {**entry, "state": "finished", "result": "interrupted", "detail": detail}
                    self.journal.write(**entry)
                    self.say(f"request {entry['deploy_id']} was cut short ({detail}); reporting it as interrupted")
                self._call(self.send_outcome, entry)
                self.journal.clear()
            self._call(self.client.hello, self.node)
            self._settled = True
            self._ok()
        except Stopped:
            return
        except AccessPointError as e:
            self._unreachable(e)

    def _cut_short(self, entry: dict, stopped: int | None) -> str:
        """The detail of a run a previous agent did not finish: its step, where ``current`` is now, and
        whether its command was still running."""
        root = entry.get("release_root")
        release = (entry.get("current_before"), cutshort.read_current(self.node, self.home, root)) if root else None
        said = cutshort.detail(entry.get("step"), release)
        return said + ("; its command was still running and was stopped" if stopped is not None else "")

    def send_outcome(self, entry: dict) -> None:
        """Deliver a finished run's version report (if the run could not) and its outcome."""
        unsent = entry.get("unsent")
        if unsent:
            try:
                self.client.report_version(unsent["node"], unsent["stage"], unsent["revision"],
                                           tuple(unsent.get("roles") or ()), entry["deploy_id"])
                self.say(f"request {entry['deploy_id']}: version {unsent['revision'][:12]} reported (late)")
            except AccessPointError as e:
                if e.unreachable:
                    raise
                self.say(f"request {entry['deploy_id']}: version report refused: {e.message}")
            entry.pop("unsent")
            self.journal.write(**entry)
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
        if deploy["cancelled"]:
            self.say(f"request {deploy_id} is cancelled; not starting it")
            return
        try:
            answer = self._call(self.client.start_run, deploy_id, self.node)
        except Stopped:
            return
        except AccessPointError as e:
            if e.status == 409:
                self.say(f"request {deploy_id}: {e.message}")
                return
            self._unreachable(e)
            return
        self.journal.write(deploy_id=deploy_id, state="running", step=None, started=time.time())
        if cancelled(answer):
            entry = {"deploy_id": deploy_id, "state": "finished", "result": "interrupted",
                     "detail": f"{Run(self, deploy).who_cancelled()} before any step ran"}
        else:
            entry = Run(self, deploy).carry_out()
        self.journal.write(**entry)
        self.say(f"request {deploy_id}: {entry['result']}" + (f" at {entry['step']}" if entry.get("step") else "")
                 + (f": {entry['detail']}" if entry.get("detail") and entry["result"] != "ok" else ""))
        self._deliver(entry)

    def _deliver(self, entry: dict) -> None:
        """Tell the access point how the run ended; retry with back-off until it knows.

        When the agent is stopping it tries three times; if the outcome is still not delivered,
        the journal keeps it and the next agent start reports it.
        """
        attempts_while_stopping = 0
        while True:
            try:
                self.send_outcome(entry)  # bounded by the client's timeout
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
