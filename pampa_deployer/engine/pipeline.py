"""One host's run: connect, wait for the gate if gated, run its steps, log the revision.

Hosts advance independently: nothing here waits for other hosts except the gate.
"""
from __future__ import annotations

import getpass
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..commands.command import Command
from ..errors import AccessPointError, ConnectError
from ..plan import HostPlan, Plan
from ..steps.actions import OpenGate, ReportVersion, Run, Upload
from . import events as ev
from . import revlog
from .backend import Backend, tail
from .gate import Gate
from .results import FAILED, INTERRUPTED, OK, SKIPPED, HostResult, StepResult
from .stop import StopSignal


@dataclass
class RunContext:
    """What every host pipeline of one run shares."""

    plan: Plan
    bus: ev.EventBus
    gate: Gate
    stop: StopSignal
    access_point: object | None = None
    deploy_id: int | None = None
    dry_run: bool = False
    run_id: str = ""
    user: str = field(default_factory=lambda: _whoami())
    ready: threading.Event = field(default_factory=threading.Event)
    refused: BaseException | None = None


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


class _StepFailed(Exception):
    def __init__(self, exit_code: int | None, stderr: str, message: str = ""):
        super().__init__(message)
        self.exit_code, self.stderr, self.message = exit_code, stderr, message


def run_host(hp: HostPlan, backend: Backend, ctx: RunContext, connect: Callable[[], None]) -> HostResult:
    """Carry out one host's plan; always returns a result, never raises for host failures."""
    name, bus = hp.host.name, ctx.bus
    started = time.time()
    steps: list[StepResult] = []
    state = {"result": OK, "failed_step": None, "exit": None, "stderr": "", "reason": "",
             "before": None, "after": None, "arrived": False, "touched": False}

    def finish() -> HostResult:
        if hp.opens_gate:
            if state["result"] == OK:
                ctx.gate.arrive(name)
            else:
                ctx.gate.fail(name, f"{state['result']} at {state['failed_step'] or 'start'}")
        result = HostResult(host=name, roles=",".join(hp.roles), result=state["result"], started=started,
                            ended=time.time(), steps=tuple(steps), failed_step=state["failed_step"],
                            exit_code=state["exit"], stderr_tail=state["stderr"], reason=state["reason"],
                            revision_before=state["before"], revision_after=state["after"], gated=hp.gated)
        bus.emit(ev.HostFinished(host=name, result=result))
        return result

    if ctx.stop.stopping:
        state.update(result=SKIPPED, reason="interrupted before it started")
        return finish()

    bus.emit(ev.HostConnecting(host=name))
    t0 = time.time()
    try:
        connect()
    except ConnectError as e:
        state.update(result=FAILED, failed_step="connect", reason=e.message, stderr=e.reason)
        return finish()
    bus.emit(ev.HostConnected(host=name, seconds=time.time() - t0))

    # Connecting changes nothing; every command waits until the run's preflight (the lock) is done.
    while not ctx.ready.wait(0.2):
        if ctx.stop.stopping:
            break
    if ctx.refused is not None or ctx.stop.stopping:
        state.update(result=SKIPPED, reason="not started: " + (str(ctx.refused) if ctx.refused is not None
                                                                else "interrupted"))
        return finish()

    if hp.gated:
        bus.emit(ev.HostWaiting(host=name))
        if not ctx.gate.wait(lambda: ctx.stop.stopping):
            why = "interrupted while waiting for the gate" if ctx.stop.stopping else \
                f"gate closed: {ctx.gate.reason}; not touched"
            state.update(result=SKIPPED, reason=why)
            return finish()

    base = _base_command(hp)
    if not ctx.dry_run:
        try:
            state["before"] = backend.run(revlog.revision_command(base)).stdout.strip() or None
        except Exception:  # noqa: BLE001 - the first step meets the same problem and reports it
            state["before"] = None

    for step in hp.steps:
        if ctx.stop.stopping:
            state.update(result=INTERRUPTED, failed_step=step.name,
                         reason=f"interrupted before {step.name}")
            break
        bus.emit(ev.StepStarted(host=name, step=step.name))
        s0 = time.time()
        try:
            for action in step.actions:
                try:
                    _do(action, step.name, hp, backend, ctx)
                except _StepFailed:
                    raise
                except Exception as e:  # noqa: BLE001 - e.g. the connection dropped: this host fails, not the run
                    raise _StepFailed(None, f"{type(e).__name__}: {e}",
                                      f"connection lost or SSH error: {type(e).__name__}: {e}") from e
        except _StepFailed as e:
            interrupted = ctx.stop.stopping
            steps.append(StepResult(step.name, False, s0, time.time(), e.exit_code, e.stderr, e.message))
            bus.emit(ev.StepFinished(host=name, step=step.name, ok=False, started=s0, exit_code=e.exit_code,
                                     stderr_tail=e.stderr, message=e.message))
            state.update(result=INTERRUPTED if interrupted else FAILED, failed_step=step.name,
                         exit=e.exit_code, stderr=e.stderr,
                         reason=("interrupted during " + step.name) if interrupted else e.message)
            break
        steps.append(StepResult(step.name, True, s0, time.time()))
        bus.emit(ev.StepFinished(host=name, step=step.name, ok=True, started=s0))

    if not ctx.dry_run:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "stage": ctx.plan.stage.name,
                 "kind": ctx.plan.kind, "branch": hp.host.branch, "before": state["before"],
                 "user": ctx.user, "result": state["result"], "step": state["failed_step"], "run": ctx.run_id}
        try:
            out = backend.run(revlog.append_command(base, entry)).stdout
            state["after"] = out.strip() or None
        except Exception as e:  # noqa: BLE001 - the log must not hide the step's own result
            bus.emit(ev.Notice(message=f"{name}: could not write the revision log: {e}", level="warning", host=name))
    return finish()


def _base_command(hp: HostPlan) -> Command:
    """A Command carrying this host's code path, for the engine's own bookkeeping commands."""
    return revlog.base(hp.host.path)


def _do(action, step: str, hp: HostPlan, backend: Backend, ctx: RunContext) -> None:
    name, bus = hp.host.name, ctx.bus
    on_line = lambda stream, line: bus.emit(ev.Output(host=name, step=step, stream=stream, line=line))  # noqa: E731
    if isinstance(action, Run):
        bus.emit(ev.CommandStarted(host=name, step=step, display=action.display()))
        result = backend.run(action.command, on_line)
        if not result.ok:
            raise _StepFailed(result.exit_code, tail(result.stderr) or tail(result.stdout),
                              f"exit code {result.exit_code}")
    elif isinstance(action, Upload):
        bus.emit(ev.CommandStarted(host=name, step=step, display=action.display()))
        try:
            backend.put(action)
        except (OSError, IOError) as e:
            raise _StepFailed(None, str(e), f"upload to {action.remote} failed: {e}") from None
    elif isinstance(action, ReportVersion):
        bus.emit(ev.CommandStarted(host=name, step=step, display=action.display()))
        result = backend.run(action.revision, on_line)
        if not result.ok:
            raise _StepFailed(result.exit_code, tail(result.stderr), "could not read the git revision")
        revision = result.stdout.strip()
        client = ctx.access_point
        if client is None or ctx.dry_run:
            if not action.url:
                bus.emit(ev.Notice(message=f"{name}: no access point configured: version {revision[:12] or '?'} "
                                           "not reported", host=name))
            return
        try:
            client.report_version(name, ctx.plan.stage.name, revision, hp.roles, ctx.deploy_id)
        except AccessPointError as e:
            raise _StepFailed(None, e.message, f"version report failed: {e.message}") from None
    elif isinstance(action, OpenGate):
        if hp.opens_gate:
            ctx.gate.arrive(name)
    else:  # pragma: no cover - a new action type without an executor is a bug
        raise AssertionError(f"no executor for {action!r}")
