"""CI output: one plain line per event, ``TIME HOST STEP message``; no colour, no spinner, no prompt."""
from __future__ import annotations

import sys
import time
from typing import TextIO

from ..engine import events as ev
from .telling import telling_line
from .words import count


def stamp(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"


class PlainRenderer(ev.Handler):
    """Writes a line per event; with ``verbose`` also every output line, prefixed by host and step."""

    def __init__(self, out: TextIO | None = None, verbose: bool = False):
        self.out = out or sys.stdout
        self.verbose = verbose
        self.dry_run = False  # set by RunStarted: a dry run never claims a connect or a step it did not make

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
        if not self.dry_run:
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
            tail = f": {telling_line(e.stderr_tail)}" if e.stderr_tail.strip() else ""
            self.line(e.at, e.host, e.step, f"FAILED ({e.message}){tail}")

    def on_host_finished(self, e: ev.HostFinished) -> None:
        r = e.result
        if self.dry_run and r.ok:
            self.line(e.at, e.host, "-", "shown above; dry run: nothing was run")
            return
        extra = f" at {r.failed_step}" if r.failed_step else ""
        why = f": {r.reason}" if r.reason and not r.ok else ""
        self.line(e.at, e.host, "-", f"{r.result.upper()}{extra} ({r.seconds:.2f}s){why}")

    def on_batch_started(self, e: ev.BatchStarted) -> None:
        self.line(e.at, "-", "batch", f"{e.number}/{e.total} starts: {count(len(e.hosts), 'host')} "
                                      f"({', '.join(e.hosts)})")

    def on_gate_changed(self, e: ev.GateChanged) -> None:
        self.line(e.at, "-", "gate", e.state + (f": {e.reason}" if e.reason else ""))

    def on_notice(self, e: ev.Notice) -> None:
        if e.level != "info" or self.verbose:
            self.line(e.at, e.host or "-", "-", f"{e.level}: {e.message}")
