"""One long-lived shell per host: consecutive commands without a channel (and an sshd fork) each.

The host's login shell reads commands on stdin. Each command runs in a subshell,
``( BODY ) </dev/null``, so ``cd``, ``export`` and ``exit`` stay inside it and it
never reads the session's own stdin. A random marker with the exit code follows it
on stdout, and the same marker on stderr, so each step keeps its own status,
output and timing. Each command body runs in its own process group (``procgroup.wrap``), so a
timed-out or interrupted command can be stopped with everything it started. Output reaches
``on_line`` line by line as the host prints it. The stage's ``prefix`` (e.g. ``source /etc/profile.d/rvm.sh``)
runs once when the session starts, not once per command.
"""
from __future__ import annotations

import select
import threading
import time
import uuid
from typing import Callable

import paramiko

from ..commands import procgroup
from ..commands.command import Command
from .backend import LineSplitter, OnLine
from .results import CommandResult


class SessionBroken(Exception):
    """The session cannot be used (prefix failed, channel closed); run the command on its own channel."""


class ShellSession:
    """A shell on one SSH channel, running commands one after another."""

    def __init__(self, transport, prefix: str | None, open_timeout: float = 10.0):
        self.prefix = prefix
        self.marker = f"__PAMPA_{uuid.uuid4().hex}__"
        self.dead = False
        self.busy = threading.Lock()  # one command at a time; others (the lock's renewals) use a channel
        try:
            self.channel = transport.open_session(timeout=open_timeout)
            self.channel.exec_command('exec "${SHELL:-/bin/sh}" -s')
        except paramiko.SSHException as e:
            raise SessionBroken(f"cannot open a shell session: {e}") from e
        if prefix:
            result = self._roundtrip(prefix, None, None, timeout=max(30.0, open_timeout), in_subshell=False)
            if result.exit_code != 0:
                self.close()
                raise SessionBroken(f"prefix exited {result.exit_code}")

    def run(self, command: Command, on_line: OnLine | None = None, tag: str | None = None,
            on_timeout: Callable[[], str] | None = None) -> CommandResult:
        """Run one command; ``tag`` names its process group, ``on_timeout`` stops it and says how."""
        body = procgroup.wrap(command.body(), tag) if tag else command.body()
        return self._roundtrip(body, command, on_line, command.timeout, on_timeout=on_timeout)

    def _roundtrip(self, body: str, command: Command | None, on_line: OnLine | None,
                   timeout: float | None = None, in_subshell: bool = True,
                   on_timeout: Callable[[], str] | None = None) -> CommandResult:
        marker = self.marker.encode()
        script = f"(\n{body}\n) </dev/null" if in_subshell else body
        self.channel.sendall(f"{script}\n__pampa_rc=$?; printf '%s %d\\n' '{self.marker}' \"$__pampa_rc\"; "
                             f"printf '%s\\n' '{self.marker}' >&2\n".encode())
        cmd = command or Command(script=body)
        out, err = _MarkedStream("stdout", cmd, on_line, marker), _MarkedStream("stderr", cmd, on_line, marker)
        deadline = time.monotonic() + timeout if timeout else None
        while not (out.done and err.done):
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            select.select([self.channel], [], [], wait)
            while self.channel.recv_ready():
                out.feed(self.channel.recv(65536))
            while self.channel.recv_stderr_ready():
                err.feed(self.channel.recv_stderr(65536))
            if out.done and err.done:
                break
            if self.channel.closed or self.channel.exit_status_ready():
                self.dead = True
                return CommandResult(255, out.text(), err.text() + "\n[pampa] session closed (aborted)")
            if deadline is not None and time.monotonic() >= deadline:
                stopped = on_timeout() if on_timeout is not None else "it was left running"
                self.close()
                return CommandResult(124, out.text(), err.text() + f"\n[pampa] timed out after {timeout:g}s; "
                                     f"{stopped}")
        return CommandResult(out.exit_code, out.text(), err.text())

    def close(self) -> None:
        self.dead = True
        self.channel.close()


class _MarkedStream:
    """A stream's bytes up to the marker go to a LineSplitter; the marker line ends the command."""

    def __init__(self, stream: str, command: Command, on_line: OnLine | None, marker: bytes):
        self.splitter = LineSplitter(stream, command, on_line)
        self.marker = marker
        self.pending = b""
        self.done = False
        self.exit_code = 255
        self.stream = stream

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        self.pending += data
        at = self.pending.find(self.marker)
        if at < 0:
            # Pass on everything but what could be the start of the marker, so that a line printed
            # before a long silence reaches the operator now, not when the command ends.
            keep = _partial_marker(self.pending, self.marker)
            if len(self.pending) > keep:
                self.splitter.feed(self.pending[:len(self.pending) - keep])
                self.pending = self.pending[len(self.pending) - keep:]
            return
        rest = self.pending[at + len(self.marker):]
        if b"\n" not in rest:
            return  # the exit code has not fully arrived
        self.splitter.feed(self.pending[:at])
        if self.stream == "stdout":
            self.exit_code = int(rest.split(b"\n", 1)[0].strip() or b"255")
        self.pending = b""
        self.done = True

    def text(self) -> str:
        return self.splitter.text()


def _partial_marker(data: bytes, marker: bytes) -> int:
    """Length of the longest end of ``data`` that is a beginning of ``marker``."""
    for size in range(min(len(data), len(marker) - 1), 0, -1):
        if data.endswith(marker[:size]):
            return size
    return 0
