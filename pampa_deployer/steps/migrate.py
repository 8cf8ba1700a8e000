"""Sequel migrations."""
from __future__ import annotations

from .actions import Run, StepContext

#: Where the migration files live (``pampa pending`` lists the new ones a deploy would run).
MIGRATIONS = "db/migrations"
DEFAULT = f"bundle exec sequel -m {MIGRATIONS} $DATABASE_URL"


def migrate(ctx: StepContext) -> tuple[Run, ...]:
    return (Run(ctx.command(DEFAULT)),)
