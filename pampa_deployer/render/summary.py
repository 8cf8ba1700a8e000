"""The end-of-run summary: one row per host, failures first."""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..engine import events as ev
from ..engine.results import FAILED, INTERRUPTED, OK, SKIPPED, RunResult
from .shown import Renderer
from .telling import repeats, telling_line

_ORDER = {FAILED: 0, INTERRUPTED: 1, SKIPPED: 2, OK: 3}
_STYLE = {OK: "green", FAILED: "bold red", INTERRUPTED: "yellow", SKIPPED: "yellow"}


def rows(result: RunResult):
    return sorted(result.hosts, key=lambda h: (_ORDER.get(h.result, 9), h.host))


def headline(result: RunResult) -> str:
    return result.headline()


#: Below this many columns the summary leaves the roles out: host, result, step and exit stay whole.
ROLES_FROM = 100


def detail(h) -> str:
    """One line per host: its revision when ok; else why, and the stderr line that tells the cause when the
    reason does not already say it (the host's whole log is in the run directory)."""
    if h.ok:
        return (h.revision_after or "")[:12]
    told = telling_line(h.stderr_tail) if h.result == FAILED and h.failed_step != "connect" else ""
    return h.reason if repeats(h.reason, told) else f"{h.reason}: {told}"


def table(result: RunResult, width: int = 120) -> Table:
    """The summary table for a terminal ``width`` wide: no cell but the detail is ever cut or wrapped."""
    wide = width >= ROLES_FROM
    t = Table(title=headline(result), title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("host", *(["roles"] if wide else []), "result", "time", "step", "exit"):
        t.add_column(col, no_wrap=True, justify="right" if col in ("time", "exit") else "left")
    t.add_column("detail", overflow="fold", ratio=1)
    for h in rows(result):
        t.add_row(h.host, *([h.roles] if wide else []), Text(h.result, style=_STYLE.get(h.result, "")),
                  f"{h.seconds:.1f}s", h.failed_step or "", "" if h.exit_code is None else str(h.exit_code), detail(h))
    return t


def print_plain(result: RunResult, write) -> None:
    """CI form: ``RESULT host roles result time step exit detail`` lines, failures first; a refused run
    touched no host, so it has its headline and notes only (its reason is the run's error line)."""
    write(headline(result))
    for h in rows(result) if result.refused is None else ():
        if result.dry_run and h.ok:
            write(f"RESULT {h.host} [{h.roles}] planned (dry run: nothing was run)")
            continue
        detail = (h.reason or "") if not h.ok else f"revision {(h.revision_after or '?')[:12]}"
        exit_code = "" if h.exit_code is None else f" exit {h.exit_code}"
        step = f" at {h.failed_step}" if h.failed_step else ""
        write(f"RESULT {h.host} [{h.roles}] {h.result}{step}{exit_code} {h.seconds:.1f}s {detail}".rstrip())
        if h.stderr_tail and h.result == FAILED:
            for line in h.stderr_tail.splitlines()[-3:]:
                if not repeats(h.reason or "", line):
                    write(f"       {h.host} stderr: {line}")
    for h in result.hosts:
        for note in h.notes:
            write(f"NOTE {h.host}: {note}")
    for note in result.notes:
        write(f"NOTE {note}")


def print_rich(result: RunResult, console: Console) -> None:
    console.print(table(result, console.width) if result.refused is None else headline(result))
    for h in result.hosts:
        for note in h.notes:
            console.print(Text.assemble(("note: ", "yellow"), f"{h.host}: {note}"))
    for note in result.notes:
        console.print(Text.assemble(("note: ", "yellow"), note))


class SummaryPrinter(Renderer):
    """Prints the summary when the run finishes: plain lines (CI, dry run) or a table and the timeline;
    then where the run directory is, if there is one."""

    def __init__(self, console: Console, plain: bool, rundir=None):
        self.console, self.plain, self.rundir = console, plain, rundir

    def on_run_finished(self, e: ev.RunFinished) -> None:
        if self.plain:
            print_plain(e.result, lambda line: print(line, flush=True))
        elif e.result.refused is not None:
            print_rich(e.result, self.console)  # nothing ran: no timeline
        else:
            from . import timeline
            print_rich(e.result, self.console)
            self.console.print(timeline.build(e.result, width=max(20, min(100, self.console.width - 40)),
                                              legend_width=self.console.width))
        if self.rundir is not None and self.rundir.path is not None:
            where = f"run directory: {self.rundir.path}"
            print(where, flush=True) if self.plain else self.console.print(where, style="dim")
