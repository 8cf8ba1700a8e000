"""What a step asks for, as frozen data: commands to run, files to upload, versions to report.

Building these does no I/O. The engine's one executor (``engine/executor.py``) carries
them out; the dry-run backend only shows them. ``Command`` lives in ``commands/command.py``
(the engine's common currency) and is re-exported here. ``display()`` is what every
printer, log and report uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..commands.command import Command
from ..inventory.model import FileToPut
from ..redact import Redactor


@dataclass(frozen=True)
class Run:
    """Run a command; the step fails if it exits non-zero.

    A command wrapped in a generated condition that may skip its work (commands/skip.py) keeps the
    command an operator would type in ``typed`` and the condition in words in ``skip_when``: shown as
    ``TYPED  # WHEN`` (a shell comment: the line stays readable and copyable), and ``typed`` is what
    ``pampa check`` looks for programs in.
    """

    command: Command
    typed: Command | None = None
    skip_when: str | None = None

    def display(self) -> str:
        if self.typed is None:
            return self.command.display()
        return f"{self.typed.display()}  # {self.skip_when}"

    def commands(self) -> tuple[Command, ...]:
        """The shell commands this action sends (``pampa check`` looks for their programs)."""
        return (self.typed or self.command,)


@dataclass(frozen=True)
class Upload(FileToPut):
    """Upload ``content`` to ``remote`` with ``mode``, atomically (temp file, then rename): the same record as
    a configured secret file, its ``remote`` resolved on the host (a task's ``c.put`` makes one too)."""

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
class HealthCheck:
    """Run a check's loop on the host; the step fails, naming the check, if it never passes."""

    name: str
    summary: str
    command: Command
    uses: tuple[str, ...] = ()  # what the loop runs besides shell built-ins: curl, or the check's command

    def display(self) -> str:
        return self.summary

    def commands(self) -> tuple[Command, ...]:
        """For ``pampa check``: the loop is shell syntax; the programs it needs are in ``uses``."""
        return tuple(Command(script=u) for u in self.uses)


@dataclass(frozen=True)
class Restart:
    """Restart one service (a drain then a start, or a hot or phased puma restart that waits for the new
    code); the step fails naming the service and the command's last word on stderr (commands/puma.py)."""

    unit: str
    summary: str
    command: Command
    uses: tuple[str, ...] = ()  # programs and commands besides shell built-ins, for ``pampa check``
    probe: str = ""  # a read-only shell snippet for ``pampa check`` about this service (commands/puma.py)

    def display(self) -> str:
        return self.summary

    def commands(self) -> tuple[Command, ...]:
        """For ``pampa check``: the script is shell syntax; what it runs is in ``uses``."""
        return tuple(Command(script=u) for u in self.uses)


@dataclass(frozen=True)
class OpenGate:
    """This kepler host is done: count it towards opening the gate for gated roles."""

    def display(self) -> str:
        return "open the gate for gated roles once every kepler host is here (access point: ALLOWED)"

    def commands(self) -> tuple[Command, ...]:
        return ()


@dataclass(frozen=True)
class CallTask:
    """Call a step written in Python (an Invoke task) with a ``c`` bound to this host.

    ``base`` carries what every ``c.run`` inherits (code path, prefix, env, masking);
    ``info`` is ``c.config.pampa``; ``stage``/``host``/``roles`` let the task call the
    built-in steps. The engine's executor runs it (``engine/tasks/call.py``).
    """

    name: str
    source: str
    doc: str
    body: Callable = field(compare=False, repr=False)
    base: Command = field(default_factory=lambda: Command(""))
    info: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    timeout: float | None = None
    stage: Any = field(default=None, compare=False, repr=False)
    host: Any = field(default=None, compare=False, repr=False)
    roles: tuple[str, ...] = ()
    layout: Any = field(default=None, compare=False, repr=False)  # the host's releases layout, if any

    def display(self) -> str:
        summary = self.doc.strip().splitlines()[0] if self.doc and self.doc.strip() else ""
        return f"task {self.name} ({self.source})" + (f": {summary}" if summary else "")

    def commands(self) -> tuple[Command, ...]:
        return ()  # what a task runs is decided by its code, on the host


Action = Run | Upload | ReportVersion | HealthCheck | Restart | OpenGate | CallTask


@dataclass(frozen=True)
class StepContext:
    """Everything a step builder may read: the host, the stage's settings and template variables."""

    host: "object"
    settings: Mapping
    variables: Mapping[str, object]
    redactor: Redactor
    secret_files: tuple = ()
    layout: "object | None" = None  # steps.releases.Layout under the releases strategy
    skip_unchanged: bool = True  # bundle and migrate may skip what did not change (false: --no-skip)

    @property
    def code_path(self) -> str:
        """Where step commands run: the checkout, or the release being built (``ROOT/release``).

        A host whose sequence builds no release (euler and copernico by the seed) works in ``current``.
        """
        if self.layout is None:
            return self.host.path
        return self.layout.release if self.layout.builds else self.layout.current

    @property
    def live_path(self) -> str:
        """The code the app runs: the checkout, or ``ROOT/current``."""
        return self.layout.current if self.layout is not None else self.host.path

    def may_skip(self, step: str) -> bool:
        """Whether ``step`` may skip work that did not change (not with --no-skip or ``steps.STEP.always``)."""
        spec = (self.settings.get("steps") or {}).get(step) or {}
        return self.skip_unchanged and not spec.get("always")

    def command(self, script: str, cwd: bool | str = True, timeout: float | None = None) -> Command:
        """A command in the code path (``cwd=True``), in no folder (False), or in the folder given."""
        host = self.host
        where = self.code_path if cwd is True else (cwd or None)
        return Command(script=script, cwd=where, prefix=host.prefix,
                       env=tuple(sorted(host.env.items())), timeout=timeout, redactor=self.redactor)
