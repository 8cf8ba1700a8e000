"""git_fetch (clone when the checkout is missing) and git_reset to origin/BRANCH."""
from __future__ import annotations

from ..commands.git import reset_hard
from ..shell import quote
from .actions import Run, StepContext


def git_fetch(ctx: StepContext) -> tuple[Run, ...]:
    host = ctx.host
    repo = ctx.settings.get("repo")
    clone = ctx.command(f"if [ ! -d {quote(host.path)}/.git ]; then git clone --no-checkout {quote(repo)} {quote(host.path)}; fi",
                        cwd=False)
    return (Run(clone), Run(ctx.command("git fetch --all")))


def git_reset(ctx: StepContext) -> tuple[Run, ...]:
    return (Run(ctx.command(f"git reset --hard {quote('origin/' + ctx.host.branch)}")),)


def git_reset_to(ctx: StepContext, revision: str) -> tuple[Run, ...]:
    """A rollback's git_reset: to one exact revision, the same on every host."""
    return (Run(ctx.command(reset_hard(revision))),)
