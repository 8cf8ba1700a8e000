"""Sequel migrations, skipped when none changed and the database's own schema version is current."""
from __future__ import annotations

from dataclasses import replace

from ..commands.skip import MIGRATIONS, MIGRATIONS_WHEN, unless_migrations_current
from .actions import Run, StepContext

DEFAULT = f"bundle exec sequel -m {MIGRATIONS} $DATABASE_URL"


def migrate(ctx: StepContext) -> tuple[Run, ...]:
    run = ctx.command(DEFAULT)
    if not ctx.may_skip("migrate"):
        return (Run(run),)
    return (Run(replace(run, script=unless_migrations_current(run.script, ctx.host.path)), run,
                MIGRATIONS_WHEN.format(migrations=MIGRATIONS)),)
