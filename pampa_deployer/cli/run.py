"""``pampa deploy`` and ``pampa rollback``: validate, lock, register, run, report, unlock."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from ..accesspoint.client import AccessPointClient
from ..engine import events as ev
from ..engine import lock as locking
from ..engine import stop as stopping
from ..engine.deployment import BackendPool, RunOptions, execute
from ..engine.dryrun import DryRunBackend
from ..engine.ssh import SSHBackend, SSHSettings
from ..errors import (AccessPointError, ConnectError, DeployFailed, ExitCode, Interrupted, PampaError, Refused,
                      UsageError, exit_code_for)
from ..engine.announce import Announcer
from ..inventory import load_stage
from ..narrow import narrow
from ..plan import build_plan
from ..render import report as reports
from ..render import summary, timeline
from ..render.plain import PlainRenderer
from ..render.rundir import RunDirectory
from . import output
from .rollback import resolve_target


def _options(args, stage, total: int) -> RunOptions:
    from ..engine.scheduler import parse_count
    parallel = args.parallel if args.parallel is not None else int(stage.setting("parallel") or 32)
    if parallel < 1:
        raise UsageError("--parallel: expected a positive number of hosts")
    return RunOptions(parallel=parallel, batch=parse_count(args.batch, total, "--batch"),
                      batch_wait=args.batch_wait, max_fail=parse_count(args.max_fail, total, "--max-fail"),
                      dry_run=args.dry_run)


def pool_for(stage, args, dry_run: bool = False) -> BackendPool:
    if dry_run:
        return BackendPool(lambda host: DryRunBackend(host.name))
    settings = SSHSettings.from_stage(stage, accept_new=True if getattr(args, "accept_new_host_keys", False)
                                      else None)
    return BackendPool(lambda host: SSHBackend(host, settings))


def run(args) -> int:
    """Deploy or roll back; returns 0, or raises the PampaError that maps to the exit code."""
    kind = args.command
    overrides = {"branch": args.branch} if args.branch else None
    stage = load_stage(args.stage, args.stages, overrides=overrides)
    ci = output.is_ci(args)
    console = output.console(args)
    pool = pool_for(stage, args, args.dry_run)
    stop = stopping.StopSignal()
    bus = ev.EventBus()
    lock = None
    rundir = None
    announcer = None
    result = None
    restore = lambda: None  # noqa: E731
    try:
        revision = None
        if kind == "rollback":
            draft = build_plan(stage, args.roles, args.hosts, kind="rollback", revision="HEAD")
            reader = pool_for(stage, args) if args.dry_run else pool
            try:
                revision = resolve_target(stage, draft, reader, args.to)
            finally:
                if reader is not pool:
                    reader.close_all()
        plan = build_plan(stage, args.roles, args.hosts, kind=kind, revision=revision)
        plan = narrow(plan, only=getattr(args, "steps", None), skip=getattr(args, "skip", None))
        options = _options(args, stage, len(plan.hosts))
        if not args.dry_run:
            announcer = Announcer(plan, lambda m: print(f"pampa: warning: {m}", file=sys.stderr, flush=True),
                                  lambda hook, line: print(f"hook {hook} | {line}", file=sys.stderr, flush=True))
            announcer.before()  # a failing pre-deploy hook stops here: nothing was contacted

        view = None
        if ci or args.dry_run:
            # A dry run's output is the list of commands: always plain, always with the commands.
            bus.subscribe(PlainRenderer(sys.stdout, verbose=args.verbose or args.dry_run))
        else:
            from ..render.live import LiveView
            view = LiveView(console, verbose=args.verbose)
            bus.subscribe(view)
        if not args.dry_run:
            rundir = RunDirectory(Path(".pampa") / "runs", stage.name, kind)
            bus.subscribe(rundir)

        def notify(message: str) -> None:
            bus.emit(ev.Notice(message=message, level="warning"))

        restore = stopping.install(stop, args.grace, notify)
        client = None if args.dry_run else AccessPointClient.from_stage(stage)
        held: list = []

        def preflight() -> int | None:
            """Lock, then register with the access point; runs while the hosts connect."""
            if not args.dry_run and not args.no_lock:
                held.append(_take_lock(stage, plan, pool, args, bus))
            if client is None:
                return None
            deploy_id = _register(client, stage, plan, held[0] if held else None)
            bus.emit(ev.Notice(message=f"access point: deploy request {deploy_id} registered and taken",
                               level="info"))
            return deploy_id

        try:
            with (view if view is not None else contextlib.nullcontext()):
                result = execute(plan, pool, bus, options, stop, client, preflight=preflight)
        except BaseException as e:
            if announcer is not None:
                announcer.after(None, e)
            raise
        finally:
            lock = held[0] if held else None
        if client is not None and result.deploy_id is not None:
            try:
                client.finish(result.deploy_id, "done" if result.ok else "failed",
                              "" if result.ok else summary.headline(result))
            except AccessPointError as e:
                bus.emit(ev.Notice(message=f"could not mark the deploy finished: {e}", level="warning"))
    finally:
        if lock is not None:
            try:
                lock.release()
            except Exception as e:  # noqa: BLE001 - report, never mask the run's own outcome
                print(f"pampa: warning: could not release the lock on {lock.backend.name}: {e}; "
                      f"run `pampa unlock {stage.name}`", file=sys.stderr)
        pool.close_all()
        restore()
        if rundir is not None:
            rundir.close()

    failure = _failure(result, kind, stage.name)
    # The report's exit code comes from the same mapping as the process's (errors.exit_code_for).
    code = exit_code_for(failure) if failure is not None else int(ExitCode.OK)
    _finish_output(result, code, args, console, ci, rundir)
    if announcer is not None:
        announcer.after(result, report=rundir.path / "report.json" if rundir else None,
                        run_dir=rundir.path if rundir else None)
    if failure is not None:
        raise failure
    return 0


def _failure(result, kind: str, stage: str) -> PampaError | None:
    """The error a finished run ends with, or None when every host succeeded."""
    if result.interrupted_by:
        return Interrupted(f"{kind} interrupted by signal {result.interrupted_by}; "
                           f"`pampa status {stage}` shows where each host stopped", result.interrupted_by)
    if not result.ok:
        bad = [h.host for h in result.hosts if not h.ok]
        return DeployFailed(f"{kind} of {stage} did not succeed on {len(bad)} of {len(result.hosts)} hosts: "
                            f"{', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}")
    return None


def _take_lock(stage, plan, pool, args, bus) -> locking.DeployLock:
    host = stage.lock_host
    pool.pin(host)
    try:
        backend = pool.connect(host)
    except ConnectError as e:
        raise Refused(f"cannot take the deploy lock on {host.name}; nothing was changed: {e.message}") from None
    lease = int(stage.setting("lock.lease") or 90)
    info = locking.holder_info(stage.name, plan.branch, args.message, lease)
    lock = locking.DeployLock(backend, str(stage.setting("lock.path") or "~/.pampa/locks"), stage.name, info, lease)

    def waiting(state) -> None:
        bus.emit(ev.Notice(message=f"lock held: {state.describe()}; waiting up to {args.lock_wait:g}s",
                           level="warning"))

    lock.acquire(wait=args.lock_wait, on_wait=waiting)
    if lock.took_stale is not None:
        bus.emit(ev.Notice(message=f"took over a stale lock left by {lock.took_stale.get('user', '?')}@"
                                   f"{lock.took_stale.get('machine', '?')} (its lease had expired)", level="warning"))
    lock.start_renewing()
    return lock


def _register(client, stage, plan, lock) -> int:
    who = (lock.info.get("user") if lock else None) or "unknown"
    request = client.create_deploy(stage.name, plan.branch, who, plan.revision)
    deploy_id = request["id"]
    client.take(deploy_id, stage.lock_host.name)
    return deploy_id


def _finish_output(result, code, args, console, ci, rundir) -> None:
    if ci or args.dry_run:
        summary.print_plain(result, lambda line: print(line, flush=True))
    else:
        summary.print_rich(result, console)
        console.print(timeline.build(result, width=max(20, min(100, console.width - 40))))
    if rundir is not None:
        reports.write_json(result, code, rundir.path / "report.json")
        timeline.export(result, rundir.path / "timeline.svg", rundir.path / "timeline.html")
    if args.report:
        reports.write_json(result, code, Path(args.report))
    if args.junit:
        reports.write_junit(result, Path(args.junit))
    if rundir is not None:
        where = f"run directory: {rundir.path}"
        print(where, flush=True) if ci else console.print(where, style="dim")
