"""The live terminal view: a row per host (role, step, elapsed, last output line), the gate and progress."""
from __future__ import annotations

import threading
import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..engine import events as ev

_STATE_STYLE = {"ok": "green", "failed": "bold red", "skipped": "yellow", "interrupted": "yellow",
                "waiting": "dim", "queued": "dim", "running": "cyan", "connecting": "dim"}


class _Row:
    __slots__ = ("host", "roles", "gated", "state", "step", "since", "started", "last", "ended")

    def __init__(self, host: str, roles: str, gated: bool):
        self.host, self.roles, self.gated = host, roles, gated
        self.state, self.step, self.last = "queued", "", ""
        self.since = self.started = self.ended = None


class LiveView(ev.Handler):
    """Subscribes to the bus and redraws a rich Live table; ``-v`` prints output lines above it."""

    def __init__(self, console: Console, verbose: bool = False):
        self.console = console
        self.verbose = verbose
        self.rows: dict[str, _Row] = {}
        self.gate = "none"
        self.title = ""
        self.notices: list[str] = []
        self._lock = threading.Lock()
        self.live = Live(console=console, get_renderable=self.render, refresh_per_second=8, transient=False)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.__exit__(*exc)

    def render(self):
        with self._lock:
            rows = list(self.rows.values())
            total = len(rows)
            done = sum(1 for r in rows if r.ended is not None)
            table = Table(expand=False, show_edge=False, pad_edge=False)
            for col in ("host", "roles", "state", "step", "elapsed", "last output"):
                table.add_column(col, no_wrap=True, max_width=60 if col == "last output" else None)
            now = time.time()
            for r in rows:
                elapsed = ((r.ended or now) - r.started) if r.started else 0.0
                table.add_row(r.host, r.roles, Text(r.state, style=_STATE_STYLE.get(r.state, "")), r.step,
                              f"{elapsed:5.1f}s", Text(r.last[-60:], style="dim"))
            label, style = {"waiting": ("waiting for kepler", "yellow"), "open": ("open", "green"),
                            "closed": ("closed", "bold red"), "none": ("none", "dim")}.get(self.gate, (self.gate, ""))
            header = Text.assemble((self.title, "bold"), "  gate: ", (label, style), f"  {done}/{total} hosts done")
            top = Table.grid(padding=(0, 2))
            top.add_row(header, ProgressBar(total=max(total, 1), completed=done, width=30))
            parts = [top, table]
            parts.extend(Text(n, style="yellow") for n in self.notices[-3:])
            return Group(*parts)

    def __call__(self, event: ev.Event) -> None:
        # Two things happen outside the view's lock, because rich's refresh thread takes it in render():
        # stopping at the end of the run, and printing output lines above the table (-v).
        if isinstance(event, ev.RunFinished):
            self.live.stop()  # the last frame stays; the summary prints below it
            return
        with self._lock:
            super().__call__(event)
        if self.verbose and isinstance(event, ev.Output):
            self.live.console.print(Text(f"{event.host} {event.step} | {event.line}"), highlight=False)

    def on_run_started(self, e: ev.RunStarted) -> None:
        self.title = f"pampa {'dry run ' if e.dry_run else ''}{e.kind} {e.stage} ({e.branch})"
        for name, roles, gated in e.hosts:
            self.rows[name] = _Row(name, roles, gated)

    def on_host_connecting(self, e: ev.HostConnecting) -> None:
        if e.host in self.rows:
            row = self.rows[e.host]
            row.state, row.started = "connecting", e.at

    def on_host_waiting(self, e: ev.HostWaiting) -> None:
        if e.host in self.rows:
            row = self.rows[e.host]
            row.state, row.step = "waiting", "gate"

    def on_step_started(self, e: ev.StepStarted) -> None:
        if e.host in self.rows:
            row = self.rows[e.host]
            # A new step starts with no output of its own yet, not the last one's last line.
            row.state, row.step, row.last = "running", e.step, ""

    def on_output(self, e: ev.Output) -> None:
        if e.host in self.rows:
            self.rows[e.host].last = e.line

    def on_step_finished(self, e: ev.StepFinished) -> None:
        if e.host in self.rows and not e.ok:
            self.rows[e.host].last = (e.stderr_tail.splitlines() or [e.message])[-1]

    def on_host_finished(self, e: ev.HostFinished) -> None:
        if e.host not in self.rows:
            return
        row = self.rows[e.host]
        row.state, row.ended = e.result.result, e.at
        row.started = row.started or e.at
        if e.result.failed_step:
            row.step = e.result.failed_step
        if e.result.reason and not e.result.ok:
            row.last = e.result.reason

    def on_gate_changed(self, e: ev.GateChanged) -> None:
        self.gate = e.state

    def on_notice(self, e: ev.Notice) -> None:
        if e.level != "info":
            self.notices.append(e.message)
