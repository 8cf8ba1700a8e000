"""The run directory ``.pampa/runs/<stage>-<kind>-<time>/``: per-host logs, the event log, report and timeline."""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import TextIO

from ..engine import events as ev
from . import report, timeline
from .plain import PlainRenderer, stamp
from .shown import Renderer


def runs_of(base: Path, stage: str) -> list[Path]:
    """The run folders of ``stage`` in ``base``, oldest first (by the time in their names)."""
    pattern = re.compile(rf"^{re.escape(stage)}-[a-z_]+-(\d{{8}}-\d{{6}})(?:-(\d+))?$")
    found = []
    for path in base.iterdir() if base.is_dir() else ():
        m = pattern.match(path.name)
        if m and path.is_dir() and not path.is_symlink():
            found.append((m.group(1), int(m.group(2) or 1), path))
    return [path for _, _, path in sorted(found)]


def prune(base: Path, stage: str, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` run folders of ``stage`` (setting ``runs.keep``); returns the removed."""
    old = runs_of(base, stage)
    removed = old[:max(0, len(old) - max(0, keep))]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


class RunDirectory(Renderer):
    """Keeps a full log per host (every command and output line, masked; open while the host runs) and a
    plain event log; at the end of the run, the JSON report and the timeline. The folder is made at the run's first event, so a
    command refused before any host was planned leaves none behind."""

    def __init__(self, base: Path, stage: str, kind: str, keep: int | None = None):
        self.base, self.stage, self.kind, self.keep = base, stage, kind, keep
        self.path: Path | None = None
        self._files: dict[str, TextIO] = {}
        self._events: TextIO | None = None
        self._plain: PlainRenderer | None = None

    def _open(self) -> None:
        if self.keep is not None:
            prune(self.base, self.stage, self.keep - 1)  # room for this run: at most ``keep`` once it exists
        name = f"{self.stage}-{self.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
        path = self.base / name
        n = 1
        while path.exists():
            n += 1
            path = self.base / f"{name}-{n}"
        (path / "hosts").mkdir(parents=True)
        self.path = path
        self._events = open(path / "events.log", "w")
        self._plain = PlainRenderer(self._events, verbose=False)

    def _host(self, host: str) -> TextIO:
        if host not in self._files:
            self._files[host] = open(self.path / "hosts" / f"{host}.log", "a")
        return self._files[host]

    def __call__(self, event: ev.Event) -> None:
        if self.path is None:
            self._open()
        self._plain(event)
        super().__call__(event)

    def on_command_started(self, e: ev.CommandStarted) -> None:
        self._host(e.host).write(f"{stamp(e.at)} [{e.step}] $ {e.display}\n")

    def on_output(self, e: ev.Output) -> None:
        self._host(e.host).write(f"{stamp(e.at)} [{e.step}] {e.stream}: {e.line}\n")

    def on_step_finished(self, e: ev.StepFinished) -> None:
        verdict = (f"skipped: {e.skipped}" if e.skipped else "ok") if e.ok else f"FAILED ({e.message})"
        self._host(e.host).write(f"{stamp(e.at)} [{e.step}] {verdict}\n")

    def on_host_finished(self, e: ev.HostFinished) -> None:
        r = e.result
        self._host(e.host).write(f"{stamp(e.at)} result: {r.result} {r.reason}\n")
        # A finished host's log is closed (reopened for appending should anything come later): open
        # files follow the hosts in flight, not the fleet, so a thousand hosts hold no thousand files.
        self._files.pop(e.host).close()

    def on_run_finished(self, e: ev.RunFinished) -> None:
        self.close()
        report.write_json(e.result, e.exit_code, self.path / "report.json")
        timeline.export(e.result, self.path / "timeline.svg", self.path / "timeline.html")

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._events is not None:
            self._events.close()
