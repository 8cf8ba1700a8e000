"""One host's run: connect, wait for the gate if gated, run its steps, log the revision.

Hosts advance independently: nothing here waits for other hosts except the gate (and,
before the first command, the run's preflight: the lock and the access point registration).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from .. import provenance
from ..commands import revlog
from ..commands import skip as skips
from ..commands.command import Command
from ..errors import ConnectError
from ..plan import HostPlan, Plan, StepPlan
from ..steps.actions import ReportVersion, Run
from ..steps.releases import live_path
from . import events as ev
from . import startrecord
from .apsession import Session
from .backends.base import Backend
from .backends.liveness import ConnectionLost, HostUnresponsive
from .executor import ahead, perform
from .gate import Gate
from .preflight import Preflight
from .results import (
    FAILED,
    INTERRUPTED,
    NOT_STARTED_REFUSED,
    OK,
    SKIPPED,
    HostResult,
    NotStarted,
    StepFailed,
    StepResult,
)
from .stop import StopSignal


@dataclass
class RunContext:
    """What every host pipeline of one run shares."""

    plan: Plan
    bus: ev.EventBus
    gate: Gate
    stop: StopSignal
    preflight: Preflight
    access_point: Session | None = None
    dry_run: bool = False
    run_id: str = ""
    message: str | None = None  # the run's message: recorded in the lock and in every revision-log line
    user: str = field(default_factory=provenance.user)


#: A line a built-in step prints to tell the operator something worth the summary (steps/git.py).
NOTE_PREFIX = "pampa-note: "


class _HostSink:
    """The executor's sink for one step of one host: events, the gate, the access point session."""

    def __init__(self, hp: HostPlan, step: str, ctx: RunContext, notes: list[str], may_skip: bool = False):
        self.hp, self.step, self.ctx, self.name = hp, step, ctx, hp.host.name
        self.notes = notes
        self.may_skip = may_skip  # the step was built to say when it skips its work (commands/skip.py)
        self.skipped: str | None = None

    def step_started(self) -> None:
        self.ctx.bus.emit(ev.StepStarted(host=self.name, step=self.step))

    def command_started(self, display: str) -> None:
        self.ctx.bus.emit(ev.CommandStarted(host=self.name, step=self.step, display=display))

    def output(self, stream: str, line: str) -> None:
        self.ctx.bus.emit(ev.Output(host=self.name, step=self.step, stream=stream, line=line))
        if stream == "stdout" and self.may_skip and line.startswith(skips.SKIP_PREFIX):
            # The host's words, bounded and printable: they reach the terminal and the report.
            why = "".join(c for c in line[len(skips.SKIP_PREFIX):] if c.isprintable())[:200].strip()
            self.skipped = why or "nothing to do"
        if stream == "stdout" and line.startswith(NOTE_PREFIX):
            note = line[len(NOTE_PREFIX):]
            self.notes.append(note)
            self.ctx.bus.emit(ev.Notice(message=f"{self.name}: {note}", level="warning", host=self.name))

    def gate_reached(self) -> None:
        if self.hp.opens_gate:
            self.ctx.gate.arrive(self.name)

    def report_version(self, action: ReportVersion, revision: str) -> None:
        session = self.ctx.access_point
        if session is None:
            if not action.url:
                self.ctx.bus.emit(ev.Notice(message=f"{self.name}: no access point configured: version "
                                                    f"{revision[:12] or '?'} not reported", host=self.name))
            return
        session.report(self.name, self.ctx.plan.stage.name, revision, self.hp.roles)

    def aborted(self) -> bool:
        return self.ctx.stop.hard.is_set()


def abort_outcome(backend: Backend) -> str | None:
    """What the abort left on the host, in words (SSH backends say it; others have nothing to add)."""
    return getattr(backend, "abort_outcome", None)


def run_host(hp: HostPlan, backend: Backend, ctx: RunContext, connect: Callable[[], None]) -> HostResult:
    """Carry out one host's plan; always returns a result, never raises for host failures."""
    return HostRun(hp, backend, ctx).run(connect)


class HostRun:
    """One host's way through the run; the outcome so far lives on the object until ``finish``."""

    def __init__(self, hp: HostPlan, backend: Backend, ctx: RunContext):
        self.hp, self.backend, self.ctx = hp, backend, ctx
        self.name, self.bus = hp.host.name, ctx.bus
        self.started = time.time()
        self.steps: list[StepResult] = []
        self.result, self.failed_step, self.exit_code = OK, None, None
        self.stderr, self.reason = "", ""
        self.before: str | None = None
        self.after: str | None = None
        # The live code (ROOT/current under the releases strategy); the log stays next to the stage's path.
        self.base = revlog.base(live_path(hp.host, hp.layout))
        self.log = revlog.log_path(hp.host.path)
        self.notes: list[str] = []
        self.gone = False  # the host stopped answering or the connection dropped: no more commands to it

    def run(self, connect: Callable[[], None]) -> HostResult:
        if self.ctx.stop.stopping:
            return self.finish(SKIPPED, reason="interrupted before it started")
        if not self.connect(connect):
            return self.finish()
        if not self.ctx.dry_run:  # e.g. the shell session, opened while the lock is being taken
            getattr(self.backend, "prepare", lambda: None)()
        if not self.wait_for_preflight() or not self.wait_for_gate():
            return self.finish()
        if self.ctx.stop.halted:
            return self.finish(SKIPPED, reason=f"not started: {self.ctx.stop.halted}")
        if not self.ctx.dry_run:
            self.send_ahead(0, revlog.start_command(self.base, self.start_record()))
            self.before = self.start()
        for index, step in enumerate(self.hp.steps):
            # A step sent ahead may already be under way on the host: its result says (NotStarted if not).
            if self.ctx.stop.stopping and not self.sent_ahead():
                self.end(INTERRUPTED, step=step.name, reason=f"interrupted before {step.name}")
                break
            if not self.ctx.stop.stopping and not self.sent_ahead():
                self.send_ahead(index)
            if not self.run_step(step):
                break
        if not self.ctx.dry_run and not self.gone:
            self.log_revision()
        return self.finish()

    def end(self, result: str, step: str | None = None, reason: str = "", exit_code: int | None = None,
            stderr: str = "") -> None:
        self.result, self.failed_step, self.reason, self.exit_code, self.stderr = \
            result, step, reason, exit_code, stderr

    def connect(self, connect: Callable[[], None]) -> bool:
        self.bus.emit(ev.HostConnecting(host=self.name))
        t0 = time.time()
        try:
            connect()
        except ConnectError as e:
            self.end(FAILED, step="connect", reason=e.message)  # the host printed nothing: no stderr
            return False
        self.bus.emit(ev.HostConnected(host=self.name, seconds=time.time() - t0))
        return True

    def wait_for_preflight(self) -> bool:
        """Connecting changes nothing; every command waits until the run's preflight (the lock) is done."""
        ctx = self.ctx
        if ctx.preflight.wait(lambda: ctx.stop.stopping) and not ctx.stop.stopping:
            return True
        # The refusal itself is reported once, as the run's error; each host only points at it.
        refused = ctx.preflight.error is not None
        self.end(SKIPPED, reason=NOT_STARTED_REFUSED if refused else "not started: interrupted")
        return False

    def wait_for_gate(self) -> bool:
        if not self.hp.gated:
            return True
        if self.ctx.gate.wait(lambda: self.ctx.stop.stopping,
                              on_wait=lambda: self.bus.emit(ev.HostWaiting(host=self.name))):
            return True
        self.end(SKIPPED, reason="interrupted while waiting for the gate" if self.ctx.stop.stopping
                 else f"gate closed: {self.ctx.gate.reason}; not touched")
        return False

    def sent_ahead(self) -> bool:
        return bool(getattr(self.backend, "sent_ahead", lambda: False)())

    def send_ahead(self, index: int, start: Command | None = None) -> None:
        """Send the host, in one round trip, the commands of the steps from ``index`` on that need no
        answer from this side (up to and including the first that does: a version report, a Python
        step), ``start`` first. Each step's result, output, record, timeout and stop stay its own."""
        send = getattr(self.backend, "send_ahead", None)
        if send is None or self.ctx.dry_run:
            return
        items = [(start, False)] if start is not None else []
        for step in self.hp.steps[index:]:
            commands, goes_on = ahead(startrecord.for_step(list(step.actions), self.base, self.start_record(step.name)))
            items += [(command, n == 0) for n, command in enumerate(commands)]
            if not goes_on:
                break
        send(items)

    def run_step(self, step: StepPlan) -> bool:
        """Run one step's actions; False (and the host's outcome set) when it failed."""
        s0 = time.time()
        may_skip = any(isinstance(a, Run) and skips.offers(a.command.script) for a in step.actions)
        sink = _HostSink(self.hp, step.name, self.ctx, self.notes, may_skip)
        actions: list = list(step.actions)
        if self.ctx.dry_run:
            sink.step_started()  # nothing is written on a host in a dry run
        else:  # the start record names the step before anything of the step happens; it says when it started
            actions = startrecord.for_step(actions, self.base, self.start_record(step.name))
        try:
            for action in actions:
                self.perform(action, sink, step.name)
        except NotStarted:  # sent ahead, and the host did not begin it: the run is stopping
            self.end(INTERRUPTED, step=step.name, reason=f"interrupted before {step.name}")
            return False
        except StepFailed as e:
            interrupted = self.ctx.stop.stopping and not self.gone
            self.steps.append(StepResult(step.name, False, s0, time.time(), e.exit_code, e.stderr, e.message))
            self.bus.emit(ev.StepFinished(host=self.name, result=self.steps[-1]))
            self.end(INTERRUPTED if interrupted else FAILED, step=step.name, exit_code=e.exit_code, stderr=e.stderr,
                     reason=self.interrupted_during(step.name) if interrupted else e.message)
            return False
        self.steps.append(StepResult(step.name, True, s0, time.time(), skipped=sink.skipped))
        self.bus.emit(ev.StepFinished(host=self.name, result=self.steps[-1]))
        return True

    def perform(self, action, sink: _HostSink, step: str) -> None:
        """One action through the executor; what goes wrong with the host (not the step) fails the step too."""
        try:
            perform(action, self.backend, sink)
        except (StepFailed, NotStarted):
            raise
        except HostUnresponsive as e:
            self.gone = True
            raise StepFailed(None, "", f"unresponsive during {step} ({e})") from e
        except ConnectionLost as e:
            self.gone = True
            raise StepFailed(None, str(e), f"host crashed or connection lost during {step}") from e
        except Exception as e:  # noqa: BLE001 - e.g. the connection dropped: this host fails, not the run
            raise StepFailed(None, f"{type(e).__name__}: {e}",
                             f"connection lost or SSH error: {type(e).__name__}: {e}") from e

    def interrupted_during(self, step: str) -> str:
        """Why the host stopped in ``step``, with what the abort (second Ctrl-C) left on the host, if it ran."""
        left = abort_outcome(self.backend) if self.ctx.stop.hard.is_set() else None
        return f"interrupted during {step}" + (f"; {left}" if left else "")

    def start_record(self, step: str | None = None) -> dict:
        """What the host keeps while this run is on it (commands/revlog.py: the start record)."""
        ctx = self.ctx
        return {"run": ctx.run_id, "stage": ctx.plan.stage.name, "kind": ctx.plan.kind, "branch": self.hp.host.branch,
                "user": ctx.user, "started": provenance.utc(self.started),
                "step": step}

    def start(self) -> str | None:
        """Write the start record before anything else touches the host; returns the revision before."""
        try:
            return self.backend.run(revlog.start_command(self.base, self.start_record())).stdout.strip() or None
        except Exception:  # noqa: BLE001 - the first step meets the same problem and reports it
            return None

    def log_revision(self) -> None:
        ctx = self.ctx
        entry = {"time": provenance.utc(), "stage": ctx.plan.stage.name,
                 "kind": ctx.plan.kind, "branch": self.hp.host.branch, "before": self.before,
                 "user": ctx.user, "result": self.result, "step": self.failed_step, "run": ctx.run_id,
                 "message": ctx.message, "roles": list(self.hp.roles), "started": provenance.utc(self.started)}
        try:
            self.after = self.backend.run(revlog.append_command(self.base, entry, self.log)).stdout.strip() or None
        except Exception as e:  # noqa: BLE001 - the log must not hide the step's own result
            self.bus.emit(ev.Notice(message=f"{self.name}: could not write the revision log: {e}",
                                    level="warning", host=self.name))

    def finish(self, result: str | None = None, reason: str = "") -> HostResult:
        if result is not None:
            self.end(result, reason=reason)
        if self.hp.opens_gate and self.ctx.preflight.error is None:  # a refused run closes no gate: none waits
            if self.result == OK:
                self.ctx.gate.arrive(self.name)
            else:
                self.ctx.gate.fail(self.name, f"{self.result} at {self.failed_step or 'start'}")
        result_ = HostResult(host=self.name, roles=",".join(self.hp.roles), result=self.result,
                             started=self.started, ended=time.time(), steps=tuple(self.steps),
                             failed_step=self.failed_step, exit_code=self.exit_code, stderr_tail=self.stderr,
                             reason=self.reason, revision_before=self.before, revision_after=self.after,
                             gated=self.hp.gated, notes=tuple(self.notes))
        self.bus.emit(ev.HostFinished(host=self.name, result=result_))
        return result_
