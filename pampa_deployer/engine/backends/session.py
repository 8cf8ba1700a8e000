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

Commands can also be *sent ahead* (``send_ahead``): written to the shell together, so that steps that
need no answer from pampa's side cost one round trip together instead of one each. The host runs
each one only if every earlier one succeeded (exit code and record), pampa's connection is still
there (the session's sshd is alive) and, for a step's first command, the session has no stop file
(pampa writes it at the first Ctrl-C: no new step starts); otherwise it prints a "skip" marker.
``run`` then reads each one's result in order, with its own timeout from when its turn came, so
per-step output, timing, records and stopping are exactly as when each is sent alone.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Callable

import paramiko

from ...commands import procgroup
from ...commands.command import Command
from ..results import CommandResult, NotStarted, RecordFailed
from .base import RECORDED, LineSplitter, OnLine
from .channelwait import ChannelWaiter


class SessionBroken(Exception):
    """The session cannot be used (prefix failed, channel closed); run the command on its own channel."""


@dataclass(frozen=True)
class _Ahead:
    """A command sent ahead, waiting for ``run`` to read its result; ``tag`` names its pgid file."""

    command: Command
    tag: str | None


class ShellSession:
    """A shell on one SSH channel, running commands one after another."""

    def __init__(self, transport, prefix: str | None, open_timeout: float = 10.0):
        self.prefix = prefix
        self.marker = f"__PAMPA_{uuid.uuid4().hex}__"
        self.tag = procgroup.new_tag()  # names the session's files; a command's pgid file is TAG-N
        self.open_timeout = open_timeout
        self._hello = _Preamble(f"__PAMPA_HELLO_{uuid.uuid4().hex}__", self.marker)  # says "bash" or "sh"
        self._ack = f"__PAMPA_RECORDED_{uuid.uuid4().hex}__"  # printed when a command's record is written
        self._carry = {"stdout": b"", "stderr": b""}  # read past the last result: the next one's beginning
        self._count = 0
        self.ahead: deque[_Ahead] = deque()
        self._ahead_thread: int | None = None
        #: Stops a command by its tag (the backend's ``stop_command``): a command sent ahead that runs out
        #: of time while pampa reads past it.
        self.stopper: Callable[[str], str] | None = None
        self.dead = False
        self.busy = threading.Lock()  # one command at a time; others (the lock's renewals) use a channel
        try:
            self.channel = transport.open_session(timeout=open_timeout)
            self._waiter = ChannelWaiter(self.channel)
            self.channel.exec_command('exec "${SHELL:-/bin/sh}" -s')
            # The hello is read along with the first command's output. $PPID is the session's sshd:
            # once it has gone (pampa's connection with it), nothing sent ahead starts.
            self._send("__pampa_sshd=$PPID; " + procgroup.session_setup(self.tag, self._hello.token.decode()) + "\n")
        except paramiko.SSHException as e:
            raise SessionBroken(f"cannot open a shell session: {e}") from e
        if prefix:
            result = self._roundtrip(script(prefix, self.marker, in_subshell=False), None, None,
                                     timeout=max(30.0, open_timeout))
            if result.exit_code != 0:
                self.close()
                raise SessionBroken(f"prefix exited {result.exit_code}")

    @property
    def stop_file(self) -> str:
        """On the host: while it exists, no step sent ahead starts (``stop_command`` writes it)."""
        return f"{procgroup.PGID_DIR}/pampa-{self.tag}.stop"

    def next_tag(self) -> str:
        self._count += 1
        return f"{self.tag}-{self._count}"

    def tag_for(self, command: Command) -> str | None:
        """The tag ``command`` runs under (names its pgid file): its own if it was sent ahead, else a new one."""
        if self._next_is(command):
            return self.ahead[0].tag
        return self.next_tag() if command.killable else None

    def sent_ahead_here(self) -> bool:
        """This thread sent commands ahead that are still to be read."""
        return bool(self.ahead) and self._ahead_thread == threading.get_ident()

    def reserved_elsewhere(self) -> bool:
        """Commands sent ahead by another thread are still to be read: this thread must use a channel."""
        return bool(self.ahead) and self._ahead_thread != threading.get_ident()

    def _next_is(self, command: Command) -> bool:
        return bool(self.ahead) and self.ahead[0].command == command and \
            self._ahead_thread == threading.get_ident()

    def send_ahead(self, entries: list[tuple[Command, bool]]) -> None:
        """Write ``entries`` (a command, and whether it begins a step) to the shell at once; ``run`` reads
        their results in order. See the module's docstring for when the host runs each one."""
        self._drain()
        parts = ["__pampa_go=1\n"]
        for command, begins_step in entries:
            tag = self.next_tag() if command.killable else None
            text = script(command.body(), self.marker, tag=tag, kind=self.kind, record=command.record,
                          ack=self._ack, in_subshell=command.subshell, braced=not command.subshell)
            parts.append(ahead(text, self.marker, self.stop_file if begins_step else None))
            self.ahead.append(_Ahead(command, tag))
        self._ahead_thread = threading.get_ident()
        self._send("".join(parts))

    def run(self, command: Command, on_line: OnLine | None = None, tag: str | None = None,
            on_timeout: Callable[[], str] | None = None) -> CommandResult:
        """Run one command, or read its result if it was sent ahead. ``tag`` (``tag_for``) gives it a
        process group of its own, its id in ``procgroup.pgid_file(tag)``; ``on_timeout`` stops it and
        says how.

        Raises ``RecordFailed`` when the command's record could not be written (the body did not run),
        ``NotStarted`` when it was sent ahead and the host did not start it.
        """
        if self._next_is(command):
            self.ahead.popleft()
            return self._read(command, on_line, command.timeout, on_timeout)
        self._drain()
        if tag and self.kind is None and not self._await_hello():
            self.close()
            return CommandResult(255, "", "[pampa] the shell session never said which shell it runs "
                                 "(pampa needs a POSIX login shell)")
        text = script(command.body(), self.marker, tag=tag, kind=self.kind or "sh",
                      record=command.record, ack=self._ack, in_subshell=command.subshell,
                      braced=not command.subshell)
        return self._roundtrip(text, command, on_line, command.timeout, on_timeout=on_timeout)

    def _drain(self) -> None:
        """Read the results of commands sent ahead that pampa will not ask for (an earlier one failed, so
        the host skipped them; or the run went another way): the session is then free again."""
        while self.ahead and not self.dead:
            entry = self.ahead.popleft()
            stop = (lambda t=entry.tag: self.stopper(t)) if entry.tag and self.stopper else None
            try:
                self._read(entry.command, None, entry.command.timeout, stop)
            except (NotStarted, RecordFailed):
                pass
        self.ahead.clear()

    @property
    def kind(self) -> str | None:
        """``bash`` or ``sh`` (how a command gets its process group, procgroup.in_group); None until known."""
        return self._hello.said

    def _send(self, text: str) -> None:
        """One write to the shell: a round trip's sending half."""
        self.channel.sendall(text.encode())

    def _roundtrip(self, text: str, command: Command | None, on_line: OnLine | None,
                   timeout: float | None = None, on_timeout: Callable[[], str] | None = None) -> CommandResult:
        self._send(text)
        return self._read(command, on_line, timeout, on_timeout)

    def _read(self, command: Command | None, on_line: OnLine | None, timeout: float | None = None,
              on_timeout: Callable[[], str] | None = None) -> CommandResult:
        """Read the next command's output up to its markers; what follows them is the next one's."""
        marker = self.marker.encode()
        cmd = command or Command(script="")
        out, err = _MarkedStream("stdout", cmd, on_line, marker), _MarkedStream("stderr", cmd, on_line, marker)
        ack = _Preamble(self._ack, self.marker) if command is not None and command.record else None

        def stdout(data: bytes) -> None:
            data = self._hello.feed(data)
            if ack is not None and ack.said is None:
                data = ack.feed(data)
                if ack.seen and on_line is not None:
                    on_line(RECORDED, "")
            out.feed(data)
        carried, self._carry = self._carry, {"stdout": b"", "stderr": b""}
        if carried["stdout"]:
            stdout(carried["stdout"])
        if carried["stderr"]:
            err.feed(carried["stderr"])
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
        self._carry = {"stdout": out.rest, "stderr": err.rest}
        if out.skipped:
            raise NotStarted()
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
                self._carry["stdout"] += self._hello.feed(self.channel.recv(65536))
        return self.kind is not None

    def close(self) -> None:
        self.dead = True
        self.ahead.clear()
        self.channel.close()


def script(body: str, marker: str, *, tag: str | None = None, kind: str | None = "sh", record: str | None = None,
           ack: str = "", in_subshell: bool = True, braced: bool = False) -> str:
    """What the session shell reads for one command: the record, the body, the status marker.

    With ``tag`` the body leads its own process group (``procgroup.in_group``) and the session's pgid
    file is emptied when it ends. ``record`` runs first, in the session shell (built-ins: no fork),
    and ``ack`` is printed once it is written; if it fails the body does not run and the marker
    carries the record's status as a second number. Not ``in_subshell``, the body runs in the session's
    shell itself: as is (the stage's prefix), or ``braced`` with stdin from /dev/null (pampa's own
    bookkeeping, ``Command.subshell``: no fork, and never reading what is sent after it).
    """
    if not in_subshell:
        run = f"{{\n{body}\n}} </dev/null" if braced else body
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


def ahead(text: str, marker: str, stop_file: str | None = None) -> str:
    """A command's ``script`` sent ahead: run only while every earlier one sent ahead succeeded, the
    session's sshd is alive and (``stop_file``: a step's first command) no stop file exists; a failure
    (exit code or record) stops the ones after it. Else the marker says ``skip``."""
    guard = '[ "$__pampa_go" = 1 ] && kill -0 "$__pampa_sshd" 2>/dev/null'
    if stop_file:
        guard += f" && [ ! -e {stop_file} ]"
    return (f"__pampa_rc=0; __pampa_rec=0; if {guard}; then\n{text}"
            f"case $__pampa_rc/$__pampa_rec in 0/0) ;; *) __pampa_go=0;; esac\n"
            f"else printf '%s skip\\n' '{marker}'; printf '%s\\n' '{marker}' >&2; fi\n")


class _Preamble:
    """A line the session shell prints before a command's own output (``TOKEN WORD``), taken out of
    stdout: ``said`` is its word once seen. Output is held until then; should the command's end
    marker come first, the line is not coming and everything is let through."""

    def __init__(self, token: str, marker: str):
        self.token, self.marker = token.encode(), marker.encode()
        self.said: str | None = None
        self.seen = False  # the line itself came (not only the end of the command)
        self.held = b""

    def feed(self, data: bytes) -> bytes:
        if self.said is not None:
            return data
        self.held += data
        at, end_marker = self.held.find(self.token), self.held.find(self.marker)
        if at >= 0 and (end_marker < 0 or at < end_marker):
            end = self.held.find(b"\n", at)
            if end < 0:
                return b""
            self.said = self.held[at + len(self.token):end].strip().decode("ascii", "replace")
            self.seen = True
            data, self.held = self.held[:at] + self.held[end + 1:], b""
            return data
        if end_marker >= 0:  # the command ended first (what follows may be the next one's): not coming
            self.said, data, self.held = "", self.held, b""
            return data
        return b""


class _MarkedStream:
    """A stream's bytes up to the marker go to a LineSplitter; the marker line ends the command, and
    what follows it (``rest``) is the next command's."""

    def __init__(self, stream: str, command: Command, on_line: OnLine | None, marker: bytes):
        self.splitter = LineSplitter(stream, command, on_line)
        self.marker = marker
        self.pending = b""
        self.rest = b""
        self.done = False
        self.skipped = False
        self.exit_code = 255
        self.record_status = 0
        self.stream = stream

    def feed(self, data: bytes) -> None:
        if self.done:
            self.rest += data
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
        after = self.pending[at + len(self.marker):]
        if b"\n" not in after:
            return  # the exit code has not fully arrived
        line, self.rest = after.split(b"\n", 1)
        self.splitter.feed(self.pending[:at])
        if self.stream == "stdout":
            fields = line.split()
            self.skipped = fields[:1] == [b"skip"]
            self.exit_code = _number(fields[0]) if fields and not self.skipped else 255
            self.record_status = _number(fields[1]) if len(fields) > 1 else 0
        self.pending = b""
        self.done = True

    def text(self) -> str:
        return self.splitter.text()


def _number(field: bytes) -> int:
    try:
        return int(field)
    except ValueError:
        return 255


def _partial_marker(data: bytes, marker: bytes) -> int:
    """Length of the longest end of ``data`` that is a beginning of ``marker``."""
    for size in range(min(len(data), len(marker) - 1), 0, -1):
        if data.endswith(marker[:size]):
            return size
    return 0
