"""The local backend: the same commands through a local shell (the benchmark floor, and `pampa` on one box)."""
from __future__ import annotations

import os
import subprocess
import threading
import uuid
from pathlib import Path

from ..commands.command import Command
from ..steps.actions import Upload
from .backend import LineSplitter, OnLine
from .results import CommandResult


class LocalBackend:
    """Runs commands with ``bash -c`` on this machine; ``home`` stands in for the host's home folder."""

    def __init__(self, name: str, home: str | None = None):
        self.name = name
        self.home = home or os.path.expanduser("~")
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def connect(self) -> None:
        Path(self.home).mkdir(parents=True, exist_ok=True)

    def run(self, command: Command, on_line: OnLine | None = None) -> CommandResult:
        env = {**os.environ, "HOME": self.home}
        proc = subprocess.Popen(["bash", "-c", command.line()], cwd=self.home, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with self._lock:
            self._proc = proc
        out = LineSplitter("stdout", command, on_line)
        err = LineSplitter("stderr", command, on_line)
        reader = threading.Thread(target=lambda: [err.feed(c) for c in iter(lambda: proc.stderr.read1(65536), b"")])
        reader.start()
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            out.feed(chunk)
        reader.join()
        try:
            code = proc.wait(timeout=command.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = 124
        with self._lock:
            self._proc = None
        return CommandResult(code, out.text(), err.text())

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
            if self._proc is not None:
                self._proc.terminate()

    def close(self) -> None:
        pass
