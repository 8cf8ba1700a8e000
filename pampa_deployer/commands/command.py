"""``Command``: one remote shell command with its context, masking itself for display.

Every command pampa sends (steps, lock, revision log, check probe, rollback queries)
is one of these, built by a pure function in this package or in ``steps/``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..redact import Redactor
from ..shell import quote


@dataclass(frozen=True)
class Command:
    """One remote shell command, with the context it runs in."""

    script: str
    cwd: str | None = None
    prefix: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    timeout: float | None = None
    redactor: Redactor = field(default_factory=Redactor, repr=False, compare=False)
    #: Run in a process group of its own so a timeout or an abort can stop it and all it started
    #: (commands/procgroup.py); the engine's quick bookkeeping commands (lock, logs) do without.
    killable: bool = True
    #: Bookkeeping written before the body in the same round trip (the host's start record, naming the
    #: step): shell built-ins only, run in the login directory. If it fails the body does not run and the
    #: backend raises ``RecordFailed``. Not part of ``line()`` or ``display()``.
    record: str | None = None
    #: False: a shell session runs it in its own shell, without the subshell (a fork) every other command
    #: gets. Only for pampa's own bookkeeping that changes no shell state (no cd, export, umask, exit,
    #: variables) and is not killable.
    subshell: bool = True

    def line(self) -> str:
        """The exact line sent to the host's shell."""
        return f"{self.prefix} && {self.body()}" if self.prefix else self.body()

    def body(self) -> str:
        """The line without the prefix (a shell session runs the prefix once, not per command)."""
        parts = [f"export {k}={quote(v)}" for k, v in self.env]
        if self.cwd:
            parts.append(f"cd {quote(self.cwd)}")
        parts.append(self.script)
        return " && ".join(parts)

    def display(self) -> str:
        """``line()`` with every secret masked; safe to print anywhere."""
        return self.redactor.mask(self.line())
