"""Ctrl-C and SIGTERM for commands that run until the operator stops them (``exec``, ``logs -f``).

Both become ``KeyboardInterrupt`` in the main thread, which then closes every channel
(the remote commands end, see ``commands/watch.py``) and exits 130 or 143.
"""
from __future__ import annotations

import contextlib
import signal


class Signals:
    """Which signal arrived, if any."""

    def __init__(self) -> None:
        self.signum: int | None = None


@contextlib.contextmanager
def interruptible():
    """Route SIGINT and SIGTERM to KeyboardInterrupt; yields a ``Signals`` recording which one came."""
    seen = Signals()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if seen.signum is None:
            seen.signum = signum
            raise KeyboardInterrupt

    for s in previous:
        signal.signal(s, handler)
    try:
        yield seen
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
