"""The server's log (stderr): every kind of line at most once per interval, the repeats counted.

A flood (1,100 accept failures a second, a client guessing keys) must not bury the one line that
matters, nor cost the server its disk; an internal error is still logged once with its traceback.
"""
from __future__ import annotations

import sys
import time
import traceback
from typing import Callable, TextIO

#: Most distinct kinds of line remembered at once (a flood of distinct addresses cannot grow it).
MAX_KINDS = 4096


class ServerLog:
    def __init__(self, stream: TextIO | None = None, every: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.every = every
        self.clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (when last written, repeats not written since)

    def say(self, kind: str, message: str, error: BaseException | None = None) -> bool:
        """Write ``message`` unless a line of this ``kind`` was written less than ``every`` seconds ago
        (then it is counted, and the next line of the kind says how many were held back). True if written."""
        now = self.clock()
        last, held = self._last.get(kind, (None, 0))
        if last is not None and now - last < self.every:
            self._last[kind] = (last, held + 1)
            return False
        if len(self._last) >= MAX_KINDS:
            self._forget(now)
        if held:
            message += f" ({held} more like this in the last {now - last:.0f} s)"
        lines = [f"pampa access point: {message}"]
        if error is not None:
            lines += ["".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()]
        stream = self.stream or sys.stderr
        try:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except (OSError, ValueError):  # stderr gone: nothing to do about it here
            pass
        self._last[kind] = (now, 0)
        return True

    def _forget(self, now: float) -> None:
        for kind, (last, _held) in list(self._last.items()):
            if now - last >= self.every:
                del self._last[kind]
        while len(self._last) >= MAX_KINDS:
            del self._last[next(iter(self._last))]
