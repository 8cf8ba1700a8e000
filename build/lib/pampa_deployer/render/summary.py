"""The end-of-run summary: one row per host, failures first."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..engine.results import FAILED, INTERRUPTED, OK, SKIPPED, RunResult

_ORDER = {FAILED: 0, INTERRUPTED: 1, SKIPPED: 2, OK: 3}
_STYLE = {OK: "green", FAILED: "bold red", INTERRUPTED: "yellow", SKIPPED: "yellow"}


def rows(result: RunResult):
    return sorted(result.hosts, key=lambda h: (_ORDER.get(h.result, 9), h.host))


def headline(result: RunResult) -> str:
    counts = {k: len(result.by_result(k)) for k in (OK, FAILED, SKIPPED, INTERRUPTED)}
    parts = [f"{n} {k}" for k, n in counts.items() if n]
    took = result.ended - result.started
    what = "dry run" if result.dry_run else result.kind
    return f"{what} of {result.stage}: {', '.join(parts)} in {took:.1f}s; gate {result.gate}"


def table(result: RunResult) -> Table:
    t = Table(title=headline(result), title_justify="left")
    for col in ("host", "roles", "result", "time", "failed step", "exit", "detail"):
        t.add_column(col, overflow="fold")
    for h in rows(result):
        detail = h.reason if not h.ok else (h.revision_after or "")[:12]
        if h.stderr_tail and h.result == FAILED and h.failed_step != "connect":
            detail = f"{h.reason}\n{h.stderr_tail}"
        t.add_row(h.host, h.roles, Text(h.result, style=_STYLE.get(h.result, "")), f"{h.seconds:.1f}s",
                  h.failed_step or "", "" if h.exit_code is None else str(h.exit_code), detail)
    return t


def print_plain(result: RunResult, write) -> None:
    """CI form: ``RESULT host roles result time step exit detail`` lines, failures first."""
    write(headline(result))
    for h in rows(result):
        detail = (h.reason or "") if not h.ok else f"revision {(h.revision_after or '?')[:12]}"
        exit_code = "" if h.exit_code is None else f" exit {h.exit_code}"
        step = f" at {h.failed_step}" if h.failed_step else ""
        write(f"RESULT {h.host} [{h.roles}] {h.result}{step}{exit_code} {h.seconds:.1f}s {detail}".rstrip())
        if h.stderr_tail and h.result == FAILED:
            for line in h.stderr_tail.splitlines()[-3:]:
                write(f"       {h.host} stderr: {line}")
    for note in result.notes:
        write(f"NOTE {note}")


def print_rich(result: RunResult, console: Console) -> None:
    console.print(table(result))
    for note in result.notes:
        console.print(Text.assemble(("note: ", "yellow"), note))
