"""The one small execution interface every backend implements (SSH, local, dry-run, invoke Context)."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Protocol

from ...commands.command import Command
from ...steps.actions import Upload
from ..results import CommandResult, RecordFailed

#: Called with (stream, line) for each complete output line, already masked.
OnLine = Callable[[str, str], None]

#: The pseudo-stream ``on_line`` gets once, with an empty line, when a command's ``record`` (the start
#: record) has been written on the host, before anything of the command's body.
RECORDED = "record"

#: Bytes of stdout/stderr kept in memory per command (full output goes to the run log via OnLine).
TAIL_BYTES = 64 * 1024


class Backend(Protocol):
    """Runs commands and uploads files on one host."""

    name: str

    def connect(self) -> None: ...

    def run(self, command: Command, on_line: OnLine | None = None) -> CommandResult: ...

    def put(self, upload: Upload) -> None: ...

    def abort(self) -> None:
        """Stop the running command at once (second Ctrl-C); the connection stays usable.

        A backend may then say what that left on the host in an ``abort_outcome`` string
        (``pipeline.abort_outcome``): stopped, already ended, or not answering.
        """

    def close(self) -> None: ...


class LineSplitter:
    """Turns chunks of bytes into masked lines for ``on_line``, and keeps a bounded tail."""

    def __init__(self, stream: str, command: Command, on_line: OnLine | None):
        self.stream, self.command, self.on_line = stream, command, on_line
        self._partial = b""
        self._tail = bytearray()

    def feed(self, data: bytes) -> None:
        self._tail += data
        if len(self._tail) > TAIL_BYTES:
            del self._tail[: len(self._tail) - TAIL_BYTES]
        if self.on_line is None:
            return
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for raw in lines:
            self.on_line(self.stream, self.command.redactor.mask(raw.decode("utf-8", "replace").rstrip("\r")))

    def text(self) -> str:
        if self._partial and self.on_line is not None:
            self.on_line(self.stream, self.command.redactor.mask(self._partial.decode("utf-8", "replace")))
            self._partial = b""
        return self.command.redactor.mask(self._tail.decode("utf-8", "replace"))


def tail(text: str, lines: int = 5) -> str:
    """The last few non-empty lines of some output, for summaries."""
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def record_first(run: Callable[[Command], CommandResult], command: Command, on_line: OnLine | None) -> Command:
    """For a path that cannot fold a command's ``record`` into it: write the record on its own first.

    Returns the command without its record; raises ``RecordFailed`` when the record was not written.
    """
    if command.record is None:
        return command
    result = run(Command(script=command.record, timeout=30, killable=False))
    if not result.ok:
        raise RecordFailed(result)
    if on_line is not None:
        on_line(RECORDED, "")
    return replace(command, record=None)
