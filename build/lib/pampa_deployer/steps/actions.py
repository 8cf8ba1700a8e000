"""What a step asks for, as frozen data: commands to run, files to upload, versions to report.

Building these does no I/O. Backends (engine/) carry them out; the dry-run
backend only shows them. Secrets are masked here, on the object: ``display()``
is what every printer, log and report uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

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


@dataclass(frozen=True)
class Run:
    """Run a command; the step fails if it exits non-zero."""

    command: Command

    def display(self) -> str:
        return self.command.display()


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


@dataclass(frozen=True)
class OpenGate:
    """This kepler host is done: count it towards opening the gate for gated roles."""

    def display(self) -> str:
        return "open the gate for gated roles once every kepler host is here (access point: ALLOWED)"


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
