"""Calling a step written in Python: the executor's handler for ``CallTask``.

The task runs in a thread of its own while the host's thread watches the step's
deadline and the run's abort, so neither a hung command nor Python code that never
returns holds a host (or Ctrl-C) hostage: at the deadline the task may start no more
commands, the one in flight ends at the same deadline (the backend stops it on the
host), and the step fails with exit 124. Whatever the task raises fails only this
host's step, with one line for the summary and the traceback in the host's log.
"""
from __future__ import annotations

import threading
import time
import traceback
from dataclasses import replace

from invoke.exceptions import CommandTimedOut, Exit, UnexpectedExit

from ...steps.actions import CallTask
from ..backends.base import tail
from ..results import StepFailed
from . import capture
from .context import TaskContext, TaskStopped

#: After the deadline, how long a command still in flight gets to return (its own timeout is the same
#: deadline; this covers stopping it on the host). A task still inside a command after that is left behind.
SETTLE = 60.0


class _Call:
    """One task call in its own thread: the exception it ended with, if any."""

    def __init__(self, action: CallTask, c: TaskContext, sink):
        self.action, self.c, self.sink = action, c, sink
        self.error: BaseException | None = None
        self.trace = ""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"pampa-task-{action.name}", daemon=True)

    def run(self) -> None:
        mask = self.action.base.redactor.mask
        try:
            with capture.routed(self.sink.output, mask):
                self.action.body(self.c)
        except BaseException as e:  # noqa: BLE001 - every outcome of user code is reported by wait()
            # The traceback starts in the task: this frame (pampa's) is left out.
            self.error = e
            self.trace = mask("".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next)))
        finally:
            self.done.set()

    def wait(self) -> None:
        """Until the task returns, the deadline passes or the run is aborted; raises StepFailed if it failed."""
        action, c = self.action, self.c
        self.thread.start()
        while not self.done.wait(0.1):
            if c.deadline is not None and time.monotonic() >= c.deadline:
                self.settle(f"timed out after {action.timeout:g}s")
                raise StepFailed(124, "", f"task {action.name} timed out after {action.timeout:g}s")
            if self.sink.aborted():
                c.stop("the run was aborted")
                raise StepFailed(None, "", f"task {action.name} stopped: the run was aborted")
        self.raise_error()

    def settle(self, why: str) -> None:
        if self.c.stop(why):  # a command is in flight: it ends at the same deadline
            limit = time.monotonic() + SETTLE
            while self.c.busy and time.monotonic() < limit and not self.sink.aborted():
                self.done.wait(0.1)

    def raise_error(self) -> None:
        e, name = self.error, self.action.name
        if e is None:
            return
        if e is self.c.backend_error:
            raise e  # unresponsive host, lost connection...: the host's pipeline reports it like any step's
        deadline = self.c.deadline
        if isinstance(e, (CommandTimedOut, TaskStopped)) and deadline is not None \
                and time.monotonic() >= deadline - 0.5:  # its command ran into the step's own deadline
            stderr = tail(e.result.stderr) if isinstance(e, CommandTimedOut) else ""
            raise StepFailed(124, stderr, f"task {name} timed out after {self.action.timeout:g}s") from None
        if isinstance(e, StepFailed):  # a built-in step the task ran (c.run_step) failed
            raise StepFailed(e.exit_code, e.stderr, f"task {name}: {e.message}") from None
        if isinstance(e, CommandTimedOut):
            raise StepFailed(124, tail(e.result.stderr), f"task {name}: `{_short(e.result.command)}` "
                                                         f"timed out after {round(e.timeout, 1):g}s") from None
        if isinstance(e, UnexpectedExit):
            r = e.result
            raise StepFailed(r.exited, tail(r.stderr) or tail(r.stdout),
                             f"task {name}: `{_short(r.command)}` exited {r.exited}") from None
        if isinstance(e, (Exit, SystemExit)):
            code = getattr(e, "code", 1)
            text = getattr(e, "message", None) or (code if isinstance(code, str) else "")
            raise StepFailed(code if isinstance(code, int) else 1, "",
                             f"task {name} exited" + (f": {text}" if text else f" with {code}")) from None
        if isinstance(e, TaskStopped):
            raise StepFailed(None, "", f"task {name} stopped: {e}") from None
        for line in self.trace.rstrip().splitlines():
            self.sink.output("stderr", line)
        message = self.action.base.redactor.mask(f"{type(e).__name__}: {e}".splitlines()[0])
        raise StepFailed(None, "", f"task {name} raised {message} (traceback in the host's log)") from None


def _short(command: str, width: int = 80) -> str:
    return command if len(command) <= width else command[: width - 3] + "..."


def _revision(action: CallTask, backend) -> str | None:
    """The host's checkout revision as the task starts (``c.config.pampa.revision``), or None."""
    try:
        result = backend.run(replace(action.base, script="git rev-parse HEAD 2>/dev/null", timeout=30))
    except Exception:  # noqa: BLE001 - the task's own commands meet the same problem and report it
        return None
    return (result.stdout.strip() or None) if result.ok else None


def call_task(action: CallTask, backend, sink, perform) -> None:
    """The executor's handler: call the task on this host (or, in a dry run, say that it would).

    ``perform`` is the executor itself, handed down so the task's ``c.put`` and ``c.run_step`` run
    through it without this package importing the executor that imports it."""
    if getattr(backend, "dry_run", False):
        sink.command_started(f"would call {action.display()}")
        return
    sink.command_started(f"call {action.display()}")
    deadline = time.monotonic() + action.timeout if action.timeout else None
    c = TaskContext(action, backend, sink, perform, deadline, _revision(action, backend))
    with capture.installed():
        _Call(action, c, sink).wait()
