"""Sequel migrations."""
from __future__ import annotations

from .actions import Run, StepContext

DEFAULT = "bundle exec sequel -m db/migrations $DATABASE_URL"


def migrate(ctx: StepContext) -> tuple[Run, ...]:
    return (Run(ctx.command(DEFAULT)),)
