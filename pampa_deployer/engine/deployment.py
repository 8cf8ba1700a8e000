"""One deploy (or rollback, or `pampa run`) from request to result: the lifecycle lives here, not in the CLI.

``Deployment(request, bus).run()`` is the one owner of a run: it plans, opens the pool, installs
the signal handlers, starts the preflight (lock, access point registration) while the hosts
connect, rolls the plan out over the fleet under the scheduler and the gate, finishes the access
point request, releases the lock, and emits ``RunFinished`` once, with the exit code; renderers
(summary, reports) subscribe to it. ``pampa deploy``, ``pampa rollback``, ``pampa run`` and a
pull-mode agent build the same request.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from typing import Callable

from ..errors import ConfigError, ConnectError, ExitCode, Interrupted, PampaError, Refused, UsageError, exit_code_for
from ..inventory.model import Host, Stage
from ..narrow import narrow
from ..plan import Plan, build_plan
from . import events as ev
from . import lock as locking
from . import stop as stopping
from .apsession import AccessPointSession, Session
from .backends.base import Backend
from .backends.pool import BackendPool, open_pool
from .canary import Canary, Confirm, choose
from .gate import OPEN, Gate
from .pipeline import RunContext
from .preflight import Preflight
from .results import NOT_STARTED_REFUSED, SKIPPED, HostResult, RunResult, failure_for
from .rollback import manages_code, resolve_target
from .rollout import Rollout
from .scheduler import Scheduler, parse_count
from .stop import StopSignal

#: Seconds an aborted run still waits for its preflight (the lock, the access point) to end.
PREFLIGHT_AFTER_ABORT = 5.0


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
    skip: tuple[str, ...] | None = None    # without these steps
    no_skip: bool = False                  # bundle and migrate do their work even when nothing changed (`--no-skip`)
    access_point_optional: bool = False    # go on when the access point is unreachable (else: the stage's setting)
    fleet_target: bool = False             # rollback: `to` was chosen for the whole fleet elsewhere (a pull request)
    run_id: str | None = None              # default: a new random id (a pull-mode agent: request-ID-CREATED)
    canary: int | str | None = None        # N or "N%" hosts of each role first (engine/canary.py)
    canary_wait: float = 0.0               # seconds between the canary passing and the rest starting
    canary_confirm: Confirm | None = None  # ask (at a terminal) before the rest start


@dataclass(frozen=True)
class RunOptions:
    """How to run: concurrency, batches and the safety valves, resolved against the number of hosts."""

    parallel: int = 32
    batch: int | None = None
    batch_wait: float = 0.0
    max_fail: int | None = None

    @classmethod
    def for_request(cls, request: DeployRequest, total: int) -> "RunOptions":
        parallel = request.parallel if request.parallel is not None else request.stage.parallel
        if parallel < 1:
            raise UsageError("parallel: expected a positive number of hosts")
        return cls(parallel=parallel, batch=parse_count(request.batch, total, "batch"),
                   batch_wait=request.batch_wait, max_fail=parse_count(request.max_fail, total, "max_fail"))

    def scheduler(self, stop: StopSignal) -> Scheduler:
        return Scheduler(self.parallel, self.batch, self.batch_wait, self.max_fail,
                         stopping=lambda: stop.stopping, halted=lambda: stop.halted)


@dataclass(frozen=True)
class Outcome:
    """A finished run: its result, the error it ends with (None: every host ok) and the exit code."""

    result: RunResult
    failure: PampaError | None
    exit_code: int


class Deployment:
    """Owns one run: plan, pool, signals, preflight (lock, access point), gate, rollout, result."""

    def __init__(self, request: DeployRequest, bus: ev.EventBus | None = None, stop: StopSignal | None = None,
                 backends: Callable[[Host], Backend] | None = None, access_point: Session | None = None,
                 around=None):
        """``backends`` makes each host's backend (default: SSH, or dry-run); tests pass a fake one.
        ``access_point`` is the run's session (a pull-mode agent reports into an existing request);
        without one, the stage's own is made (none in a dry run, or without ``access_point.url``).
        ``around`` (``engine/around/announce.Announcer``) runs the local hooks and webhooks before and after."""
        self.request = request
        self.around = around
        self.backends = backends
        self.access_point = access_point
        self.stage = request.stage
        self.bus = bus or ev.EventBus()
        self.stop = stop or StopSignal()
        self.run_id = request.run_id or uuid.uuid4().hex[:12]
        self.lock: locking.DeployLock | None = None
        self.lost_lock: str | None = None  # why the lock stopped being ours during the run, if it did
        self.planned: Plan | None = None   # the hosts a refused run reports as untouched
        self.announced = False
        self.hooked = False  # the pre-* hook was reached (announced or refused by it)

    def warn(self, message: str) -> None:
        self.bus.emit(ev.Notice(message=message, level="warning"))

    def plan(self, pool: BackendPool) -> Plan:
        """The run's plan; a rollback first reads its one target from the hosts (read-only)."""
        r = self.request
        revision = None
        if r.kind == "rollback":
            draft = build_plan(self.stage, r.roles, r.hosts, kind="rollback", revision="HEAD")
            self.planned = draft  # a refused rollback reports these hosts untouched (its target is unknown)
            if r.fleet_target and not manages_code(draft):
                revision = r.to  # nothing here resets code: it restarts what it has, as in a fleet rollback
            elif r.dry_run and self.backends is None:  # a dry run reads the revisions over SSH
                with open_pool(self.stage, accept_new=r.accept_new_host_keys) as reader:
                    revision = resolve_target(self.stage, draft, reader, r.to)
            else:
                revision = resolve_target(self.stage, draft, pool, r.to)
        self.planned = narrow(build_plan(self.stage, r.roles, r.hosts, kind=r.kind, revision=revision,
                                         skip_unchanged=not r.no_skip), r.steps, r.skip)
        return self.planned

    def run(self) -> Outcome:
        """Carry out the request; raises only when the run could not start (config, lock, refused)."""
        r = self.request
        pool = BackendPool(self.backends) if self.backends is not None else \
            open_pool(self.stage, accept_new=r.accept_new_host_keys, dry_run=r.dry_run)
        restore = lambda: None  # noqa: E731
        started = time.time()
        try:
            plan = self.plan(pool)
            options = RunOptions.for_request(r, len(plan.hosts))
            if self.around is not None and not r.dry_run:
                self.hooked = True  # the pre-* hook is reached: a refusal by it leaves no trace (docs/design.md)
                self.around.before(plan)  # a failing pre-deploy hook stops here: nothing was contacted
                self.announced = True
            if r.handle_signals:
                restore = stopping.install(self.stop, r.grace, self.warn)
            if self.access_point is None and not r.dry_run:
                self.access_point = AccessPointSession.for_stage(self.stage, self.warn,
                                                                 True if r.access_point_optional else None, self.stop)
            result = self.roll_out(plan, pool, options)
            if self.access_point is not None:
                self.access_point.finish(result.ok, result.headline())
        except BaseException as e:
            self.close(pool, restore)
            self.refused(e, started)
            raise
        self.close(pool, restore)
        return self.finished(result)

    def roll_out(self, plan: Plan, pool: BackendPool, options: RunOptions) -> RunResult:
        """Every host of ``plan``, with the preflight running while they connect; a result for each.

        No host runs a command before the preflight is done; if it fails, no host runs anything
        and its error is raised here once every host has stopped.
        """
        started = time.time()
        gate = Gate(plan.gate_hosts if plan.has_gate else (), self.on_gate)
        preflight = Preflight(lambda: self.preflight(plan, pool)).start()
        ctx = RunContext(plan=plan, bus=self.bus, gate=gate, stop=self.stop, preflight=preflight,
                         access_point=self.access_point, dry_run=self.request.dry_run, run_id=self.run_id,
                         message=self.request.message)
        self.stop.on_hard(pool.abort_all)
        self.stop.on_soft(pool.hold_all)
        self.announce(plan, gate)
        scheduler = options.scheduler(self.stop)
        canary = self.canary(plan)
        hosts = Rollout(ctx, pool, scheduler, canary).run()
        preflight.settle(None if not self.stop.aborted.is_set() else PREFLIGHT_AFTER_ABORT)
        notes = list(plan.notes) + [n for n in (scheduler.halted_reason, self.stop.halted) if n]
        if canary is not None:
            notes += list(canary.chosen.notes) + ([f"the deploy stopped at the canary: {canary.reason}"]
                                                  if canary.reason else [])
        return RunResult(stage=plan.stage.name, kind=plan.kind, branch=plan.branch, started=started,
                         ended=time.time(), hosts=tuple(hosts), gate=gate.state if plan.has_gate else "none",
                         gate_opened_at=gate.opened_at, interrupted_by=self.stop.signum, notes=tuple(notes),
                         revision=plan.revision, dry_run=self.request.dry_run, message=self.request.message,
                         deploy_id=self.access_point.deploy_id if self.access_point is not None else None,
                         canary=canary.summary() if canary is not None else None)

    def canary(self, plan: Plan) -> Canary | None:
        """The run's canary (``--canary``), chosen from the plan; None without one."""
        r = self.request
        if r.canary is None:
            return None
        try:
            chosen = choose(plan, r.canary)
        except ValueError:
            raise UsageError(f"canary: expected a positive count or a percentage like 25%, got {r.canary!r}") from None
        return Canary(chosen, r.canary_wait, r.canary_confirm)

    def announce(self, plan: Plan, gate: Gate) -> None:
        self.bus.emit(ev.RunStarted(stage=plan.stage.name, kind=plan.kind, branch=plan.branch,
                                    dry_run=self.request.dry_run,
                                    hosts=tuple((h.host.name, ",".join(h.roles), h.gated) for h in plan.hosts)))
        if plan.has_gate:
            self.bus.emit(ev.GateChanged(state=gate.state, reason="waiting for kepler" if gate.state != OPEN else
                                         "no kepler host in this run"))

    def on_gate(self, state: str, reason: str) -> None:
        if state == OPEN and self.access_point is not None and not self.request.dry_run:
            self.access_point.allow()
        self.bus.emit(ev.GateChanged(state=state, reason=reason))

    def preflight(self, plan: Plan, pool: BackendPool) -> None:
        """Lock, then register with the access point; runs while the hosts connect."""
        if not self.request.dry_run and self.request.lock:
            self.lock = self.take_lock(plan, pool)
        if self.access_point is None:
            return
        who = (self.lock.info.get("user") if self.lock else None) or "unknown"
        deploy_id = self.access_point.register(self.stage.name, plan.branch, plan.revision, who,
                                               self.stage.lock_host.name, lock_held=self.lock is not None,
                                               message=self.request.message)
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
                      f"{lock.took_stale.get('machine', '?')} ({lock.took_dead or 'its lease had expired'})")
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

    def close(self, pool: BackendPool, restore: Callable[[], None]) -> None:
        """Whatever happened: close an open access point request, release the lock, close the connections,
        put the signal handlers back."""
        if self.access_point is not None:  # a no-op when finished already or never registered
            self.access_point.abandon("pampa stopped before the run finished")
        self.release_lock()
        pool.close_all()
        restore()

    def release_lock(self) -> None:
        lock, self.lock = self.lock, None
        if lock is None:
            return
        if lock.lost:
            self.lost_lock = lock.lost
        try:
            lock.release()
        except Exception as e:  # noqa: BLE001 - report, never mask the run's own outcome
            self.warn(f"could not release the lock on {lock.backend.name}: {e}; it is no longer renewed, so "
                      f"it goes stale {lock.lease}s after its last renewal and the next deploy takes it over, "
                      f"or run `pampa unlock {self.stage.name}`")

    def finished(self, result: RunResult) -> Outcome:
        """The run ended: its result (with what the access point was not told), its error and exit code."""
        result = with_unreported(result, self.access_point)
        failure = failure_for(result, self.lost_lock)
        code = exit_code_for(failure) if failure is not None else int(ExitCode.OK)
        self.emit_finished(result, code)
        if self.announced:
            self.around.after(self.planned, result)  # after RunFinished: the report the hooks get is written
        return Outcome(result, failure, code)

    def refused(self, error: BaseException, started: float) -> None:
        """The run ends with ``error`` instead of a result: a refusal still writes its reports (every host
        skipped and untouched), and the hooks and webhooks that announced it hear how it ended."""
        if self.planned is not None and is_refusal(error):
            self.emit_finished(replace(refused_result(self.planned, started, error, self.request.dry_run),
                                       message=self.request.message), exit_code_for(error))
        if self.announced:
            self.around.after(self.planned, None, error)
        elif self.around is not None and not self.request.dry_run and not self.hooked and \
                self.planned is not None and is_refusal(error):  # refused while planning: a rollback target missing
            self.around.after(replace(self.planned, revision=self.request.to), None, error)  # webhook, on-failure

    def emit_finished(self, result: RunResult, exit_code: int) -> None:
        """The one place a run says it is over (lock released, connections closed)."""
        self.bus.emit(ev.RunFinished(result=result, exit_code=exit_code))


def with_unreported(result: RunResult, access_point: Session | None) -> RunResult:
    """The result with a note listing what an unreachable access point was never told (optional mode, or
    version reports it could not take within their retry period)."""
    if access_point is None or not access_point.unreported:
        return result
    note = (f"ACCESS POINT UNREACHABLE ({access_point.down}); not reported: "
            + "; ".join(dict.fromkeys(access_point.unreported)))
    return replace(result, notes=result.notes + (note,))


def is_refusal(error: BaseException | None) -> bool:
    """A run stopped before it touched any host by a safety check (lock held, lock host unreachable, a
    failing pre-deploy hook, the access point): not a mistake in the command line or the inventory."""
    return isinstance(error, PampaError) and not isinstance(error, (ConfigError, Interrupted))


def refused_result(plan: Plan, started: float, error: PampaError, dry_run: bool = False) -> RunResult:
    """The result of a refused run: every planned host skipped and untouched, the refusal as the reason."""
    now = time.time()
    why = NOT_STARTED_REFUSED
    hosts = tuple(HostResult(host=hp.host.name, roles=",".join(hp.roles), result=SKIPPED, started=started,
                             ended=now, reason=why, gated=hp.gated) for hp in plan.hosts)
    return RunResult(stage=plan.stage.name, kind=plan.kind, branch=plan.branch, started=started, ended=now,
                     hosts=hosts, gate="closed" if plan.has_gate else "none", notes=tuple(plan.notes),
                     dry_run=dry_run, refused=error.message)  # no revision: none was deployed, none was read
