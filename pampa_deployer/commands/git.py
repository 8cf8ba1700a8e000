"""Read-only git queries pampa runs on its own behalf (rollback target, revision checks)."""
from __future__ import annotations

from ..shell import quote
from .command import Command


def parent_revision(path: str) -> Command:
    """The commit before HEAD: the rollback target when the revision log has none."""
    return Command(script="git rev-parse HEAD~1", cwd=path, timeout=30)


def verify_commit(path: str, revision: str) -> Command:
    """Print the full commit id of ``revision`` if the checkout has it (exit 1 and nothing if not)."""
    return Command(script=f"git rev-parse --verify --quiet {quote(revision + '^{commit}')}", cwd=path, timeout=30)


def reset_hard(revision: str) -> str:
    """The script that moves the checkout to ``revision`` (the rollback's ``git_reset``)."""
    return f"git reset --hard {quote(revision)}"
