"""Run a Plan: one pipeline per host under the scheduler, the gate between keplers and gated roles."""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from ..errors import AccessPointError
from ..inventory.model import Host
from ..plan import HostPlan, Plan
from . import events as ev
from .backend import Backend
from .gate import OPEN, Gate
from .pipeline import RunContext, run_host
from .pool import BackendPool
from .results import SKIPPED, HostResult, RunResult
from .scheduler import Scheduler
from .stop import StopSignal


@dataclass
class RunOptions:
    """How to run: concurrency, batches and the safety valves."""

    parallel: int = 32
    batch: int | None = None
    batch_wait: float = 0.0
    max_fail: int | None = None
    dry_run: bool = False


def execute(plan: Plan, pool: BackendPool, bus: ev.EventBus, options: RunOptions, stop: StopSignal,
            access_point=None, run_id: str | None = None,
            preflight: Callable[[], int | None] | None = None) -> RunResult:
    """Deploy (or roll back) every host of ``plan``; returns a result for each, whatever happened.

    ``preflight`` (take the lock, register with the access point; returns the deploy id) runs while
    the hosts connect; no host runs a command before it is done. If it raises, no host runs anything
    and the error is raised here once every host has stopped.
    """
    started = time.time()
    opened_at: list[float] = []

    def on_gate(state: str, reason: str) -> None:
        if state == OPEN:
            opened_at.append(time.time())
            if access_point is not None and ctx.deploy_id is not None and not options.dry_run:
                try:
                    access_point.allow(ctx.deploy_id)
                except AccessPointError as e:
                    bus.emit(ev.Notice(message=f"gate opened, but marking the deploy ALLOWED failed: {e}",
                                       level="warning"))
        bus.emit(ev.GateChanged(state=state, reason=reason))

    gate = Gate(plan.gate_hosts if plan.has_gate else (), on_gate)
    ctx = RunContext(plan=plan, bus=bus, gate=gate, stop=stop, access_point=access_point,
                     dry_run=options.dry_run, run_id=run_id or uuid.uuid4().hex[:12])
    stop.on_hard(pool.abort_all)

    def run_preflight() -> None:
        try:
            if preflight is not None:
                ctx.deploy_id = preflight()
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread below
            ctx.refused = e
        finally:
            ctx.ready.set()

    threading.Thread(target=run_preflight, name="pampa-preflight", daemon=True).start()
    scheduler = Scheduler(options.parallel, options.batch, options.batch_wait, options.max_fail,
                          stopping=lambda: stop.stopping)
    bus.emit(ev.RunStarted(stage=plan.stage.name, kind=plan.kind, branch=plan.branch, dry_run=options.dry_run,
                           hosts=tuple((h.host.name, ",".join(h.roles), h.gated) for h in plan.hosts)))
    if plan.has_gate:
        bus.emit(ev.GateChanged(state=gate.state, reason="waiting for kepler" if gate.state != OPEN else
                                "no kepler host in this run"))
    halted_notice: list[str] = []

    def work(hp: HostPlan) -> HostResult:
        why_not = scheduler.should_start()
        if why_not:
            if scheduler.halted_reason and not halted_notice:
                halted_notice.append(scheduler.halted_reason)
                bus.emit(ev.Notice(message=scheduler.halted_reason, level="error"))
            if hp.opens_gate:
                gate.fail(hp.host.name, "not started")
            now = time.time()
            result = HostResult(host=hp.host.name, roles=",".join(hp.roles), result=SKIPPED, started=now,
                                ended=now, reason=why_not, gated=hp.gated)
            bus.emit(ev.HostFinished(host=hp.host.name, result=result))
            return result
        try:
            result = run_host(hp, pool.get(hp.host), ctx, lambda: pool.connect(hp.host))
        finally:
            pool.done(hp.host)
        scheduler.record(not result.ok)
        return result

    results = scheduler.run(list(plan.hosts), work)
    ctx.ready.wait()
    if ctx.refused is not None:
        raise ctx.refused
    notes = list(plan.notes) + ([scheduler.halted_reason] if scheduler.halted_reason else [])
    run = RunResult(stage=plan.stage.name, kind=plan.kind, branch=plan.branch, started=started, ended=time.time(),
                    hosts=tuple(results), gate=gate.state if plan.has_gate else "none",
                    gate_opened_at=opened_at[0] if opened_at else None, interrupted_by=stop.signum,
                    notes=tuple(notes), revision=plan.revision, dry_run=options.dry_run, deploy_id=ctx.deploy_id)
    bus.emit(ev.RunFinished(result=run))
    return run
