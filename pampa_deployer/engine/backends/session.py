"""One long-lived shell per host: consecutive commands without a channel (and an sshd fork) each.

The host's login shell reads commands on stdin. Each command runs in a subshell,
``( BODY ) </dev/null``, so ``cd``, ``export`` and ``exit`` stay inside it and it
never reads the session's own stdin. A random marker with the exit code follows it
on stdout, and the same marker on stderr, so each step keeps its own status,
output and timing. A command the engine may have to stop leads a process group of its own
(``procgroup.in_group``: under bash the session's job control does it, no process is started for
it), so a timed-out or interrupted command can be stopped with everything it started. A command's
``record`` (the host's start record) is written by the session shell itself, with a built-in,
just before the subshell: one round trip for both. Output reaches ``on_line`` line by line as the
host prints it. The stage's ``prefix`` (e.g. ``source /etc/profile.d/rvm.sh``) runs once when the
session starts, not once per command.
"""
from __future__ import annotations

import threading
import time
import uuid
from typing import Callable

import paramiko

from ...commands import procgroup
from ...commands.command import Command
from ..results import CommandResult, RecordFailed
from .base import RECORDED, LineSplitter, OnLine
from .channelwait import ChannelWaiter


class SessionBroken(Exception):
    """The session cannot be used (prefix failed, channel closed); run the command on its own channel."""


class ShellSession:
    """A shell on one SSH channel, running commands one after another."""

    def __init__(self, transport, prefix: str | None, open_timeout: float = 10.0):
        self.prefix = prefix
        self.marker = f"__PAMPA_{uuid.uuid4().hex}__"
        self.tag = procgroup.new_tag()  # names the session's pgid file
        self.open_timeout = open_timeout
        self._hello = _Preamble(f"__PAMPA_HELLO_{uuid.uuid4().hex}__", self.marker)  # says "bash" or "sh"
        self._ack = f"__PAMPA_RECORDED_{uuid.uuid4().hex}__"  # printed when a command's record is written
        self._early = b""  # stdout read while waiting for the hello, before any command
        self.dead = False
        self.busy = threading.Lock()  # one command at a time; others (the lock's renewals) use a channel
        try:
            self.channel = transport.open_session(timeout=open_timeout)
            self._waiter = ChannelWaiter(self.channel)
            self.channel.exec_command('exec "${SHELL:-/bin/sh}" -s')
            # No wait: the hello is read along with the first command's output.
            self.channel.sendall((procgroup.session_setup(self.tag, self._hello.token.decode()) + "\n").encode())
        except paramiko.SSHException as e:
            raise SessionBroken(f"cannot open a shell session: {e}") from e
        if prefix:
            result = self._roundtrip(script(prefix, self.marker, in_subshell=False), None, None,
                                     timeout=max(30.0, open_timeout))
            if result.exit_code != 0:
                self.close()
                raise SessionBroken(f"prefix exited {result.exit_code}")

    def run(self, command: Command, on_line: OnLine | None = None, killable: bool = False,
            on_timeout: Callable[[], str] | None = None) -> CommandResult:
        """Run one command; ``killable`` gives it a process group of its own (its id in the session's
        pgid file, ``procgroup.pgid_file(self.tag)``), ``on_timeout`` stops it and says how.

        Raises ``RecordFailed`` when the command's record could not be written (the body did not run).
        """
        if killable and self.kind is None and not self._await_hello():
            self.close()
            return CommandResult(255, "", "[pampa] the shell session never said which shell it runs "
                                 "(pampa needs a POSIX login shell)")
        text = script(command.body(), self.marker, tag=self.tag if killable else None, kind=self.kind or "sh",
                      record=command.record, ack=self._ack)
        return self._roundtrip(text, command, on_line, command.timeout, on_timeout=on_timeout)

    @property
    def kind(self) -> str | None:
        """``bash`` or ``sh`` (how a command gets its process group, procgroup.in_group); None until known."""
        return self._hello.said

    def _roundtrip(self, text: str, command: Command | None, on_line: OnLine | None,
                   timeout: float | None = None, on_timeout: Callable[[], str] | None = None) -> CommandResult:
        marker = self.marker.encode()
        self.channel.sendall(text.encode())
        cmd = command or Command(script="")
        out, err = _MarkedStream("stdout", cmd, on_line, marker), _MarkedStream("stderr", cmd, on_line, marker)
        ack = _Preamble(self._ack, self.marker) if command is not None and command.record else None
        early, self._early = self._early, b""

        def stdout(data: bytes) -> None:
            data = self._hello.feed(data)
            if ack is not None and ack.said is None:
                data = ack.feed(data)
                if ack.said is not None and on_line is not None:
                    on_line(RECORDED, "")
            out.feed(data)
        if early:
            stdout(early)
        deadline = time.monotonic() + timeout if timeout else None
        while not (out.done and err.done):
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            self._waiter.wait(wait)
            while self.channel.recv_ready():
                stdout(self.channel.recv(65536))
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
        if out.record_status:
            raise RecordFailed(CommandResult(out.record_status, out.text(), err.text()))
        return CommandResult(out.exit_code, out.text(), err.text())

    def _await_hello(self) -> bool:
        """Read stdout until the hello line (a killable command needs to know the shell); bounded."""
        deadline = time.monotonic() + self.open_timeout
        while self.kind is None and time.monotonic() < deadline:
            if self.channel.closed or self.channel.exit_status_ready():
                return False
            self._waiter.wait(max(0.0, min(1.0, deadline - time.monotonic())))
            while self.channel.recv_ready():
                self._early += self._hello.feed(self.channel.recv(65536))
        return self.kind is not None

    def close(self) -> None:
        self.dead = True
        self.channel.close()


def script(body: str, marker: str, *, tag: str | None = None, kind: str = "sh", record: str | None = None,
           ack: str = "", in_subshell: bool = True) -> str:
    """What the session shell reads for one command: the record, the body, the status marker.

    With ``tag`` the body leads its own process group (``procgroup.in_group``) and the session's pgid
    file is emptied when it ends. ``record`` runs first, in the session shell (built-ins: no fork),
    and ``ack`` is printed once it is written; if it fails the body does not run and the marker
    carries the record's status as a second number.
    """
    if not in_subshell:
        run = body
    elif tag:
        run = procgroup.in_group(body, tag, kind)
    else:
        run = f"(\n{body}\n) </dev/null"
    after = f"{procgroup.emptied(tag)}; " if tag and in_subshell else ""
    fmt, status = "%d", '"$__pampa_rc"'
    if record:
        run = (f"__pampa_rec=0; {record} || __pampa_rec=$?\n"
               f"if [ \"$__pampa_rec\" = 0 ]; then echo '{ack}'; {run}\nfi")
        fmt, status = "%d %d", '"$__pampa_rc" "$__pampa_rec"'
    return (f"{run}\n__pampa_rc=$?; {after}printf '%s {fmt}\\n' '{marker}' {status}; "
            f"printf '%s\\n' '{marker}' >&2\n")


class _Preamble:
    """A line the session shell prints before a command's own output (``TOKEN WORD``), taken out of
    stdout: ``said`` is its word once seen. Output is held until then; should the command's end
    marker come first, the line is not coming and everything is let through."""

    def __init__(self, token: str, marker: str):
        self.token, self.marker = token.encode(), marker.encode()
        self.said: str | None = None
        self.held = b""

    def feed(self, data: bytes) -> bytes:
        if self.said is not None:
            return data
        self.held += data
        at = self.held.find(self.token)
        end = self.held.find(b"\n", at) if at >= 0 else -1
        if end < 0:
            if self.marker in self.held:
                self.said, data, self.held = "", self.held, b""
                return data
            return b""
        self.said = self.held[at + len(self.token):end].strip().decode("ascii", "replace")
        data, self.held = self.held[:at] + self.held[end + 1:], b""
        return data


class _MarkedStream:
    """A stream's bytes up to the marker go to a LineSplitter; the marker line ends the command."""

    def __init__(self, stream: str, command: Command, on_line: OnLine | None, marker: bytes):
        self.splitter = LineSplitter(stream, command, on_line)
        self.marker = marker
        self.pending = b""
        self.done = False
        self.exit_code = 255
        self.record_status = 0
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
            fields = rest.split(b"\n", 1)[0].split()
            self.exit_code = int(fields[0]) if fields else 255
            self.record_status = int(fields[1]) if len(fields) > 1 else 0
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
