"""Bundler: ``bundle install`` (skipped when ``bundle check`` finds every gem installed), or ``bundle
update`` when ``bundler.update`` is true."""
from __future__ import annotations

from dataclasses import replace

from ..commands.skip import GEMS_WHEN, unless_gems_installed
from .actions import Run, StepContext


def bundle(ctx: StepContext) -> tuple[Run, ...]:
    if (ctx.settings.get("bundler") or {}).get("update"):
        return (Run(ctx.command("bundle update")),)
    install = ctx.command("bundle install")
    if not ctx.may_skip("bundle"):
        return (Run(install),)
    return (Run(replace(install, script=unless_gems_installed(install.script, ctx.host.path)), install, GEMS_WHEN),)
