"""Follow a pull request from the CLI: the access point's events become the engine's events.

So ``pampa request --wait`` shows the same live view, summary, reports and exit codes as
``pampa deploy``, with nodes reporting in instead of SSH sessions. Nothing here is
claimed unseen: a node's result is what it reported, and a node that stopped reporting
ends as ``stalled``, never as ok.
"""
from __future__ import annotations

import time

from ..accesspoint.client import Stopped, interruptible
from ..errors import AccessPointError, ExitCode, exit_code_for
from . import events as ev
from .results import FAILED, INTERRUPTED, OK, SKIPPED, HostResult, RunResult, StepResult, failure_for

STALLED = "stalled"
_FINAL = {"ok": OK, "failed": FAILED, "interrupted": INTERRUPTED, "skipped": SKIPPED}


class Follower:
    """``run()`` streams request ``deploy`` into ``bus`` until every node ended or stalled."""

    def __init__(self, client, deploy: dict, bus: ev.EventBus, stop, poll_wait: float = 20.0,
                 timeout: float | None = None):
        self.client, self.deploy, self.bus, self.stop = client, deploy, bus, stop
        self.poll_wait = poll_wait
        self.timeout = timeout
        self.started = deploy["created_at"]
        self.steps: dict[str, list[StepResult]] = {n["node"]: [] for n in deploy["nodes"]}
        self.open_steps: dict[str, tuple[str, float]] = {}
        self.first_step: dict[str, float] = {}
        self.finished: set[str] = set()
        self.gate_opened_at: float | None = None
        self.gate = "waiting" if any(n["gated"] for n in deploy["nodes"]) else "none"
        self.timed_out = False
        self.failure = None

    def run(self) -> RunResult:
        d = self.deploy
        nodes = d["nodes"]
        self.bus.emit(ev.RunStarted(stage=d["stage"], kind=d.get("kind") or "deploy", branch=d["branch"],
                                    at=d["created_at"],
                                    hosts=tuple((n["node"], ",".join(n["roles"]), n["gated"]) for n in nodes)))
        if self.gate != "none":
            self.bus.emit(ev.GateChanged(state="waiting", reason="waiting for kepler"))
            for n in nodes:
                if n["gated"]:
                    self.bus.emit(ev.HostWaiting(host=n["node"]))
        after, told = 0, False
        deadline = time.monotonic() + self.timeout if self.timeout else None
        while not self.stop.stopping:
            wait = self.poll_wait
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    self.timed_out = True
                    break
            try:
                page = interruptible(self.stop, self.client.events, d["id"], after, round(wait, 1))
            except Stopped:
                break
            except AccessPointError as e:
                if not e.unreachable:
                    raise
                if not told:
                    self.bus.emit(ev.Notice(message=f"{e.message}; still following, retrying", level="warning"))
                told = True
                self.stop.soft.wait(3.0)
                continue
            if told:
                self.bus.emit(ev.Notice(message="access point reachable again", level="warning"))
                told = False
            for event in page["events"]:
                self._translate(event)
            after = page["last"]
            self.deploy = page["deploy"]
            if self._ended(self.deploy):
                break
        return self._result()

    @staticmethod
    def _ended(deploy: dict) -> bool:
        """Nothing more will happen without help: every node ended, or every node still going has
        stalled or is a gated node whose gate waits only on stalled keplers."""
        live = [n for n in deploy["nodes"] if n["state"] in ("waiting", "running")]
        openers = [n for n in live if n["opens_gate"]]
        gate_stuck = bool(openers) and all(n.get("stalled") for n in openers)
        return all(n.get("stalled") or (gate_stuck and n["gated"] and n["state"] == "waiting") for n in live)

    def _translate(self, e: dict) -> None:
        at, kind, bus = e.get("node_at") or e["at"], e["kind"], self.bus
        node, step = e.get("node"), e.get("step") or ""
        if kind == "step_started":
            self.open_steps[node] = (step, at)
            self.first_step.setdefault(node, at)
            bus.emit(ev.StepStarted(host=node, step=step, at=at))
        elif kind == "command":
            bus.emit(ev.CommandStarted(host=node, step=step, display=e.get("display") or "", at=at))
        elif kind == "output":
            bus.emit(ev.Output(host=node, step=step, stream=e.get("stream") or "stdout", line=e.get("line") or "",
                               at=at))
        elif kind == "step_finished":
            started = e.get("started") or self.open_steps.get(node, (step, at))[1]
            self.open_steps.pop(node, None)
            result = StepResult(step, bool(e.get("ok")), started, at, e.get("exit_code"),
                                e.get("stderr_tail") or "", e.get("message") or "")
            self.steps.setdefault(node, []).append(result)
            bus.emit(ev.StepFinished(host=node, result=result, at=at))
        elif kind == "allowed":
            if self.gate == "waiting":
                self.gate, self.gate_opened_at = "open", at
                bus.emit(ev.GateChanged(state="open", reason="every kepler node reported success", at=at))
        elif kind == "failed":
            if self.gate == "waiting" and (e.get("detail") or ""):
                self.gate = "closed"
                bus.emit(ev.GateChanged(state="closed", reason=e["detail"], at=at))
        elif kind == "node" and e.get("state") in _FINAL and node not in self.finished:
            self.finished.add(node)
            run = next((n for n in self.deploy["nodes"] if n["node"] == node), None)
            if run is not None:
                bus.emit(ev.HostFinished(host=node, result=self._host(run, {**run, **e}), at=at))

    def _host(self, run: dict, latest: dict) -> HostResult:
        """A node's HostResult from what it reported (or ``stalled`` if it stopped reporting)."""
        state = latest.get("state") or run["state"]
        if state in _FINAL:
            result = _FINAL[state]
        else:
            result = STALLED if run.get("stalled") else state  # "waiting" or "running": not over yet
        now = time.time()
        started = run.get("started_at") or self.first_step.get(run["node"]) or latest.get("at") or self.started
        ended = run.get("ended_at") or latest.get("at") or now
        reason = latest.get("detail") or run.get("detail") or ""
        if result == STALLED:
            reason = f"stalled: {run.get('stalled')}; its outcome is unknown"
        elif result not in _FINAL.values():
            waits = " for the gate, which waits for stalled keplers" if run["gated"] and state == "waiting" else ""
            reason = f"still {state}{waits} when pampa stopped following; its outcome is unknown"
        failed_step = None
        if result != OK:
            failed_step = latest.get("step") or run.get("step")
        steps = tuple(self.steps.get(run["node"], ()))
        last_failed = next((s for s in reversed(steps) if not s.ok), None)
        return HostResult(host=run["node"], roles=",".join(run["roles"]), result=result, started=started,
                          ended=ended, steps=steps, failed_step=failed_step,
                          exit_code=last_failed.exit_code if last_failed and result == FAILED else None,
                          stderr_tail=last_failed.stderr_tail if last_failed and result == FAILED else "",
                          reason=reason, revision_after=latest.get("revision") or run.get("revision"),
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
        stalled = [h.host for h in hosts if h.result == STALLED]
        if stalled:
            notes.append(f"{len(stalled)} node(s) stopped reporting: {', '.join(stalled[:10])}; the request is "
                         "stalled, not done (is their agent running? `pampa status` shows what they run)")
        if self.timed_out:
            notes.append("stopped following: --timeout reached; the request goes on at the access point")
        gate = {"waiting": "waiting", "open": "open", "closed": "closed", "none": "none"}[self.gate]
        run = RunResult(stage=d["stage"], kind=d.get("kind") or "deploy", branch=d["branch"],
                        started=self.started, ended=max([h.ended for h in hosts] + [self.started]),
                        hosts=tuple(hosts), gate=gate,
                        gate_opened_at=self.gate_opened_at, interrupted_by=self.stop.signum, notes=tuple(notes),
                        revision=d.get("revision"), deploy_id=d["id"])
        failure = failure_for(run)
        self.failure = failure
        self.bus.emit(ev.RunFinished(result=run, exit_code=exit_code_for(failure) if failure else int(ExitCode.OK)))
        return run
