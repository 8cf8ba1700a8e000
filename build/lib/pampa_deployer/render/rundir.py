"""The run directory ``.pampa/runs/<stage>-<time>/``: per-host logs, the event log, report and timeline."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO

from ..engine import events as ev
from .plain import PlainRenderer, stamp


class RunDirectory:
    """Keeps a full log per host (every command and output line, masked) and a plain event log."""

    def __init__(self, base: Path, stage: str, kind: str):
        name = f"{stage}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
        path = base / name
        n = 1
        while path.exists():
            n += 1
            path = base / f"{name}-{n}"
        self.path = path
        (self.path / "hosts").mkdir(parents=True)
        self._files: dict[str, TextIO] = {}
        self._events = open(self.path / "events.log", "w")
        self._plain = PlainRenderer(self._events, verbose=False)

    def _host(self, host: str) -> TextIO:
        if host not in self._files:
            self._files[host] = open(self.path / "hosts" / f"{host}.log", "a")
        return self._files[host]

    def __call__(self, event: ev.Event) -> None:
        self._plain(event)
        if isinstance(event, ev.CommandStarted):
            self._host(event.host).write(f"{stamp(event.at)} [{event.step}] $ {event.display}\n")
        elif isinstance(event, ev.Output):
            self._host(event.host).write(f"{stamp(event.at)} [{event.step}] {event.stream}: {event.line}\n")
        elif isinstance(event, ev.StepFinished):
            verdict = "ok" if event.ok else f"FAILED ({event.message})"
            self._host(event.host).write(f"{stamp(event.at)} [{event.step}] {verdict}\n")
        elif isinstance(event, ev.HostFinished):
            r = event.result
            self._host(event.host).write(f"{stamp(event.at)} result: {r.result} {r.reason}\n")

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._events.close()
