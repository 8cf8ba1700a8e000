"""The one door between events and what a renderer shows: every string in an event made printable.

Host output, step names, reasons and notes come from hosts, nodes and an access point, none of
which is trusted to be polite to a terminal (or to a log, a JUnit file, an agent's journal).
Every renderer is a ``Renderer``: the event it handles has already been through ``shown``, which
rebuilds it with each string passed through ``printable`` (``stderr_tail`` keeps its line breaks;
every other field is one line). An event without anything to clean is handed on as it is, and
the last event cleaned is remembered, so the renderers of one bus clean it once between them.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import fields, is_dataclass, replace

from ..engine import events as ev
from ..printable import printable

#: Fields that hold several lines on purpose.
MULTILINE = frozenset({"stderr_tail"})

_last = threading.local()


def cleaned(value, lines: bool = False):
    """``value`` with every string in it printable: strings, tuples and (frozen) dataclasses, recursively.

    Returns ``value`` itself when nothing had to change.
    """
    if isinstance(value, str):
        return printable(value, lines)
    if isinstance(value, tuple):
        items = tuple(cleaned(v) for v in value)
        return value if all(a is b for a, b in zip(items, value)) else items
    names = _text_fields(type(value))
    if names:
        changes = {}
        for name, multiline in names:
            old = getattr(value, name)
            new = cleaned(old, multiline)
            if new is not old:
                changes[name] = new
        return replace(value, **changes) if changes else value
    return value


@functools.cache
def _text_fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """A dataclass's fields that may hold text, each with whether it keeps line breaks (() for other types)."""
    if not is_dataclass(cls):
        return ()
    return tuple((f.name, f.name in MULTILINE) for f in fields(cls)
                 if f.init and f.type not in ("float", "int", "bool", "int | None", "float | None"))


def shown(event: ev.Event) -> ev.Event:
    """The event as a renderer may show it (cached for the next renderer of the same event)."""
    if getattr(_last, "event", None) is event:
        return _last.shown
    result = cleaned(event)
    _last.event, _last.shown = event, result
    return result


class Renderer(ev.Handler):
    """Base of every renderer: its ``on_*`` methods receive events whose text is printable."""

    def __call__(self, event: ev.Event) -> None:
        super().__call__(shown(event))
