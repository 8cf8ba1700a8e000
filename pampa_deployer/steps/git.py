"""git_fetch (clone when the checkout is missing) and git_reset to origin/BRANCH.

Under the releases strategy the same two steps fetch into the host's bare mirror and build a new
release from it (steps/releases.py).

The stage's ``repo`` is the truth: before fetching, the checkout's ``origin`` is set to it
when it differs (a fleet moved to a new URL just works), and a ``pampa-note:`` line says so,
which the engine turns into a note on the host's result.
"""
from __future__ import annotations

from ..commands.git import reset_hard
from ..shell import quote
from . import releases
from .actions import Run, StepContext


def git_fetch(ctx: StepContext) -> tuple[Run, ...]:
    if ctx.layout is not None:
        return releases.fetch(ctx, ctx.layout)
    host = ctx.host
    repo = ctx.settings.get("repo")
    clone = ctx.command(f"if [ ! -d {quote(host.path)}/.git ]; then git clone --no-checkout {quote(repo)} {quote(host.path)}; fi",
                        cwd=False)
    return (Run(clone), Run(ctx.command(sync_origin(repo) + " && git fetch origin")))


def sync_origin(repo: str) -> str:
    """Point ``origin`` at ``repo`` unless it already does; print a note naming the old URL.

    One brace group, so ``cd PATH && GROUP && git fetch`` stops at the first failure.
    """
    q = quote(repo)
    return (f"{{ old=$(git remote get-url origin 2>/dev/null); [ \"$old\" = {q} ] || "
            f"{{ {{ git remote set-url origin {q} 2>/dev/null || git remote add origin {q}; }} && "
            f"echo \"pampa-note: origin changed from ${{old:-(none)}} to \"{q}; }}; }}")


def git_reset(ctx: StepContext) -> tuple[Run, ...]:
    if ctx.layout is not None:
        return releases.build(ctx, ctx.layout)
    return (Run(ctx.command(f"git reset --hard {quote('origin/' + ctx.host.branch)}")),)


def git_reset_to(ctx: StepContext, revision: str) -> tuple[Run, ...]:
    """A rollback's git_reset: to one exact revision, the same on every host."""
    return (Run(ctx.command(reset_hard(revision))),)


def switch_release(ctx: StepContext) -> tuple[Run, ...]:
    """Releases strategy only: ``current`` -> the release just built, then prune old releases."""
    return releases.switch(ctx, ctx.layout) if ctx.layout is not None else ()
