"""The local backend: the same commands through a local shell (the pull-mode agent, the benchmark floor).

It keeps the SSH backend's promises: a command that outlives its timeout is stopped with
its whole process group and ends with exit code 124; ``abort`` stops the running one.

With a ``pgid_file`` (the pull-mode agent), the running command's process group and its leader's
start time are written there while it runs, like push mode's pgid files on a host: if the agent
dies (SIGKILL, a crash) the group lives on, and the next agent stops it (``stop_left_behind``).
The start time tells our group from a later process that was given the same number.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

from ...commands.command import Command
from ...steps.actions import Upload
from ..results import CommandResult
from .base import LineSplitter, OnLine, record_first

#: After a command exits, how long its output pipes may stay open (a daemon it started may hold them).
DRAIN_SECONDS = 2.0
#: Between SIGTERM and SIGKILL when a command is stopped.
KILL_GRACE = 5.0


class LocalBackend:
    """Runs commands with ``bash -c`` on this machine; ``home`` stands in for the host's home folder."""

    def __init__(self, name: str, home: str | None = None, pgid_file: Path | None = None):
        self.name = name
        self.home = home or os.path.expanduser("~")
        self.pgid_file = pgid_file
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def connect(self) -> None:
        Path(self.home).mkdir(parents=True, exist_ok=True)

    def run(self, command: Command, on_line: OnLine | None = None) -> CommandResult:
        command = record_first(self.run, command, on_line)
        env = {**os.environ, "HOME": self.home}
        # Its own process group, so a timeout or an abort stops everything the command started.
        proc = subprocess.Popen(["bash", "-c", command.line()], cwd=self.home, env=env, start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with self._lock:
            self._proc = proc
        self._note_group(proc.pid)
        timed_out = threading.Event()
        timer = None
        if command.timeout:
            def expire() -> None:
                timed_out.set()
                _stop_group(proc)
            timer = threading.Timer(float(command.timeout), expire)
            timer.daemon = True
            timer.start()
        out = LineSplitter("stdout", command, on_line)
        err = LineSplitter("stderr", command, on_line)
        readers = [threading.Thread(target=_pump, args=(proc.stdout, out), daemon=True),
                   threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True)]
        for reader in readers:
            reader.start()
        code = proc.wait()
        for reader in readers:
            reader.join(DRAIN_SECONDS)
        if timer is not None:
            timer.cancel()
        with self._lock:
            self._proc = None
        self._note_group(None)
        if timed_out.is_set():
            return CommandResult(124, out.text(), err.text() + f"\n[pampa] timed out after {command.timeout:g}s")
        return CommandResult(code, out.text(), err.text())

    def _note_group(self, pgid: int | None) -> None:
        """Write (or, ``None``, empty) the pgid file: ``PGID START`` of the running command's group."""
        if self.pgid_file is None:
            return
        if pgid is None:
            self.pgid_file.unlink(missing_ok=True)
            return
        start = _start_time(pgid)
        tmp = self.pgid_file.with_name(f".{self.pgid_file.name}.{uuid.uuid4().hex[:8]}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{pgid} {start or '-'}\n")
        os.replace(tmp, self.pgid_file)

    def put(self, upload: Upload) -> None:
        target = Path(upload.remote.replace("~", self.home, 1) if upload.remote.startswith("~") else upload.remote)
        if not target.is_absolute():
            target = Path(self.home) / target
        tmp = target.with_name(f".{target.name}.pampa-{uuid.uuid4().hex[:8]}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, upload.mode)
        with os.fdopen(fd, "wb") as f:
            f.write(upload.content)
        os.chmod(tmp, upload.mode)
        os.replace(tmp, target)

    def abort(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None:
            _stop_group(proc)

    def close(self) -> None:
        pass


def _pump(stream, splitter: LineSplitter) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):
        splitter.feed(chunk)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the command's process group, SIGKILL it if still there after ``KILL_GRACE``."""
    def send(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    send(signal.SIGTERM)
    timer = threading.Timer(KILL_GRACE, lambda: send(signal.SIGKILL) if proc.poll() is None else None)
    timer.daemon = True
    timer.start()


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return fields[19] if len(fields) > 19 else None


def stop_left_behind(pgid_file: Path, grace: float = KILL_GRACE) -> int | None:
    """Stop the process group a dead agent's command left running (TERM, then KILL after ``grace``).

    Returns the group stopped, or None: no file, the command had ended, or the number now belongs
    to another process (its leader started at another time). A group whose leader has exited is
    still ours: a process group's number is never given to a new process while the group lives.
    """
    try:
        words = pgid_file.read_text().split()
    except OSError:
        return None
    pgid_file.unlink(missing_ok=True)
    if len(words) != 2 or not words[0].isdigit() or int(words[0]) <= 1:
        return None
    pgid, start = int(words[0]), words[1]
    now = _start_time(pgid)
    if now is not None and now != start:
        return None
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return None
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return pgid
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return pgid
