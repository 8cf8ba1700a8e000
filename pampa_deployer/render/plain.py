"""CI output: one plain line per event, ``TIME HOST STEP message``; no colour, no spinner, no prompt."""
from __future__ import annotations

import sys
import time
from typing import TextIO

from ..engine import events as ev
from ..engine.results import NOT_STARTED_REFUSED
from .shown import Renderer
from .telling import repeats, telling_line
from .words import count


def stamp(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"


class PlainRenderer(Renderer):
    """Writes a line per event; with ``verbose`` also every output line, prefixed by host and step.

    ``connect ok`` lines wait until the run is known to go ahead (a step starts, a host waits, a notice...):
    hosts connect while the lock is being taken, and a refused run (the lock is held) then prints its
    refusal once, not a connect line and a SKIPPED line per host for one reason."""

    def __init__(self, out: TextIO | None = None, verbose: bool = False):
        self.out = out or sys.stdout
        self.verbose = verbose
        self.dry_run = False  # set by RunStarted: a dry run never claims a connect or a step it did not make
        self.held: list[tuple[float, str, str, str]] | None = []  # connect lines until the run goes ahead
        self.refused = False

    def __call__(self, event: ev.Event) -> None:
        if self.held and not isinstance(event, (ev.HostConnecting, ev.HostConnected, ev.HostFinished)):
            self.go_ahead()
        super().__call__(event)

    def go_ahead(self) -> None:
        """The run goes ahead: print the connect lines held so far, and the next ones as they come."""
        held, self.held = self.held or [], None
        for line in held:
            self.line(*line)

    def line(self, at: float, host: str, step: str, message: str) -> None:
        self.out.write(f"{stamp(at)} {host} {step} {message}\n")
        self.out.flush()

    def on_run_started(self, e: ev.RunStarted) -> None:
        self.dry_run = e.dry_run
        gated = sum(1 for h in e.hosts if h[2])
        what = "dry run of " if e.dry_run else ""
        self.line(e.at, "-", "-", f"{what}{e.kind} of stage {e.stage} (branch {e.branch}) to "
                                  f"{count(len(e.hosts), 'host')}, {gated} gated")

    def on_host_connected(self, e: ev.HostConnected) -> None:
        if self.dry_run or self.refused:
            return
        if self.held is not None:
            self.held.append((e.at, e.host, "connect", f"ok ({e.seconds:.2f}s)"))
        else:
            self.line(e.at, e.host, "connect", f"ok ({e.seconds:.2f}s)")

    def on_host_waiting(self, e: ev.HostWaiting) -> None:
        self.line(e.at, e.host, "gate", "waiting for kepler")

    def on_step_started(self, e: ev.StepStarted) -> None:
        self.line(e.at, e.host, e.step, "would run:" if self.dry_run else "start")

    def on_command_started(self, e: ev.CommandStarted) -> None:
        if self.verbose:
            self.line(e.at, e.host, e.step, f"$ {e.display}")

    def on_output(self, e: ev.Output) -> None:
        if self.verbose:
            self.line(e.at, e.host, e.step, f"{'!' if e.stream == 'stderr' else '|'} {e.line}")

    def on_step_finished(self, e: ev.StepFinished) -> None:
        took = e.at - e.started
        if e.ok and self.dry_run:
            return  # nothing ran, so there is no outcome to print
        if e.ok and e.skipped:
            self.line(e.at, e.host, e.step, f"skipped: {e.skipped} ({took:.2f}s)")
        elif e.ok:
            self.line(e.at, e.host, e.step, f"ok ({took:.2f}s)")
        else:
            told = telling_line(e.stderr_tail)
            tail = "" if repeats(e.message, told) else f": {told}"
            self.line(e.at, e.host, e.step, f"FAILED ({e.message}){tail}")

    def on_host_finished(self, e: ev.HostFinished) -> None:
        r = e.result
        if r.reason == NOT_STARTED_REFUSED:  # the refusal is the run's one error line; nothing per host
            self.refused, self.held = True, None
            return
        if self.held:
            self.go_ahead()
        if self.dry_run and r.ok:
            self.line(e.at, e.host, "-", "shown above; dry run: nothing was run")
            return
        extra = f" at {r.failed_step}" if r.failed_step else ""
        why = f": {r.reason}" if r.reason and not r.ok else ""
        self.line(e.at, e.host, "-", f"{r.result.upper()}{extra} ({r.seconds:.2f}s){why}")

    def on_batch_started(self, e: ev.BatchStarted) -> None:
        self.line(e.at, "-", "batch", f"{e.number}/{e.total} starts: {count(len(e.hosts), 'host')} "
                                      f"({', '.join(e.hosts)})")

    def on_canary_changed(self, e: ev.CanaryChanged) -> None:
        if e.state == "started":
            waits = "waits" if len(e.rest) == 1 else "wait"
            text = f"started on {', '.join(e.hosts)}; {count(len(e.rest), 'host')} {waits} for it"
        elif e.state == "passed":
            text = f"passed on {', '.join(e.hosts)}; the other {count(len(e.rest), 'host')} start{'s' if len(e.rest) == 1 else ''} now"
        else:
            text = f"{e.state.upper()}: {e.reason}; not touched: {', '.join(e.rest)}"
        self.line(e.at, "-", "canary", text)

    def on_gate_changed(self, e: ev.GateChanged) -> None:
        self.line(e.at, "-", "gate", e.state + (f": {e.reason}" if e.reason else ""))

    def on_notice(self, e: ev.Notice) -> None:
        if e.level != "info" or self.verbose:
            self.line(e.at, e.host or "-", "-", f"{e.level}: {e.message}")
