"""Restarting puma, the processes (dispatchers, jobs, planners) and the workers.

A service pampa can reach is drained before it starts again: TERM, up to ``units.stop_timeout`` seconds
for its running job, then KILL (``units.pid_file``: pampa signals the pid), or systemd's own stop
(``units.stop``); one it cannot gets ``units.restart`` alone, as before. Puma can instead restart without
dropping a request (``units.puma_restart: hot`` or ``phased``): then the step ends only once puma's
control app lists every worker booted on the new code. The shell lives in ``commands/service.py`` and
``commands/puma.py``; this module fills the stage's templates.
"""
from __future__ import annotations

from ..commands import puma
from ..commands.service import Service, describe_drain, drain
from ..inventory.settings import UnitsView, view
from ..shell import fill_plain, render
from .actions import Restart, Run, StepContext

#: Programs the restart scripts run besides POSIX tools and coreutils (``pampa check`` looks for them).
_PUMA_USES = ("curl", "awk")

#: Seconds a restart command gets beyond what it may wait for (the start, KILL's own wait): the step's
#: timeout is at least that much (plan.py), so the step's own bound never cuts a wait it promised short.
_SLACK = 60.0


def _units(ctx: StepContext) -> UnitsView:
    return view(ctx.settings, "units", UnitsView)  # defaults from the schema, not restated here


def service(ctx: StepContext, units: UnitsView, name: str) -> Service:
    """One unit as pampa reaches it: by its pid file when ``units.pid_file`` is set, else through systemd."""
    variables = {**ctx.variables, "unit": name}
    start = render(units.restart, variables)
    if units.pid_file:
        return Service(name, start, pid_file=fill_plain(units.pid_file, variables))
    return Service(name, start, stop=render(units.stop, variables) if units.stop else "",
                   reload=render(units.reload, variables))


def _names(ctx: StepContext, units: UnitsView, group: str) -> list[str]:
    return [fill_plain(str(u), ctx.variables) for u in getattr(units, group) or []]


def _uses(svc: Service, *more: str, ask: str = "stop") -> tuple[str, ...]:
    """What the script runs besides built-ins: ``more``, the start, and the stop (a drain) or the reload."""
    managed = getattr(svc, ask) if svc.pid_file is None else ""
    return (*more, svc.start, *([managed] if managed else []))


def _drains(ctx: StepContext, group: str) -> tuple[Restart | Run, ...]:
    """Each unit drained, then started; a unit pampa knows only how to restart gets ``units.restart`` alone."""
    units = _units(ctx)
    out: list[Restart | Run] = []
    for name in _names(ctx, units, group):
        svc = service(ctx, units, name)
        if svc.pid_file is None and not svc.stop:
            out.append(Run(ctx.command(svc.start, cwd=False)))
            continue
        out.append(Restart(unit=name, summary=describe_drain(svc, units.stop_timeout),
                           command=ctx.command(drain(svc, units.stop_timeout), cwd=False,
                                               timeout=units.stop_timeout + _SLACK),
                           uses=_uses(svc)))
    return tuple(out)


def restart_puma(ctx: StepContext) -> tuple[Restart | Run, ...]:
    units = _units(ctx)
    mode = units.puma_restart
    if mode == puma.FULL:
        return _drains(ctx, "puma")
    out = []
    for name in _names(ctx, units, "puma"):
        svc = service(ctx, units, name)
        state = fill_plain(units.puma_state, {**ctx.variables, "unit": name})
        script = puma.restart(svc, mode, state, ctx.live_path, units.restart_timeout, ctx.host.path,
                              units.stop_timeout)
        out.append(Restart(unit=name, summary=puma.describe(svc, mode, state, units.restart_timeout),
                           command=ctx.command(script, cwd=False,
                                               timeout=units.restart_timeout + units.stop_timeout + _SLACK),
                           uses=_uses(svc, *_PUMA_USES, ask="reload"),
                           probe=puma.probe(svc, state, ctx.host.path, ctx.live_path, ctx.layout is not None)))
    return tuple(out)


def restart_processes(ctx: StepContext) -> tuple[Restart | Run, ...]:
    return _drains(ctx, "processes")


def restart_workers(ctx: StepContext) -> tuple[Restart | Run, ...]:
    return _drains(ctx, "workers")
