"""What a step asks for, as frozen data: commands to run, files to upload, versions to report.

Building these does no I/O. The engine's one executor (``engine/executor.py``) carries
them out; the dry-run backend only shows them. ``Command`` lives in ``commands/command.py``
(the engine's common currency) and is re-exported here. ``display()`` is what every
printer, log and report uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..commands.command import Command
from ..redact import Redactor


@dataclass(frozen=True)
class Run:
    """Run a command; the step fails if it exits non-zero."""

    command: Command

    def display(self) -> str:
        return self.command.display()

    def commands(self) -> tuple[Command, ...]:
        """The shell commands this action sends (``pampa check`` looks for their programs)."""
        return (self.command,)


@dataclass(frozen=True)
class Upload:
    """Upload ``content`` to ``remote`` with ``mode``, atomically (temp file, then rename)."""

    source: str
    remote: str
    mode: int
    content: bytes = field(repr=False)

    def display(self) -> str:
        return (f"upload {self.source} -> {self.remote} (mode {self.mode:04o}, "
                f"{len(self.content)} bytes, content masked)")

    def commands(self) -> tuple[Command, ...]:
        return ()


@dataclass(frozen=True)
class ReportVersion:
    """Read the host's git revision, then POST it to the access point (if one is configured)."""

    revision: Command
    url: str | None
    node: str
    roles: tuple[str, ...]

    def display(self) -> str:
        target = f"POST {self.url}/api/v1/nodes/{self.node}/version" if self.url \
            else "no access point configured: version not reported"
        return f"{self.revision.display()}; {target}"

    def commands(self) -> tuple[Command, ...]:
        return (self.revision,)


@dataclass(frozen=True)
class OpenGate:
    """This kepler host is done: count it towards opening the gate for gated roles."""

    def display(self) -> str:
        return "open the gate for gated roles once every kepler host is here (access point: ALLOWED)"

    def commands(self) -> tuple[Command, ...]:
        return ()


Action = Run | Upload | ReportVersion | OpenGate


@dataclass(frozen=True)
class StepContext:
    """Everything a step builder may read: the host, the stage's settings and template variables."""

    host: "object"
    settings: Mapping
    variables: Mapping[str, object]
    redactor: Redactor
    secret_files: tuple = ()

    def command(self, script: str, cwd: bool = True, timeout: float | None = None) -> Command:
        host = self.host
        return Command(script=script, cwd=host.path if cwd else None, prefix=host.prefix,
                       env=tuple(sorted(host.env.items())), timeout=timeout, redactor=self.redactor)
