"""The host's start record, named for each step as it starts: one executor action, in one place.

Before anything of a step happens on a host, the host's start record (``commands/revlog.py``)
is rewritten to name the step, so a deploy killed at any moment leaves a host that says which
run and step it was in. A step is shown started only once the host says the record is written.

A step that begins with a command (``Run``, ``HealthCheck``, ``Restart``) carries the record in that command:
the host's shell writes it with a built-in just before the body, in the same round trip, and
the backend tells the line ``RECORDED`` when it is written (or raises ``RecordFailed``). Any other
step (an upload, a task call) writes the record on its own first.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from ..commands import revlog
from ..commands.command import Command
from ..steps.actions import HealthCheck, Restart, Run
from .backends.base import RECORDED, Backend, tail
from .results import NotStarted, RecordFailed, StepFailed


@dataclass(frozen=True)
class StartRecord:
    """Write the start record ``line`` on the host, then the step's first command ``then`` if it has one."""

    line: str
    alone: Command                     # the record as a command of its own, for a step without ``then``
    then: Run | HealthCheck | Restart | None = None

    def display(self) -> str:
        return self.then.display() if self.then is not None else "start record"

    def commands(self) -> tuple[Command, ...]:
        return self.then.commands() if self.then is not None else ()


def for_step(actions: list, base: Command, record: dict) -> list:
    """The step's actions with the start record naming it written first (folded into its first command)."""
    line = revlog.step_record(base, record)
    first = actions[0] if actions else None
    if isinstance(first, (Run, HealthCheck, Restart)) and first.command.record is None:
        return [StartRecord(line, revlog.step_command(base, record), first), *actions[1:]]
    return [StartRecord(line, revlog.step_command(base, record)), *actions]


def first_command(action: StartRecord) -> Command:
    """The command that writes the record: the step's first command carrying it, or the record alone."""
    if action.then is None:
        return action.alone
    return replace(action.then.command, record=action.line)


def perform(action: StartRecord, backend: Backend, sink, execute: Callable) -> None:
    """The executor's handler: write the record (with the first command, through ``execute``), then tell
    the sink the step started, before the first command is shown; a record not written fails the step."""
    if action.then is None:
        result = backend.run(action.alone)
        if not result.ok:
            raise _not_written(result.exit_code, result.stderr)
        sink.step_started()
        return
    held = _UntilRecorded(sink)
    try:
        execute(replace(action.then, command=first_command(action)), backend, held)
    except RecordFailed as e:
        raise _not_written(e.result.exit_code, e.result.stderr) from e
    except NotStarted:
        held.waiting = False  # sent ahead, and the host never began the step: it did not start
        raise
    finally:
        held.recorded()  # a backend that writes the record without saying so (test doubles): the step started


def _not_written(exit_code: int | None, stderr: str) -> StepFailed:
    return StepFailed(exit_code, tail(stderr), f"could not write the start record on the host (exit code {exit_code})")


class _UntilRecorded:
    """The step's sink, holding what the first command shows until the host says the record is written."""

    def __init__(self, sink):
        self.sink = sink
        self.waiting = True
        self.held: list[str] = []

    def recorded(self) -> None:
        if not self.waiting:
            return
        self.waiting = False
        self.sink.step_started()
        for display in self.held:
            self.sink.command_started(display)
        self.held.clear()

    def command_started(self, display: str) -> None:
        if self.waiting:
            self.held.append(display)
        else:
            self.sink.command_started(display)

    def output(self, stream: str, line: str) -> None:
        self.recorded()
        if stream != RECORDED:
            self.sink.output(stream, line)

    def __getattr__(self, name: str):
        return getattr(self.sink, name)  # gate_reached, report_version, aborted: as the step's own sink
