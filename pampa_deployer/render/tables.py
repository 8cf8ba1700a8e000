"""One table, three forms: a rich table at a terminal, plain aligned columns elsewhere, or JSON.

Box-drawing characters and wrapped cells are for people at a terminal; a pipe, a
log file or a CI job gets columns that ``grep``/``awk`` can read, and ``--json``
gets the same rows as objects. ``pampa check``, ``config`` and ``stages`` print
through here.
"""
from __future__ import annotations

import json
from typing import Any, Sequence, TextIO

from rich import box
from rich.console import Console
from rich.table import Table

from ..printable import printable

#: A column is padded to its longest cell up to this many characters; a longer cell (a 300-character
#: list in ``pampa config``) pushes the rest of its own row right instead of padding every other row.
PAD_AT_MOST = 40


def plain(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Left-aligned columns separated by two spaces; no cell is cut, the last column is never padded."""
    cells = [[str(c) for c in columns]] + [[_one_line(v) for v in row] for row in rows]
    widths = [min(PAD_AT_MOST, max(len(r[i]) for r in cells)) for i in range(len(columns) - 1)]
    return ["  ".join([r[i].ljust(widths[i]) for i in range(len(widths))] + [r[-1]]).rstrip() for r in cells]


def _one_line(value: Any) -> str:
    """A cell on one line, every string printable (cells may hold what hosts or the access point said)."""
    return printable(" | ".join(str("" if value is None else value).splitlines()))


def key_of(column: str) -> str:
    return column.replace(" ", "_")


def as_json(columns: Sequence[str], rows: Sequence[Sequence[Any]], **extra: Any) -> str:
    """``{"rows": [{column: value}, ...], **extra}`` with column names in snake_case."""
    return json.dumps({**extra, "rows": [{key_of(c): v for c, v in zip(columns, row)} for row in rows]},
                      indent=2, default=str)


def show(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, console: Console, terminal: bool,
         json_out: bool = False, title: str | None = None, out: TextIO | None = None, styles=None,
         whole: Sequence[str] = (), **extra: Any) -> None:
    """Print ``rows`` as JSON (``json_out``), a rich table (``terminal``) or plain columns.

    At a terminal the columns named in ``whole`` are never cut or wrapped (host names, revisions, dates):
    the others wrap to make room."""
    if json_out:
        print(as_json(columns, rows, **({"title": title} if title else {}), **extra), file=out)
        return
    if not terminal:
        if title:
            print(title, file=out)
        for line in plain(columns, rows):
            print(line, file=out)
        return
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column in whole, overflow="fold")
    for i, row in enumerate(rows):
        style = styles(i, row) if styles else None
        table.add_row(*[printable(str("" if v is None else v), lines=True) for v in row], style=style)
    console.print(table)
