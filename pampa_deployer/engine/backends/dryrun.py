"""The dry-run backend: shows each action as a line of output and touches nothing (sshkit's Printer)."""
from __future__ import annotations

from ...commands.command import Command
from ...steps.actions import Upload
from ..results import CommandResult
from .base import OnLine


class DryRunBackend:
    """Connects to nothing; every command 'succeeds' with no output; Python steps are not called."""

    dry_run = True

    def __init__(self, name: str):
        self.name = name

    def connect(self) -> None:
        pass

    def run(self, command: Command, on_line: OnLine | None = None) -> CommandResult:
        return CommandResult(0, "", "")

    def put(self, upload: Upload) -> None:
        pass

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass
