"""The live terminal view: a row per host (role, step, elapsed, last output line), the gate and progress."""
from __future__ import annotations

import contextlib
import threading
import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..engine import events as ev
from .shown import Renderer, shown
from .telling import telling_line
from .words import count

_STATE_STYLE = {"ok": "green", "failed": "bold red", "skipped": "yellow", "interrupted": "yellow",
                "waiting": "dim", "queued": "dim", "running": "cyan", "connecting": "dim"}


class _Row:
    __slots__ = ("host", "roles", "gated", "state", "step", "since", "started", "last", "ended")

    def __init__(self, host: str, roles: str, gated: bool):
        self.host, self.roles, self.gated = host, roles, gated
        self.state, self.step, self.last = "queued", "", ""
        self.since = self.started = self.ended = None


_PRIORITY = {"failed": 0, "interrupted": 1, "running": 2, "connecting": 3, "waiting": 4, "queued": 5,
             "skipped": 6, "ok": 7}


def fit(rows: list[_Row], width: int, height: int, now: float) -> list:
    """The host table for a ``width`` x ``height`` area: the hosts that matter first, the rest summarised.

    Failed and running hosts come first and are never hidden behind finished ones;
    when the fleet is taller than the terminal, the hosts that do not fit become one
    line of counts ("+ 41 more: 38 ok, 3 queued"). Host, state, step and elapsed are
    never cut to make room for output: the last-output column takes what is left.
    """
    ordered = sorted(rows, key=lambda r: _PRIORITY.get(r.state, 5))
    room = max(1, height - 1)  # the table's header line
    shown = ordered if len(ordered) <= room else ordered[:max(0, room - 1)]
    hidden = ordered[len(shown):]
    host_w = min(max([4] + [len(r.host) for r in shown]), 32)
    step_w = min(max([4] + [len(r.step) for r in shown]), 20)
    wide = width >= 110
    roles_w = min(max([5] + [len(r.roles) for r in shown]), 24) if wide else 0
    fixed = host_w + 11 + step_w + 7 + (roles_w + 1 if wide else 0) + 5
    last_w = width - fixed
    table = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 1, 0, 0), expand=False)
    table.add_column("host", width=host_w, no_wrap=True, overflow="ellipsis")
    if wide:
        table.add_column("roles", width=roles_w, no_wrap=True, overflow="ellipsis")
    table.add_column("state", width=11, no_wrap=True)
    table.add_column("step", width=step_w, no_wrap=True, overflow="ellipsis")
    table.add_column("elapsed", width=7, no_wrap=True, justify="right")
    if last_w >= 8:
        table.add_column("last output", width=last_w, no_wrap=True, overflow="ellipsis")
    for r in shown:
        elapsed = ((r.ended or now) - r.started) if r.started else 0.0
        cells = [r.host] + ([r.roles] if wide else []) + [
            Text(r.state, style=_STATE_STYLE.get(r.state, "")), r.step, f"{elapsed:.1f}s"]
        if last_w >= 8:
            cells.append(Text(r.last, style="dim"))
        table.add_row(*cells)
    parts: list = [table]
    if hidden:
        counts: dict[str, int] = {}
        for r in hidden:
            counts[r.state] = counts.get(r.state, 0) + 1
        what = ", ".join(f"{n} {state}" for state, n in sorted(counts.items(), key=lambda kv: _PRIORITY.get(kv[0], 5)))
        parts.append(Text(f"+ {len(hidden)} more: {what}", style="dim", no_wrap=True, overflow="ellipsis"))
    return parts


class LiveView(Renderer):
    """Subscribes to the bus and redraws a rich Live table; ``-v`` prints output lines above it."""

    def __init__(self, console: Console, verbose: bool = False):
        self.console = console
        self.verbose = verbose
        self.rows: dict[str, _Row] = {}
        self.gate = "none"
        self.batch = ""
        self.title = ""
        self.notices: list[str] = []
        self._lock = threading.Lock()
        self.live = Live(console=console, get_renderable=self.render, refresh_per_second=8, transient=False)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.__exit__(*exc)

    @contextlib.contextmanager
    def paused(self):
        """No redraw while the operator is asked something (``--canary-pause``); the view comes back after."""
        self.live.stop()
        try:
            yield
        finally:
            self.live.start(refresh=True)

    def render(self):
        with self._lock:
            rows = list(self.rows.values())
            notices = list(self.notices[-3:])
            width, height = self.console.size
            return Group(*self._header(rows, width), *fit(rows, width, height - 2 - len(notices), time.time()),
                         *(Text(n, style="yellow", overflow="ellipsis", no_wrap=True) for n in notices))

    def _header(self, rows, width: int):
        total, done = len(rows), sum(1 for r in rows if r.ended is not None)
        label, style = {"waiting": ("waiting for kepler", "yellow"), "open": ("open", "green"),
                        "closed": ("closed", "bold red"), "none": ("none", "dim")}.get(self.gate, (self.gate, ""))
        header = Text.assemble((self.title, "bold"), "  gate: ", (label, style), f"  {done}/{count(total, 'host')} done", self.batch)
        header.no_wrap, header.overflow = True, "ellipsis"
        if width - header.cell_len < 24:
            return [header]
        top = Table.grid(padding=(0, 2))
        top.add_row(header, ProgressBar(total=max(total, 1), completed=done, width=min(30, width - header.cell_len - 4)))
        return [top]

    def __call__(self, event: ev.Event) -> None:
        # Two things happen outside the view's lock, because rich's refresh thread takes it in render():
        # stopping at the end of the run, and printing output lines above the table (-v).
        if isinstance(event, ev.RunFinished):
            self.live.stop()  # the last frame stays; the summary prints below it
            return
        event = shown(event)
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
            row.started = row.started or e.at  # pull mode: a node reports no connect; its time runs from here

    def on_output(self, e: ev.Output) -> None:
        if e.host in self.rows:
            self.rows[e.host].last = e.line

    def on_step_finished(self, e: ev.StepFinished) -> None:
        if e.host in self.rows and not e.ok:
            self.rows[e.host].last = telling_line(e.stderr_tail) or e.message
        elif e.host in self.rows and e.skipped:
            self.rows[e.host].last = f"{e.step}: skipped ({e.skipped})"

    def on_host_finished(self, e: ev.HostFinished) -> None:
        if e.host not in self.rows:
            return
        row = self.rows[e.host]
        row.state, row.ended = e.result.result, e.at
        row.started = row.started or e.result.started or e.at
        if e.result.failed_step:
            row.step = e.result.failed_step
        if e.result.reason and not e.result.ok:
            row.last = e.result.reason

    def on_batch_started(self, e: ev.BatchStarted) -> None:
        self.batch = f"  batch {e.number}/{e.total}"

    def on_gate_changed(self, e: ev.GateChanged) -> None:
        self.gate = e.state

    def on_canary_changed(self, e: ev.CanaryChanged) -> None:
        self.batch = f"  canary {e.state}"
        if e.state not in ("started", "passed"):
            self.notices.append(f"canary {e.state}: {e.reason}; not touched: {', '.join(e.rest)}")

    def on_notice(self, e: ev.Notice) -> None:
        if e.level != "info":
            self.notices.append(e.message)
