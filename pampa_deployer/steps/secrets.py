"""Secret files: uploaded over SFTP with their mode, by writing a temp file and renaming it."""
from __future__ import annotations

import posixpath

from .actions import StepContext, Upload


def remote_path(code_path: str, remote: str) -> str:
    """A secret's destination: absolute and ``~/`` paths as written, others inside the code path."""
    if remote.startswith("/") or remote.startswith("~"):
        return remote
    return posixpath.join(code_path, remote)


def secrets(ctx: StepContext) -> tuple[Upload, ...]:
    # Under the releases strategy secrets live in shared/ and every release links them.
    base = ctx.layout.shared if ctx.layout is not None else ctx.host.path
    return tuple(Upload(source=f.source, remote=remote_path(base, f.remote), mode=f.mode,
                        content=f.content) for f in ctx.secret_files)
