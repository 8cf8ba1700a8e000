"""The one executor of actions, shared by ``pampa deploy`` (engine/pipeline.py) and the ``fab`` tasks.

An action (``steps/actions.py``) is frozen data; ``perform`` carries it out on a backend and
tells a ``Sink`` what happened. The deploy's sink turns that into events and talks to the
gate and the access point session; the fab sink prints lines. One table maps each action
type to its handler, so a new action type without an executor fails loudly, in both places.
A second table (``AHEAD``) says what each action will send the host before any answer comes back,
so a backend can send consecutive steps' commands together (``ahead``).
"""
from __future__ import annotations

from typing import Callable, Protocol

from ..errors import AccessPointError
from ..steps.actions import CallTask, HealthCheck, OpenGate, ReportVersion, Restart, Run, Upload
from . import startrecord
from .backends.base import Backend, tail
from .results import StepFailed
from .startrecord import StartRecord
from .tasks.call import call_task


class Sink(Protocol):
    """What the executor reports to, and the two things it cannot do alone (gate, access point)."""

    def step_started(self) -> None:
        """The host holds the start record naming the step: the step is under way there."""

    def command_started(self, display: str) -> None: ...

    def output(self, stream: str, line: str) -> None: ...

    def gate_reached(self) -> None: ...

    def report_version(self, action: ReportVersion, revision: str) -> None:
        """Report ``revision``; raise ``AccessPointError`` if the access point refuses."""

    def aborted(self) -> bool:
        """The run is being aborted (second Ctrl-C): a Python step stops waiting for its task."""


def _run(action: Run, backend: Backend, sink: Sink) -> None:
    sink.command_started(action.display())
    result = backend.run(action.command, sink.output)
    if not result.ok:
        raise StepFailed(result.exit_code, tail(result.stderr) or tail(result.stdout), f"exit code {result.exit_code}")


def _health_check(action: HealthCheck, backend: Backend, sink: Sink) -> None:
    """The check's loop ran on the host; when it never passed, the step fails naming the check and its
    last response (the loop's final stderr line)."""
    sink.command_started(action.display())
    result = backend.run(action.command, sink.output)
    if not result.ok:
        last = tail(result.stderr, 1) or tail(result.stdout, 1) or f"exit code {result.exit_code}"
        said = f"check {action.name} "  # the loop's own last line: "check web failed after 21 attempts: ..."
        what = last[len(said):] if last.startswith(said + "failed") else f"failed: {last}"
        raise StepFailed(result.exit_code, tail(result.stderr) or tail(result.stdout),
                         f"health check '{action.name}' {what}")


def _restart(action: Restart, backend: Backend, sink: Sink) -> None:
    """A service restart ran on the host; when it failed, its last stderr line says why (a phased restart
    that did not complete, a new worker that cannot boot, a service that does not stop)."""
    sink.command_started(action.display())
    result = backend.run(action.command, sink.output)
    if not result.ok:
        last = tail(result.stderr, 1) or tail(result.stdout, 1) or f"exit code {result.exit_code}"
        said = last if last.startswith(f"{action.unit}: ") else f"restart of {action.unit} failed: {last}"
        raise StepFailed(result.exit_code, tail(result.stderr) or tail(result.stdout), said)


def _upload(action: Upload, backend: Backend, sink: Sink) -> None:
    sink.command_started(action.display())
    try:
        backend.put(action)
    except OSError as e:
        raise StepFailed(None, str(e), f"upload to {action.remote} failed: {e}") from None


def _report_version(action: ReportVersion, backend: Backend, sink: Sink) -> None:
    sink.command_started(action.display())
    result = backend.run(action.revision, sink.output)
    if not result.ok:
        raise StepFailed(result.exit_code, tail(result.stderr), "could not read the git revision")
    try:
        sink.report_version(action, result.stdout.strip())
    except AccessPointError as e:
        raise StepFailed(None, e.message, f"version report failed: {e.message}") from None


def _open_gate(action: OpenGate, backend: Backend, sink: Sink) -> None:
    sink.gate_reached()


def _call_task(action: CallTask, backend: Backend, sink: Sink) -> None:
    call_task(action, backend, sink, perform)  # the task's c.put and c.run_step come back to this executor


def _start_record(action: StartRecord, backend: Backend, sink: Sink) -> None:
    startrecord.perform(action, backend, sink, perform)  # the step's first command comes back to this executor


EXECUTORS: dict[type, Callable[[object, Backend, Sink], None]] = {
    StartRecord: _start_record,
    Run: _run,
    HealthCheck: _health_check,
    Restart: _restart,
    Upload: _upload,
    ReportVersion: _report_version,
    OpenGate: _open_gate,
    CallTask: _call_task,
}


#: What an action sends the host, and whether the actions after it need nothing from its outcome on
#: this side (a version report's POST, a Python task's code, do: nothing after them is sent ahead).
AHEAD: dict[type, Callable[[object], tuple[list, bool]]] = {
    StartRecord: lambda a: ([startrecord.first_command(a)], True),
    Run: lambda a: ([a.command], True),
    HealthCheck: lambda a: ([a.command], True),
    Restart: lambda a: ([a.command], True),
    Upload: lambda a: ([a], True),
    ReportVersion: lambda a: ([a.revision], False),
    OpenGate: lambda a: ([], True),
    CallTask: lambda a: ([], False),
}


def ahead(actions) -> tuple[list, bool]:
    """The commands (and files) ``actions`` will send, in order, as far as they are known before any
    answer; and whether what follows them may be sent too."""
    sent: list = []
    for action in actions:
        items, goes_on = AHEAD[type(action)](action)
        sent += items
        if not goes_on:
            return sent, False
    return sent, True


def perform(action, backend: Backend, sink: Sink) -> None:
    """Carry out one action; raises ``StepFailed`` when the step must fail."""
    try:
        executor = EXECUTORS[type(action)]
    except KeyError:  # pragma: no cover - a new action type without an executor is a bug
        raise AssertionError(f"no executor for {action!r}") from None
    executor(action, backend, sink)
