"""Follow a pull request from the CLI: the access point's events become the engine's events.

So ``pampa request --wait`` shows the same live view, summary, reports and exit codes as
``pampa deploy``, with nodes reporting in instead of SSH sessions. Nothing here is
claimed unseen: a node's result is what it reported, and a node that stopped reporting
ends as ``stalled``, never as ok.

Whatever the access point sends is read through ``accesspoint/wire.py``: a field of the wrong
type, a time that is not a time, a page that is not a page is left out (said once, as a warning),
never a crash. The renderers make the text printable (render/shown.py).
"""
from __future__ import annotations

import time

from ..accesspoint import wire
from ..accesspoint.client import Stopped, interruptible
from ..errors import AccessPointError, ExitCode, exit_code_for
from . import events as ev
from .results import FAILED, INTERRUPTED, OK, SKIPPED, HostResult, RunResult, StepResult, failure_for

STALLED = "stalled"
_FINAL = {"ok": OK, "failed": FAILED, "interrupted": INTERRUPTED, "skipped": SKIPPED}
#: Seconds between polls when the access point is unreachable or answered something unusable.
RETRY = 3.0


def pull_request(answer) -> dict:
    """A pull request as the follower reads it (``wire.request_view``); AccessPointError if it is none."""
    try:
        return wire.request_view(answer)
    except wire.WireError as e:
        raise AccessPointError(f"the access point answered something that is not a request: {e}") from None


class Follower:
    """``run()`` streams request ``deploy`` into ``bus`` until every node ended or stalled."""

    def __init__(self, client, deploy: dict, bus: ev.EventBus, stop, poll_wait: float = 20.0,
                 timeout: float | None = None):
        self.client, self.bus, self.stop = client, bus, stop
        self.deploy = pull_request(deploy)
        self.poll_wait = poll_wait
        self.timeout = timeout
        self.started = self.deploy["created_at"] or time.time()
        self.steps: dict[str, list[StepResult]] = {n["node"]: [] for n in self.deploy["nodes"]}
        self.open_steps: dict[str, tuple[str, float]] = {}
        self.first_step: dict[str, float] = {}
        self.finished: set[str] = set()
        self.gate_opened_at: float | None = None
        self.gate = "waiting" if any(n["gated"] for n in self.deploy["nodes"]) else "none"
        self.timed_out = False
        self.malformed = 0  # events or pages left out because they were not what the protocol says
        self.failure = None

    def run(self) -> RunResult:
        d = self.deploy
        nodes = d["nodes"]
        self.bus.emit(ev.RunStarted(stage=d["stage"], kind=d["kind"], branch=d["branch"], at=self.started,
                                    hosts=tuple((n["node"], ",".join(n["roles"]), n["gated"]) for n in nodes)))
        if self.gate != "none":
            self.bus.emit(ev.GateChanged(state="waiting", reason="waiting for kepler"))
            for n in nodes:
                if n["gated"]:
                    self.bus.emit(ev.HostWaiting(host=n["node"]))
        self._follow()
        return self._result()

    def _follow(self) -> None:
        after, told = 0, False
        deadline = time.monotonic() + self.timeout if self.timeout else None
        while not self.stop.stopping:
            wait = self.poll_wait
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    self.timed_out = True
                    return
            try:
                page = interruptible(self.stop, self.client.events, self.deploy["id"], after, round(wait, 1))
            except Stopped:
                return
            except AccessPointError as e:
                if not e.unreachable:
                    raise
                if not told:
                    self.bus.emit(ev.Notice(message=f"{e.message}; still following, retrying", level="warning"))
                told = True
                self.stop.soft.wait(RETRY)
                continue
            if told:
                self.bus.emit(ev.Notice(message="access point reachable again", level="warning"))
                told = False
            read = self._page(page, after)
            if read is None:
                self.stop.soft.wait(RETRY)
                continue
            events, after, self.deploy = read
            for event in events:
                self._translate(event)
            if self._ended(self.deploy):
                return

    def _page(self, page, after: int) -> tuple[list, int, dict] | None:
        """One page's events, its cursor and the request, or None when the page is unusable (said once)."""
        events = page.get("events") if isinstance(page, dict) else None
        if not isinstance(events, list):
            self._malformed("a page of events without its list")
            return None
        try:
            deploy = self._merged(wire.request_view(page.get("deploy")))
        except wire.WireError:
            deploy = self.deploy  # the events still count; the request is read again with the next page
        seqs = [s for s in (wire.ident(e.get("seq")) if isinstance(e, dict) else None for e in events) if s]
        last = wire.ident(page.get("last")) or max(seqs, default=after)
        return events, max(after, last), deploy

    def _merged(self, new: dict) -> dict:
        """The request as the page says, with the nodes it listed when following began: their roles and
        gate flags are those of the request's creation, a node the page leaves out keeps what was last
        known of it (a page may carry only the runs that changed), and one it adds is not followed."""
        if new["id"] != self.deploy["id"]:
            return self.deploy
        runs = {n["node"]: n for n in new["nodes"]}
        if set(runs) - set(self.steps):
            self._malformed("a request with nodes it did not list")
        fixed = ("roles", "gated", "opens_gate")
        return {**new, "nodes": [{**runs.get(n["node"], n), **{k: n[k] for k in fixed}} for n in self.deploy["nodes"]]}

    def _malformed(self, what: str) -> None:
        self.malformed += 1
        if self.malformed == 1:
            self.bus.emit(ev.Notice(message=f"the access point sent {what}; it is left out (this is said once)",
                                    level="warning"))

    @staticmethod
    def _ended(deploy: dict) -> bool:
        """Nothing more will happen without help: every node ended, or every node still going has
        stalled or is a gated node whose gate waits only on stalled keplers (or, once the request
        is cancelled, on nothing at all: a waiting node never starts a cancelled request)."""
        live = [n for n in deploy["nodes"] if n["state"] in ("waiting", "running")]
        if deploy["cancelled"]:
            live = [n for n in live if n["state"] == "running"]
        openers = [n for n in live if n["opens_gate"]]
        gate_stuck = bool(openers) and all(n["stalled"] for n in openers)
        return all(n["stalled"] or (gate_stuck and n["gated"] and n["state"] == "waiting") for n in live)

    def _translate(self, e) -> None:
        progress = wire.served(e)
        if progress is not None:
            node = wire.text(e.get("node"), wire.MAX_NAME)
            if node not in self.steps:
                self._malformed(f"progress of a node the request does not list ({node[:40]!r})")
                return
            self._progress(node, progress)
            return
        if not isinstance(e, dict):
            self._malformed("an event that is not an object")
            return
        kind, at = e.get("kind"), wire.moment(e.get("at")) or time.time()
        if kind == "allowed" and self.gate == "waiting":
            self.gate, self.gate_opened_at = "open", at
            self.bus.emit(ev.GateChanged(state="open", reason="every kepler node reported success", at=at))
        elif kind in ("failed", "cancelled") and self.gate == "waiting" and (wire.text(e.get("detail")) or
                                                                             kind == "cancelled"):
            self.gate = "closed"
            self.bus.emit(ev.GateChanged(state="closed", reason=wire.text(e.get("detail")) or "request cancelled",
                                         at=at))
        if kind == "cancelled":
            self.bus.emit(ev.Notice(message=f"request {self.deploy['id']} was {_cancelled(e, self.deploy)}: "
                                            "running nodes stop at their next step; waiting nodes never start",
                                    level="warning", at=at))
        elif kind == "node":
            self._node(e, at)

    def _progress(self, node: str, p: wire.Progress) -> None:
        at, bus = p.at or time.time(), self.bus
        if p.kind == wire.STEP_STARTED:
            self.open_steps[node] = (p.step, at)
            self.first_step.setdefault(node, at)
            bus.emit(ev.StepStarted(host=node, step=p.step, at=at))
        elif p.kind == wire.COMMAND:
            bus.emit(ev.CommandStarted(host=node, step=p.step, display=p.display, at=at))
        elif p.kind == wire.OUTPUT:
            bus.emit(ev.Output(host=node, step=p.step, stream=p.stream, line=p.line, at=at))
        elif p.kind == wire.STEP_FINISHED:
            opened = self.open_steps.pop(node, (p.step, at))[1]
            started = p.started if p.started is not None and 0 <= at - p.started <= wire.NODE_CLOCK_SKEW else opened
            started = min(started, at)
            result = StepResult(p.step, p.ok, started, at, p.exit_code, p.stderr_tail, p.message, p.skipped or None)
            self.steps[node].append(result)
            bus.emit(ev.StepFinished(host=node, result=result, at=at))

    def _node(self, e: dict, at: float) -> None:
        node, state = wire.text(e.get("node"), wire.MAX_NAME), wire.text(e.get("state"), 32)
        if state not in _FINAL or node in self.finished:
            return
        run = next((n for n in self.deploy["nodes"] if n["node"] == node), None)
        if run is None:
            return
        self.finished.add(node)
        latest = {**run, "state": state, "at": at, "step": wire.text(e.get("step"), wire.MAX_NAME) or None,
                  "detail": wire.text(e.get("detail")), "revision": wire.text(e.get("revision"), 64) or None}
        self.bus.emit(ev.HostFinished(host=node, result=self._host(run, latest), at=at))

    def _host(self, run: dict, latest: dict) -> HostResult:
        """A node's HostResult from what it reported (or ``stalled`` if it stopped reporting)."""
        state = latest.get("state") or run["state"]
        if state in _FINAL:
            result = _FINAL[state]
        elif self.deploy["cancelled"] and state == "waiting":
            result = SKIPPED
        else:
            result = STALLED if run["stalled"] else state  # "waiting" or "running": not over yet
        now = time.time()
        started = min(now, run["started_at"] or self.first_step.get(run["node"]) or latest.get("at") or self.started)
        ended = min(now, max(started, run["ended_at"] or latest.get("at") or now))  # nothing ends in the future
        reason = latest.get("detail") or run["detail"] or ""
        if result == STALLED:
            reason = f"stalled: {run['stalled']}; its outcome is unknown"
        elif result == SKIPPED and state == "waiting":
            reason = f"{_cancelled({}, self.deploy)}; not started"
        elif result not in _FINAL.values():
            waits = " for the gate, which waits for stalled keplers" if run["gated"] and state == "waiting" else ""
            reason = f"still {state}{waits} when pampa stopped following; its outcome is unknown"
        failed_step = None
        if result != OK:
            failed_step = latest.get("step") or run["step"]
        steps = tuple(self.steps.get(run["node"], ()))
        last_failed = next((s for s in reversed(steps) if not s.ok), None)
        return HostResult(host=run["node"], roles=",".join(run["roles"]), result=result, started=started,
                          ended=ended, steps=steps, failed_step=failed_step,
                          exit_code=last_failed.exit_code if last_failed and result == FAILED else None,
                          stderr_tail=last_failed.stderr_tail if last_failed and result == FAILED else "",
                          reason=reason, revision_after=latest.get("revision") or run["revision"],
                          gated=run["gated"])

    def _result(self) -> RunResult:
        d = self.deploy
        hosts = []
        for run in d["nodes"]:
            host = self._host(run, run)
            if run["node"] not in self.finished:
                self.finished.add(run["node"])
                self.bus.emit(ev.HostFinished(host=run["node"], result=host))
            hosts.append(host)
        notes = []
        if d["cancelled"]:
            notes.append(f"request {d['id']} was {_cancelled({}, d)}; it did not deploy every node")
        stalled = [h.host for h in hosts if h.result == STALLED]
        if stalled:
            notes.append(f"{len(stalled)} node(s) stopped reporting: {', '.join(stalled[:10])}; the request is "
                         "stalled, not done (is their agent running? `pampa status` shows what they run)")
        if self.timed_out:
            notes.append("stopped following: --timeout reached; the request goes on at the access point")
        if self.malformed:
            notes.append(f"the access point sent {self.malformed} event(s) or page(s) that were not what the "
                         "protocol says; they were left out")
        run = RunResult(stage=d["stage"], kind=d["kind"], branch=d["branch"],
                        started=self.started, ended=max([h.ended for h in hosts] + [self.started]),
                        hosts=tuple(hosts), gate=self.gate, gate_opened_at=self.gate_opened_at,
                        interrupted_by=self.stop.signum, notes=tuple(notes), revision=d["revision"], deploy_id=d["id"])
        failure = failure_for(run)
        self.failure = failure
        self.bus.emit(ev.RunFinished(result=run, exit_code=exit_code_for(failure) if failure else int(ExitCode.OK)))
        return run


def _cancelled(event: dict, deploy: dict) -> str:
    """``cancelled by ana@laptop`` (or just ``cancelled``), from the event or the request's detail."""
    who = wire.text(event.get("by"), wire.MAX_NAME)
    if who:
        return f"cancelled by {who}"
    said = deploy.get("detail") or ""
    return said.split(":")[0].split(";")[0] if said.startswith("cancelled by ") else "cancelled"
