"""The rollout of a plan over the fleet: every host under the scheduler, each one's work, and what a host
that could not run (or did not answer after an abort) is reported as.

``Deployment`` owns the run and builds the ``RunContext`` (plan, gate, preflight, access point
session...); a ``Rollout`` only walks the hosts through it and returns one result per host.
With a canary (``engine/canary.py``) it walks them in two phases: the canary hosts, then, once the
canary passed (and its wait or confirmation), the rest; or the rest are skipped, untouched.
"""
from __future__ import annotations

import time

from ..plan import HostPlan
from . import events as ev
from .backends.pool import BackendPool
from .canary import INTERRUPTED as CANARY_INTERRUPTED
from .canary import WHOLE, Canary
from .pipeline import RunContext, abort_outcome, run_host
from .results import INTERRUPTED, SKIPPED, HostResult
from .scheduler import Scheduler

#: Seconds the run still waits for host threads once the abort has done what it could.
ABANDON_AFTER = 1.0


class Rollout:
    """Every host of the context's plan, under the scheduler: parallel, batches, max-fail, the abort."""

    def __init__(self, ctx: RunContext, pool: BackendPool, scheduler: Scheduler, canary: Canary | None = None):
        self.ctx, self.pool, self.scheduler, self.canary = ctx, pool, scheduler, canary
        self.abandoned_at: float | None = None
        self.halted_told = False

    def run(self) -> list[HostResult]:
        """One result per host of the plan, in plan order, whatever happened to it."""
        hosts = list(self.ctx.plan.hosts)
        started = time.time()
        if self.canary is None:
            return self.phase(hosts, started)
        if not self.canary.chosen.rest:
            self.canary.state = WHOLE
            return self.phase(hosts, started)
        return self.with_canary(self.canary, hosts, started)

    def phase(self, hosts: list[HostPlan], started: float) -> list[HostResult]:
        """Every host of ``hosts`` under the scheduler; a result for each, in their order."""
        bus = self.ctx.bus
        results = self.scheduler.run(hosts, self.work, self.abandon, on_batch=lambda number, total, batch: bus.emit(
            ev.BatchStarted(number=number, total=total, hosts=tuple(hp.host.name for hp in batch))))
        return [r if r is not None else self.abandoned(hp, started) for hp, r in zip(hosts, results)]

    def with_canary(self, canary: Canary, hosts: list[HostPlan], started: float) -> list[HostResult]:
        """The canary hosts; then the rest, once the canary passed and its wait or confirmation allow it."""
        ctx, bus = self.ctx, self.ctx.bus
        first, rest = canary.split(hosts)
        chosen = canary.chosen
        bus.emit(ev.CanaryChanged(state="started", hosts=chosen.hosts, rest=chosen.rest))
        done = {hp.host.name: r for hp, r in zip(first, self.phase(first, started))}
        stopping = lambda: ctx.stop.stopping or bool(ctx.stop.halted)  # noqa: E731
        why_not = canary.verdict(list(done.values()))
        if why_not is None and stopping():
            why_not = canary.stopped(CANARY_INTERRUPTED, ctx.stop.halted or "interrupted during the canary")
        if why_not is None:
            why_not = canary.hold(stopping, lambda text: bus.emit(ev.Notice(message=text, level="warning")),
                                  ctx.dry_run)
        bus.emit(ev.CanaryChanged(state=canary.state or "failed", hosts=chosen.hosts, rest=chosen.rest,
                                  reason=why_not or ""))
        if why_not is None:
            done.update((hp.host.name, r) for hp, r in zip(rest, self.phase(rest, started)))
        else:
            for hp in rest:
                done[hp.host.name] = self.skip(hp, f"not started: the deploy stopped at the canary ({why_not})")
        return [done[hp.host.name] for hp in hosts]

    def work(self, hp: HostPlan) -> HostResult:
        why_not = self.scheduler.should_start()
        if why_not:
            return self.skip(hp, why_not)
        try:
            result = run_host(hp, self.pool.get(hp.host), self.ctx, lambda: self.pool.connect(hp.host))
        finally:
            self.pool.done(hp.host)
        self.scheduler.record(not result.ok)
        return result

    def abandon(self) -> bool:
        """After the abort has stopped what it could, give hosts a moment, then stop waiting for them."""
        if not self.ctx.stop.aborted.is_set():
            return False
        if self.abandoned_at is None:
            self.abandoned_at = time.monotonic()
        return time.monotonic() - self.abandoned_at > ABANDON_AFTER

    def abandoned(self, hp: HostPlan, started: float) -> HostResult:
        """The result of a host whose thread is still blocked on it when the run stops waiting."""
        backend = self.pool.backends.get(hp.host.name)
        left = abort_outcome(backend) if backend is not None else None
        result = HostResult(host=hp.host.name, roles=",".join(hp.roles), result=INTERRUPTED, started=started,
                            ended=time.time(), gated=hp.gated,
                            reason="abandoned after the abort: " + (left or "the host did not answer; what it "
                                                                     "was doing may still be running there"))
        self.ctx.bus.emit(ev.HostFinished(host=hp.host.name, result=result))
        return result

    def skip(self, hp: HostPlan, why_not: str) -> HostResult:
        if self.scheduler.halted_reason and not self.halted_told:
            self.halted_told = True
            self.ctx.bus.emit(ev.Notice(message=self.scheduler.halted_reason, level="error"))
        if hp.opens_gate:
            self.ctx.gate.fail(hp.host.name, "not started")
        now = time.time()
        result = HostResult(host=hp.host.name, roles=",".join(hp.roles), result=SKIPPED, started=now,
                            ended=now, reason=why_not, gated=hp.gated)
        self.ctx.bus.emit(ev.HostFinished(host=hp.host.name, result=result))
        return result
