"""Restarting puma, the processes (dispatchers, jobs, planners) and the workers."""
from __future__ import annotations

from ..inventory.settings import UnitsView, view
from ..shell import fill_plain, render
from .actions import Run, StepContext


def _restart(ctx: StepContext, group: str) -> tuple[Run, ...]:
    units = view(ctx.settings, "units", UnitsView)  # defaults from the schema, not restated here
    names = [fill_plain(str(u), ctx.variables) for u in getattr(units, group) or []]
    return tuple(Run(ctx.command(render(units.restart, {**ctx.variables, "unit": name}), cwd=False))
                 for name in names)


def restart_puma(ctx: StepContext) -> tuple[Run, ...]:
    return _restart(ctx, "puma")


def restart_processes(ctx: StepContext) -> tuple[Run, ...]:
    return _restart(ctx, "processes")


def restart_workers(ctx: StepContext) -> tuple[Run, ...]:
    return _restart(ctx, "workers")
