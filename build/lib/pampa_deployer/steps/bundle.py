"""Bundler: ``bundle install``, or ``bundle update`` when ``bundler.update`` is true."""
from __future__ import annotations

from .actions import Run, StepContext


def bundle(ctx: StepContext) -> tuple[Run, ...]:
    update = (ctx.settings.get("bundler") or {}).get("update")
    return (Run(ctx.command("bundle update" if update else "bundle install")),)
