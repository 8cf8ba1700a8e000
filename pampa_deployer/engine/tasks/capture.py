"""``print()`` in a Python step goes to its host's output (live view, -v, run directory), not over the screen.

While any task runs, ``sys.stdout``/``sys.stderr`` are proxies: a write from a thread that
runs a task becomes lines for that task's sink; every other thread writes where it always
did. A write made while a sink handles a line (``fab``'s sink prints) goes straight through.
"""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Callable

_local = threading.local()
_lock = threading.Lock()
_users = 0
_saved: dict[str, object] = {}


class _Proxy:
    """Stands in for one of ``sys.stdout``/``sys.stderr``; routes a task thread's writes to its sink."""

    def __init__(self, stream: str, original):
        self.stream, self.original = stream, original

    def write(self, text: str) -> int:
        route = getattr(_local, "route", None)
        if route is None:
            return self.original.write(text)
        route.write(self.stream, text)
        return len(text)

    def flush(self) -> None:
        route = getattr(_local, "route", None)
        if route is None:
            self.original.flush()

    def __getattr__(self, name):  # isatty, encoding, fileno...: the real stream's
        return getattr(self.original, name)


class _Route:
    """A task thread's pending partial lines, per stream, and where complete lines go."""

    def __init__(self, on_line: Callable[[str, str], None], mask: Callable[[str], str]):
        self.on_line, self.mask = on_line, mask
        self.partial = {"stdout": "", "stderr": ""}

    def write(self, stream: str, text: str) -> None:
        *lines, self.partial[stream] = (self.partial[stream] + text).split("\n")
        for line in lines:
            self.emit(stream, line)

    def emit(self, stream: str, line: str) -> None:
        with direct():  # a sink that prints (fab) writes to the real stream
            self.on_line(stream, self.mask(line.rstrip("\r")))

    def close(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                self.emit(stream, rest)


@contextmanager
def installed():
    """Proxies on ``sys.stdout``/``sys.stderr`` while at least one task runs; the old streams after."""
    global _users
    with _lock:
        if _users == 0:
            for name in ("stdout", "stderr"):
                _saved[name] = getattr(sys, name)
                setattr(sys, name, _Proxy(name, _saved[name]))
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for name in ("stdout", "stderr"):
                    current = getattr(sys, name)
                    if isinstance(current, _Proxy):  # someone else may have replaced it meanwhile
                        setattr(sys, name, _saved[name])


@contextmanager
def routed(on_line: Callable[[str, str], None], mask: Callable[[str], str]):
    """In this thread, ``print`` (and any write to sys.stdout/stderr) becomes ``on_line(stream, line)``."""
    route = _Route(on_line, mask)
    _local.route = route
    try:
        yield
    finally:
        route.close()
        _local.route = None


@contextmanager
def direct():
    """Writes from this thread go to the real streams (a sink printing on a task's thread)."""
    route = getattr(_local, "route", None)
    _local.route = None
    try:
        yield
    finally:
        _local.route = route
