"""One deploy (or rollback) from request to result: the lifecycle lives here, not in the CLI.

``Deployment(request, bus).run()`` plans, opens the pool, installs the signal handlers,
takes the lock and registers with the access point (while the hosts connect), runs every
host under the scheduler and the gate, finishes the access point request, releases the
lock, and emits ``RunFinished`` with the exit code; renderers (summary, reports) subscribe
to it. ``pampa deploy``, ``pampa rollback`` and a pull-mode agent build the same request.
"""
from __future__ import annotations

import signal
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Callable

from ..errors import (ConfigError, ConnectError, DeployFailed, ExitCode, Interrupted, LockLost, PampaError, Refused,
                      UsageError, exit_code_for)
from ..inventory.model import Host, Stage
from ..narrow import narrow
from ..plan import HostPlan, Plan, build_plan
from . import events as ev
from . import lock as locking
from . import stop as stopping
from .apsession import AccessPointSession
from .backends.base import Backend
from .gate import OPEN, Gate
from .pipeline import RunContext, abort_outcome, run_host
from .backends.pool import BackendPool, open_pool
from .results import INTERRUPTED, SKIPPED, HostResult, RunResult
from .rollback import manages_code, resolve_target
from .scheduler import Scheduler, parse_count
from .stop import StopSignal


#: Seconds the run still waits for host threads once the abort has done what it could.
ABANDON_AFTER = 1.0


@dataclass(frozen=True)
class DeployRequest:
    """Everything one run is asked to do; the CLI's options, or an agent's request, map onto this."""

    stage: Stage
    kind: str = "deploy"                   # "deploy", "rollback" or "run" (chosen steps)
    roles: tuple[str, ...] | None = None
    hosts: tuple[str, ...] | None = None
    to: str | None = None                  # rollback target (default: the previous revision)
    dry_run: bool = False
    parallel: int | None = None            # default: the stage's `parallel`
    batch: int | str | None = None         # N or "N%"
    batch_wait: float = 0.0
    max_fail: int | str | None = None      # N or "N%"
    lock: bool = True
    lock_wait: float = 0.0
    message: str | None = None
    accept_new_host_keys: bool = False
    grace: float = 30.0                    # after the first signal, before running commands are aborted
    handle_signals: bool = True            # route SIGINT/SIGTERM to the run (main thread only)
    steps: tuple[str, ...] | None = None   # only these steps (`pampa run STAGE STEP...`)
    skip: tuple[str, ...] | None = None    # without these steps (`--skip`)
    access_point_optional: bool = False    # go on when the access point is unreachable (else: the stage's setting)
    fleet_target: bool = False             # rollback: `to` was chosen for the whole fleet elsewhere (a pull request)


@dataclass
class RunOptions:
    """How to run: concurrency, batches and the safety valves."""

    parallel: int = 32
    batch: int | None = None
    batch_wait: float = 0.0
    max_fail: int | None = None
    dry_run: bool = False
    message: str | None = None

    @classmethod
    def for_request(cls, request: DeployRequest, total: int) -> "RunOptions":
        parallel = request.parallel if request.parallel is not None else request.stage.parallel
        if parallel < 1:
            raise UsageError("--parallel: expected a positive number of hosts")
        return cls(parallel=parallel, batch=parse_count(request.batch, total, "--batch"),
                   batch_wait=request.batch_wait, max_fail=parse_count(request.max_fail, total, "--max-fail"),
                   dry_run=request.dry_run, message=request.message)


@dataclass(frozen=True)
class Outcome:
    """A finished run: its result, the error it ends with (None: every host ok) and the exit code."""

    result: RunResult
    failure: PampaError | None
    exit_code: int


class Deployment:
    """Owns one run: plan, pool, signals, lock, access point session, gate, scheduler, result."""

    def __init__(self, request: DeployRequest, bus: ev.EventBus | None = None, stop: StopSignal | None = None,
                 backends: Callable[[Host], Backend] | None = None, access_point: AccessPointSession | None = None,
                 around=None):
        """``backends`` makes each host's backend (default: SSH, or dry-run); tests pass a fake one.
        ``access_point`` replaces the stage's session (a pull-mode agent reports into an existing request).
        ``around`` (``engine/announce.Announcer``) runs the local hooks and webhooks before and after."""
        self.request = request
        self.around = around
        self.backends = backends
        self.session = access_point
        self.stage = request.stage
        self.bus = bus or ev.EventBus()
        self.stop = stop or StopSignal()
        self.lock: locking.DeployLock | None = None
        self.lost_lock: str | None = None  # why the lock stopped being ours during the run, if it did
        self.access_point: AccessPointSession | None = None
        self.draft: Plan | None = None

    def warn(self, message: str) -> None:
        self.bus.emit(ev.Notice(message=message, level="warning"))

    def plan(self, pool: BackendPool) -> Plan:
        """The run's plan; a rollback first reads its one target from the hosts (read-only)."""
        r = self.request
        revision = None
        if r.kind == "rollback":
            draft = build_plan(self.stage, r.roles, r.hosts, kind="rollback", revision="HEAD")
            self.draft = draft  # the hosts a refused rollback reports as untouched (its target is unknown)
            if r.fleet_target and not manages_code(draft):
                revision = r.to  # nothing here resets code: it restarts what it has, as in a fleet rollback
            elif r.dry_run and self.backends is None:  # a dry run reads the revisions over SSH
                with open_pool(self.stage, accept_new=r.accept_new_host_keys) as reader:
                    revision = resolve_target(self.stage, draft, reader, r.to)
            else:
                revision = resolve_target(self.stage, draft, pool, r.to)
        return narrow(build_plan(self.stage, r.roles, r.hosts, kind=r.kind, revision=revision), r.steps, r.skip)

    def run(self) -> Outcome:
        """Carry out the request; raises only when the run could not start (config, lock, refused)."""
        r = self.request
        pool = BackendPool(self.backends) if self.backends is not None else \
            open_pool(self.stage, accept_new=r.accept_new_host_keys, dry_run=r.dry_run)
        restore = lambda: None  # noqa: E731
        announced, error, plan, started = False, None, None, time.time()
        try:
            plan = self.plan(pool)
            options = RunOptions.for_request(r, len(plan.hosts))
            if self.around is not None and not r.dry_run:
                self.around.before(plan)  # a failing pre-deploy hook stops here: nothing was contacted
                announced = True
            if r.handle_signals:
                restore = stopping.install(self.stop, r.grace, self.warn)
            self.access_point = self.session if self.session is not None else \
                None if r.dry_run else AccessPointSession.for_stage(self.stage, self.warn,
                                                                    True if r.access_point_optional else None)
            result = execute(plan, pool, self.bus, options, self.stop, self.access_point,
                             preflight=lambda: self.preflight(plan, pool))
            if self.access_point is not None:
                self.access_point.finish(result.ok, result.headline())
        except BaseException as e:
            error = e
            raise
        finally:
            if self.access_point is not None:  # a no-op when finished above or never registered
                self.access_point.abandon("pampa stopped before the run finished")
            self.release_lock()
            pool.close_all()
            restore()
            planned = plan if plan is not None else self.draft
            if planned is not None and is_refusal(error):  # the CI artifacts exist for a refused run too
                self.bus.emit(ev.RunFinished(result=refused_result(planned, started, error, r.dry_run),
                                             exit_code=exit_code_for(error)))
            if announced and error is not None:
                self.around.after(plan, None, error)
        result = with_unreported(result, self.access_point)
        failure = failure_for(result, self.lost_lock)
        code = exit_code_for(failure) if failure is not None else int(ExitCode.OK)
        self.bus.emit(ev.RunFinished(result=result, exit_code=code))
        if announced:
            self.around.after(plan, result)  # after RunFinished: the report the hooks are given is written
        return Outcome(result, failure, code)

    def preflight(self, plan: Plan, pool: BackendPool) -> None:
        """Lock, then register with the access point; runs while the hosts connect."""
        if not self.request.dry_run and self.request.lock:
            self.lock = self.take_lock(plan, pool)
        if self.access_point is None:
            return
        who = (self.lock.info.get("user") if self.lock else None) or "unknown"
        deploy_id = self.access_point.register(self.stage.name, plan.branch, plan.revision, who,
                                               self.stage.lock_host.name, lock_held=self.lock is not None)
        if deploy_id is None:  # optional and unreachable: said loudly already
            return
        self.bus.emit(ev.Notice(message=f"access point: deploy request {deploy_id} registered and taken",
                                level="info"))

    def take_lock(self, plan: Plan, pool: BackendPool) -> locking.DeployLock:
        r, host = self.request, self.stage.lock_host
        pool.pin(host)
        try:
            backend = pool.connect(host)
        except ConnectError as e:
            raise Refused(f"cannot take the deploy lock on {host.name}; nothing was changed: {e.message}") from None
        lease = int(self.stage.lock.lease)
        info = locking.holder_info(self.stage.name, plan.branch, r.message, lease)
        lock = locking.DeployLock(backend, self.stage.lock.path, self.stage.name, info, lease)
        lock.acquire(wait=r.lock_wait, on_wait=lambda state: self.warn(
            f"lock held: {state.describe()}; waiting up to {r.lock_wait:g}s"))
        if lock.took_stale is not None:
            self.warn(f"took over a stale lock left by {lock.took_stale.get('user', '?')}@"
                      f"{lock.took_stale.get('machine', '?')} (its lease had expired)")
        lock.on_lost = self.lock_lost
        lock.start_renewing()
        return lock

    def lock_lost(self, why: str) -> None:
        """Another deploy may be running now: start no new host and say so loudly; the run exits 3."""
        self.stop.halt(f"the deploy lock was {why}")
        self.bus.emit(ev.Notice(message=f"LOCK LOST: the deploy lock of stage {self.stage.name} on "
                                        f"{self.stage.lock_host.name} was {why}; another deploy may be running. "
                                        "No new host will be started; hosts already running finish their steps",
                                level="error"))

    def release_lock(self) -> None:
        lock, self.lock = self.lock, None
        if lock is not None and lock.lost:
            self.lost_lock = lock.lost
        if lock is None:
            return
        try:
            lock.release()
        except Exception as e:  # noqa: BLE001 - report, never mask the run's own outcome
            self.warn(f"could not release the lock on {lock.backend.name}: {e}; it is no longer renewed, so "
                      f"it goes stale {lock.lease}s after its last renewal and the next deploy takes it over, "
                      f"or run `pampa unlock {self.stage.name}`")


def with_unreported(result: RunResult, access_point: AccessPointSession | None) -> RunResult:
    """The result with a note listing what an unreachable (optional) access point was never told."""
    unreported = getattr(access_point, "unreported", None)  # a pull-mode node session has none
    if not unreported:
        return result
    note = (f"ACCESS POINT UNREACHABLE ({access_point.down}); not reported: "
            + "; ".join(dict.fromkeys(unreported)))
    return replace(result, notes=result.notes + (note,))


def is_refusal(error: BaseException | None) -> bool:
    """A run stopped before it touched any host by a safety check (lock held, lock host unreachable, a
    failing pre-deploy hook, the access point): not a mistake in the command line or the inventory."""
    return isinstance(error, PampaError) and not isinstance(error, (ConfigError, Interrupted))


def refused_result(plan: Plan, started: float, error: PampaError, dry_run: bool = False) -> RunResult:
    """The result of a refused run: every planned host skipped and untouched, the refusal as the reason."""
    now = time.time()
    why = "not started: the run was refused before any command ran"
    hosts = tuple(HostResult(host=hp.host.name, roles=",".join(hp.roles), result=SKIPPED, started=started,
                             ended=now, reason=why, gated=hp.gated) for hp in plan.hosts)
    return RunResult(stage=plan.stage.name, kind=plan.kind, branch=plan.branch, started=started, ended=now,
                     hosts=hosts, gate="closed" if plan.has_gate else "none", notes=tuple(plan.notes),
                     dry_run=dry_run, refused=error.message)  # no revision: none was deployed, none was read


def _signal_name(signum: int) -> str:
    """``SIGINT (Ctrl-C)`` rather than ``signal 2``: the words an operator knows."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
    return f"{name} (Ctrl-C)" if signum == signal.SIGINT else name


def failure_for(result: RunResult, lost_lock: str | None = None) -> PampaError | None:
    """The error a finished run ends with, or None when every host succeeded."""
    kind, stage = result.kind, result.stage
    if result.interrupted_by:
        return Interrupted(f"{kind} interrupted by {_signal_name(result.interrupted_by)}; "
                           f"`pampa status {stage}` shows where each host stopped", result.interrupted_by)
    if lost_lock:
        return LockLost(f"{kind} of {stage} stopped starting hosts: its deploy lock was {lost_lock}; "
                        f"`pampa status {stage}` shows where each host is")
    if not result.ok:
        bad = [h.host for h in result.hosts if not h.ok]
        total = f"{len(result.hosts)} {'host' if len(result.hosts) == 1 else 'hosts'}"
        return DeployFailed(f"{kind} of {stage} did not succeed on {len(bad)} of {total}: "
                            f"{', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}")
    return None


class _Execution:
    """The moving parts of one ``execute``: gate, scheduler, preflight thread, and the per-host work."""

    def __init__(self, plan: Plan, pool: BackendPool, bus: ev.EventBus, options: RunOptions, stop: StopSignal,
                 access_point: AccessPointSession | None, run_id: str):
        self.plan, self.pool, self.bus, self.options, self.stop = plan, pool, bus, options, stop
        self.access_point = access_point
        self.opened_at: float | None = None
        self.abandoned_at: float | None = None
        self.halted_told = False
        self.gate = Gate(plan.gate_hosts if plan.has_gate else (), self.on_gate)
        self.ctx = RunContext(plan=plan, bus=bus, gate=self.gate, stop=stop, access_point=access_point,
                              dry_run=options.dry_run, run_id=run_id, message=options.message)
        self.scheduler = Scheduler(options.parallel, options.batch, options.batch_wait, options.max_fail,
                                   stopping=lambda: stop.stopping, halted=lambda: stop.halted)

    def on_gate(self, state: str, reason: str) -> None:
        if state == OPEN:
            if self.opened_at is None:
                self.opened_at = time.time()
            if self.access_point is not None and not self.options.dry_run:
                self.access_point.allow()
        self.bus.emit(ev.GateChanged(state=state, reason=reason))

    def start_preflight(self, preflight) -> None:
        def run() -> None:
            try:
                if preflight is not None:
                    preflight()
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread by execute
                self.ctx.refused = e
            finally:
                self.ctx.ready.set()

        threading.Thread(target=run, name="pampa-preflight", daemon=True).start()

    def announce(self) -> None:
        plan, gate = self.plan, self.gate
        self.bus.emit(ev.RunStarted(stage=plan.stage.name, kind=plan.kind, branch=plan.branch,
                                    dry_run=self.options.dry_run,
                                    hosts=tuple((h.host.name, ",".join(h.roles), h.gated) for h in plan.hosts)))
        if plan.has_gate:
            self.bus.emit(ev.GateChanged(state=gate.state, reason="waiting for kepler" if gate.state != OPEN else
                                         "no kepler host in this run"))

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
        if not self.stop.aborted.is_set():
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
        self.bus.emit(ev.HostFinished(host=hp.host.name, result=result))
        return result

    def skip(self, hp: HostPlan, why_not: str) -> HostResult:
        if self.scheduler.halted_reason and not self.halted_told:
            self.halted_told = True
            self.bus.emit(ev.Notice(message=self.scheduler.halted_reason, level="error"))
        if hp.opens_gate:
            self.gate.fail(hp.host.name, "not started")
        now = time.time()
        result = HostResult(host=hp.host.name, roles=",".join(hp.roles), result=SKIPPED, started=now,
                            ended=now, reason=why_not, gated=hp.gated)
        self.bus.emit(ev.HostFinished(host=hp.host.name, result=result))
        return result


def execute(plan: Plan, pool: BackendPool, bus: ev.EventBus, options: RunOptions, stop: StopSignal,
            access_point: AccessPointSession | None = None, run_id: str | None = None,
            preflight=None) -> RunResult:
    """Deploy (or roll back) every host of ``plan``; returns a result for each, whatever happened.

    ``preflight`` (take the lock, register with the access point) runs while the hosts connect;
    no host runs a command before it is done. If it raises, no host runs anything and the error
    is raised here once every host has stopped.
    """
    started = time.time()
    run = _Execution(plan, pool, bus, options, stop, access_point, run_id or uuid.uuid4().hex[:12])
    stop.on_hard(pool.abort_all)
    run.start_preflight(preflight)
    run.announce()
    results = run.scheduler.run(list(plan.hosts), run.work, run.abandon, on_batch=lambda number, total, batch: bus.emit(
        ev.BatchStarted(number=number, total=total, hosts=tuple(hp.host.name for hp in batch))))
    results = [r if r is not None else run.abandoned(hp, started) for hp, r in zip(plan.hosts, results)]
    run.ctx.ready.wait(None if not stop.aborted.is_set() else 5.0)
    if run.ctx.refused is not None:
        raise run.ctx.refused
    notes = list(plan.notes) + ([run.scheduler.halted_reason] if run.scheduler.halted_reason else []) + \
        ([stop.halted] if stop.halted else [])
    return RunResult(stage=plan.stage.name, kind=plan.kind, branch=plan.branch, started=started, ended=time.time(),
                     hosts=tuple(results), gate=run.gate.state if plan.has_gate else "none",
                     gate_opened_at=run.opened_at, interrupted_by=stop.signum, notes=tuple(notes),
                     revision=plan.revision, dry_run=options.dry_run,
                     deploy_id=access_point.deploy_id if access_point is not None else None)
