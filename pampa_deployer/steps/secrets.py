"""Secret files: written with their mode to a temp file, then renamed (the backend picks session or SFTP).

A secret whose folder is outside the code path gets a ``mkdir -p`` of that folder first, so
a fresh host needs no manual step (``pampa check`` verifies the folder can be created).
"""
from __future__ import annotations

import posixpath

from ..shell import quote
from .actions import Run, StepContext, Upload


def remote_path(code_path: str, remote: str) -> str:
    """A secret's destination: absolute and ``~/`` paths as written, others inside the code path."""
    if remote.startswith("/") or remote.startswith("~"):
        return remote
    return posixpath.join(code_path, remote)


def secrets(ctx: StepContext) -> tuple:
    # Under the releases strategy secrets live in shared/ and every release links them.
    base = ctx.layout.shared if ctx.layout is not None else ctx.host.path
    actions: list = []
    made: set[str] = set()
    for f in ctx.secret_files:
        target = remote_path(base, f.remote)
        folder = posixpath.dirname(target)
        if folder and folder.rstrip("/") != base.rstrip("/") and folder not in made:
            made.add(folder)
            actions.append(Run(ctx.command(f"mkdir -p {quote(folder)}", cwd=False)))
        actions.append(Upload(source=f.source, remote=target, mode=f.mode, content=f.content))
    return tuple(actions)
