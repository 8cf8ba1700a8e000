"""``pampa deploy``, ``pampa rollback`` and ``pampa run``: options -> one DeployRequest -> Deployment.run() -> exit code.

The lifecycle (lock, access point, hosts, results) is the engine's (``engine/deployment.py``);
this module only picks the renderers that subscribe to the run's events.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import replace
from pathlib import Path

from ..engine import events as ev
from ..engine.around.announce import Announcer
from ..engine.deployment import Deployment, DeployRequest
from ..errors import UsageError
from ..inventory import load_stage
from ..render.plain import PlainRenderer
from ..render.report import ReportWriter
from ..render.rundir import RunDirectory
from ..render.summary import SummaryPrinter
from . import output, types
from .parser import add_run_options, csv


def declare_deploy(cmd) -> None:
    p = cmd("deploy", "deploy a stage: every host, in parallel, kepler gating the rest",
            "pampa deploy production --roles newton --report deploy.json")
    p.add_argument("stage")
    p.add_argument("--skip", type=csv, action="extend", metavar="STEP[,STEP]",
                   help="leave these steps out of this deploy (repeatable)")
    p.add_argument("--preview", action="store_true",
                   help="show what this deploy would bring to each host (as `pampa pending`) and deploy nothing")
    p.add_argument("--canary", type=types.count, metavar="N|%",
                   help="deploy the first N (or N%%) hosts of each role first; the rest only if they all succeed")
    p.add_argument("--canary-wait", type=types.non_negative, metavar="SECONDS",
                   help="--canary: wait this long after the canary passed before the rest start")
    p.add_argument("--canary-pause", action="store_true",
                   help="--canary: ask at the terminal before the rest start")
    add_no_skip(p)
    add_run_options(p)
    p.set_defaults(handler=run)


def add_no_skip(p) -> None:
    p.add_argument("--no-skip", action="store_true",
                   help="bundle and migrate do their work even when nothing changed (no `bundle check`, "
                        "no migration check)")


def declare_run(cmd) -> None:
    p = cmd("run", "run chosen steps fleet-wide with the lock, gate and reports of a deploy",
            "pampa run production restart_puma --roles euler")
    p.add_argument("stage")
    p.add_argument("steps", nargs="+", metavar="STEP", help="steps to run, in the stage's order")
    add_run_options(p)
    p.set_defaults(handler=run)


def declare_rollback(cmd) -> None:
    p = cmd("rollback", "roll every host back to one revision (default: the one before the current)",
            "pampa rollback production --to 3f2a9c1 --dry-run")
    p.add_argument("stage")
    p.add_argument("--to", metavar="REV", help="target revision (must be present on every targeted host)")
    add_no_skip(p)
    add_run_options(p, "rollback")
    p.set_defaults(handler=run)


def request_from(args, stage) -> DeployRequest:
    return DeployRequest(stage=stage, kind=args.command, roles=args.roles, hosts=args.hosts,
                         to=getattr(args, "to", None), dry_run=args.dry_run, parallel=args.parallel,
                         batch=args.batch, batch_wait=args.batch_wait, max_fail=args.max_fail,
                         lock=not args.no_lock, lock_wait=args.lock_wait, message=args.message,
                         accept_new_host_keys=args.accept_new_host_keys, grace=args.grace,
                         steps=tuple(getattr(args, "steps", None) or ()) or None,
                         skip=tuple(getattr(args, "skip", None) or ()) or None,
                         no_skip=bool(getattr(args, "no_skip", False)),
                         access_point_optional=bool(getattr(args, "access_point_optional", False)),
                         canary=getattr(args, "canary", None), canary_wait=getattr(args, "canary_wait", None) or 0.0)


def check_canary(args) -> None:
    """``--canary-wait`` and ``--canary-pause`` say how a canary ends: they need ``--canary``, and one of them."""
    wait, pause = getattr(args, "canary_wait", None), getattr(args, "canary_pause", False)
    if (wait is not None or pause) and getattr(args, "canary", None) is None:
        raise UsageError(f"pampa deploy: {'--canary-pause' if pause else '--canary-wait'} needs --canary N "
                         "(how many hosts of each role go first)")
    if wait is not None and pause:
        raise UsageError("pampa deploy: give --canary-wait SECONDS or --canary-pause, not both")
    if pause and not args.dry_run:
        from .canary import at_a_terminal
        if not at_a_terminal():
            raise UsageError("pampa deploy: --canary-pause asks at a terminal, and there is none here; in CI use "
                             "--canary-wait SECONDS instead")


def _announcer(stage, rundir, message: str | None) -> Announcer:
    """Hooks and webhooks; their output and warnings go to stderr, beside the run's own output."""
    return Announcer(stage, lambda m: print(f"pampa: warning: {m}", file=sys.stderr, flush=True),
                     lambda hook, line: print(f"hook {hook} | {line}", file=sys.stderr, flush=True), rundir,
                     message)


def run(args) -> int:
    """Deploy or roll back; returns 0, or raises the PampaError that maps to the exit code."""
    if getattr(args, "preview", False):
        from .pending import pending
        return pending(args)
    check_canary(args)
    stage = load_stage(args.stage, args.stages, overrides={"branch": args.branch} if args.branch else None)
    bus = ev.EventBus()
    plain = output.is_ci(args) or args.dry_run  # a dry run's output is the list of commands: always plain
    console = output.console(args)
    live = None
    if plain:
        bus.subscribe(PlainRenderer(sys.stdout, verbose=args.verbose or args.dry_run))
    else:
        from ..render.live import LiveView
        live = LiveView(console, verbose=args.verbose)
        bus.subscribe(live)
    rundir = None if args.dry_run else RunDirectory(Path(".pampa") / "runs", stage.name, args.command,
                                                    keep=stage.runs.keep)
    if rundir is not None:
        bus.subscribe(rundir)
    bus.subscribe(SummaryPrinter(console, plain=plain, rundir=rundir))
    if args.report or args.junit:
        bus.subscribe(ReportWriter(Path(args.report) if args.report else None,
                                   Path(args.junit) if args.junit else None))
    request = request_from(args, stage)
    if getattr(args, "canary_pause", False) and not args.dry_run:
        from .canary import ask
        request = replace(request, canary_confirm=ask(live))
    try:
        with live if live is not None else contextlib.nullcontext():
            outcome = Deployment(request, bus, around=_announcer(stage, rundir, args.message)).run()
    finally:
        if rundir is not None:
            rundir.close()
    if outcome.failure is not None:
        raise outcome.failure
    return 0
