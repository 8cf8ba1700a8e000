"""The SSH backend: one Fabric connection per host, kept for the whole run.

Fabric resolves ssh_config (User, Port, IdentityFile, ProxyJump) and opens the connection (its
settings and the connect errors' meaning: sshconfig.py); commands then run on raw paramiko
channels, woken by each arrival (channelwait: no file descriptor, so no limit on how many hosts),
which avoids invoke's sleep-polling runner. TCP_NODELAY is set on the socket: paramiko leaves
Nagle's algorithm on, which adds tens of ms per command.
"""
from __future__ import annotations

import os
import posixpath
import socket
import threading
import time
import uuid

import paramiko
from fabric import Connection

from ...commands import procgroup
from ...commands import upload as via_session
from ...commands.command import Command
from ...errors import ConnectError
from ...inventory.model import Host
from ...steps.actions import Upload
from ..results import CommandResult, NotStarted
from .base import LineSplitter, OnLine, record_first
from .channelwait import ChannelWaiter
from .hostkeys import secure
from .liveness import ConnectionLost, Heartbeat, HostUnresponsive
from .session import SessionBroken, ShellSession
from .sshconfig import SSHSettings, classify, fabric_config

__all__ = ["SSHBackend", "SSHSettings", "classify", "sftp_put"]

#: Seconds an SFTP read or write may wait for the host (the dead-peer rule usually ends it first).
SFTP_TIMEOUT = 60.0

#: Seconds an abort waits for a host to open the channel that stops its command: a live host opens one
#: in milliseconds, and a frozen one must not hold up the operator's second Ctrl-C. After the abort,
#: every later channel to the host (its revision-log line, the lock release) gets the same bound.
ABORT_OPEN_TIMEOUT = 3.0

#: What an abort says of a host whose running command it could not reach.
NOT_ANSWERING = ("the host did not answer the stop: its command may still be running there, and "
                 "`pampa status` shows the host incomplete")


def sftp_put(sftp: paramiko.SFTPClient, upload: Upload) -> None:
    """Write to a temporary name with the final mode, then rename over the target (atomic)."""
    remote = upload.remote[2:] if upload.remote.startswith("~/") else upload.remote
    tmp = posixpath.join(posixpath.dirname(remote) or ".",
                         f".{posixpath.basename(remote)}.pampa-{uuid.uuid4().hex[:8]}")
    try:
        with sftp.open(tmp, "wb") as f:
            f.chmod(upload.mode)  # before any byte is written: never readable by others
            f.write(upload.content)
        sftp.posix_rename(tmp, remote)
    except BaseException:
        try:
            sftp.remove(tmp)
        except OSError:
            pass
        raise


class SSHBackend:
    """Runs one host's commands over one SSH connection, kept alive and watched by a Heartbeat."""

    def __init__(self, host: Host, settings: SSHSettings):
        self.host = host
        self.name = host.name
        self.settings = settings
        self.connection: Connection | None = None
        self.heartbeat: Heartbeat | None = None
        self._channel: paramiko.Channel | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()
        self._opening = threading.Lock()
        self._sessions: dict[str | None, ShellSession] = {}
        self._broken: set[str | None] = set()
        self._running: set[str] = set()  # tags of the commands running now (see procgroup)
        self._aborted = False
        self._holding = False  # the run is stopping: no step sent ahead may start (``hold``)
        self._uploads: dict[Upload, Command] = {}  # small files sent ahead through the session
        self._silent = False  # the abort found the host not answering: nothing more is sent to it
        self.abort_outcome: str | None = None  # what the abort left on the host, in words (None: nothing ran)
        self._closing = False

    # -- connecting -------------------------------------------------------------------------
    def _new_connection(self) -> Connection:
        host, settings = self.host, self.settings
        timeout = settings.connect_timeout
        # Every step of the handshake is bounded: TCP connect, banner, auth, and later each channel open.
        kwargs = {"banner_timeout": timeout, "auth_timeout": timeout, "channel_timeout": timeout}
        if host.key:
            kwargs["key_filename"] = [os.path.expanduser(host.key)]
        # A config of its own: Fabric writes into the config on every Connection (and re-merges it,
        # emptying it for a moment), so a shared one breaks hosts connecting at the same time.
        conn = Connection(host.address, user=host.user or None, port=host.port,
                          config=fabric_config(settings).clone(), connect_timeout=max(1, int(round(timeout))),
                          connect_kwargs=kwargs)
        secure(conn, settings.known_hosts, settings.accept_new)
        return conn

    def connect(self) -> None:
        """Open the connection, throttled and retried with back-off for transient failures."""
        if self.host.key and not os.path.exists(os.path.expanduser(self.host.key)):
            raise ConnectError(f"{self.host.name}: key file {self.host.key} not found; check `key` for this "
                               "host (or the stage)", "key file not found")
        attempt = 0
        while True:
            conn = self._new_connection()
            t0 = time.monotonic()
            try:
                with self.settings.handshakes:
                    conn.open()
                sock = conn.transport.sock
                if isinstance(sock, socket.socket):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.connection = conn
                self.heartbeat = Heartbeat(conn.transport, self.settings.alive_interval,
                                           self.settings.alive_count_max, on_dead=self._drop).start(self.name)
                return
            except Exception as e:  # noqa: BLE001 - classified below, nothing is swallowed
                conn.close()
                error = classify(e, self.host, self.settings, time.monotonic() - t0)
                if not error.retryable or attempt >= self.settings.retries:
                    raise error from e
                attempt += 1
                time.sleep(min(0.25 * 2 ** attempt, 4.0))

    def _answering(self) -> bool:
        """Did the host answer its last keepalive in time? (A frozen one would only make us wait.)"""
        beat = self.heartbeat
        return beat is None or (not beat.dead and beat.silent_for() <= 2 * beat.interval)

    def _drop(self) -> None:
        """The host is unresponsive: close the transport so every call blocked on it returns."""
        if self.connection is not None and self.connection.transport is not None:
            self.connection.transport.close()

    # -- running ----------------------------------------------------------------------------
    def run(self, command: Command, on_line: OnLine | None = None) -> CommandResult:
        """Run on the host's shell session (the default), or on a channel of its own.

        Raises HostUnresponsive when the dead-peer rule fires, ConnectionLost when the connection
        closes under the command; a command's own failure is a CommandResult.
        """
        assert self.connection is not None, "connect() first"
        self._check_alive()
        try:
            try:
                result = self._run(command, on_line)
            except NotStarted:
                if self._holding:
                    raise  # the run is stopping: the host did not start this step, as asked
                result = self._run(command, on_line)  # skipped for a reason of the host's: ask again
        except (paramiko.SSHException, EOFError, OSError) as e:
            self._check_alive()
            raise ConnectionLost(f"{type(e).__name__}: {e}") from e
        if result.exit_code == 255 and not self._aborted and not self._transport_active():
            self._check_alive()
            raise ConnectionLost("the connection closed")
        return result

    def _run(self, command: Command, on_line: OnLine | None) -> CommandResult:
        if self.settings.shell_session and not self._aborted:
            session = self._session(command.prefix)
            # The session runs one command at a time: another thread (the lock's renewals on the lock
            # host) gets a channel of its own instead of waiting behind a long step, or behind commands
            # this thread sent ahead. The thread that sent them waits for its turn: they are in the shell.
            mine = session is not None and session.sent_ahead_here()
            if session is not None and session.busy.acquire(blocking=mine):
                try:
                    if not session.reserved_elsewhere():
                        return self._run_in_session(session, command, on_line)
                finally:
                    session.busy.release()
        return self._run_on_channel(command, on_line)

    def _run_in_session(self, session: ShellSession, command: Command, on_line: OnLine | None) -> CommandResult:
        # Pampa's own short commands (lock, revision log, uploads) are not killable: they need no process
        # group, and an upload's script must never become a process's argument (the sh form's `setsid`).
        tag = session.tag_for(command) if command.killable else None
        if tag:
            with self._lock:
                self._running.add(tag)
        try:
            result = session.run(command, on_line, tag, on_timeout=(lambda: self.stop_command(tag)) if tag else None)
        finally:
            with self._lock:
                self._running.discard(tag)
            if session.dead:
                with self._lock:
                    if self._sessions.get(command.prefix) is session:
                        del self._sessions[command.prefix]
        return result

    def _transport_active(self) -> bool:
        transport = self.connection.transport if self.connection is not None else None
        return bool(transport is not None and transport.is_active())

    def _check_alive(self) -> None:
        if self._silent:
            raise ConnectionLost("the host did not answer when the run was aborted")
        if self.heartbeat is not None and (self.heartbeat.dead or self.heartbeat.check()):
            raise HostUnresponsive(f"no answer to keepalives for {self.heartbeat.dead_after:g}s")
        if not self._transport_active() and not self._closing:
            raise ConnectionLost("the connection is closed")

    def _session(self, prefix: str | None) -> ShellSession | None:
        with self._opening:  # the lock host's preflight and its pipeline may both ask for it first
            session = self._sessions.get(prefix)
            if session is None and prefix not in self._broken:
                try:
                    session = ShellSession(self.connection.transport, prefix, self.settings.connect_timeout)
                    session.stopper = self.stop_command
                except SessionBroken:
                    # e.g. the prefix fails: each command then runs (and fails) on its own channel.
                    self._broken.add(prefix)
                    return None
                with self._lock:
                    self._sessions[prefix] = session
            return session

    def prepare(self) -> None:
        """Open the host's shell session now (a channel, a login shell waiting for commands; no prefix,
        nothing of the run), while the host waits for the run's lock: its first command then costs
        no channel round trip of its own."""
        if self.settings.shell_session and not self._aborted and self.connection is not None:
            try:
                self._session(None)
            except (paramiko.SSHException, EOFError, OSError):
                pass  # the first command meets the problem and reports it

    def _open_timeout(self) -> float:
        """How long a channel open may wait: the connect timeout, or the abort's short bound once aborted."""
        if self._aborted:
            return min(ABORT_OPEN_TIMEOUT, self.settings.connect_timeout)
        return self.settings.connect_timeout

    def _run_on_channel(self, command: Command, on_line: OnLine | None = None) -> CommandResult:
        command = record_first(self._run_on_channel, command, on_line)  # a channel of its own: no shell to fold it into
        channel = self.connection.transport.open_session(timeout=self._open_timeout())
        tag = procgroup.new_tag() if command.killable else None
        with self._lock:
            self._channel = channel
            if tag:
                self._running.add(tag)
        out = LineSplitter("stdout", command, on_line)
        err = LineSplitter("stderr", command, on_line)
        deadline = time.monotonic() + command.timeout if command.timeout else None
        waiter = ChannelWaiter(channel)
        try:
            line = procgroup.on_channel(command.line(), tag) if tag else command.line() + " </dev/null"
            channel.exec_command(line)
            while True:
                waiter.wait(1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
                while channel.recv_ready():
                    out.feed(channel.recv(65536))
                while channel.recv_stderr_ready():
                    err.feed(channel.recv_stderr(65536))
                if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                if channel.closed and not channel.exit_status_ready():
                    return CommandResult(255, out.text(), err.text() + "\n[pampa] channel closed (aborted)")
                if deadline is not None and time.monotonic() >= deadline:
                    stopped = self.stop_command(tag) if tag else "it was left running (not stoppable)"
                    return CommandResult(124, out.text(), err.text() + f"\n[pampa] timed out after "
                                         f"{command.timeout:g}s; {stopped}")
            return CommandResult(channel.recv_exit_status(), out.text(), err.text())
        finally:
            with self._lock:
                self._channel = None
                self._running.discard(tag)
            channel.close()

    # -- stopping ---------------------------------------------------------------------------
    def stop_command(self, tag: str, grace: float | None = None, open_timeout: float | None = None) -> str:
        """Stop one running command's whole process group over a fresh channel; says what happened."""
        grace = self.settings.stop_grace if grace is None else grace
        try:
            result = self._kill(tag, grace, open_timeout)
        except Exception as e:  # noqa: BLE001 - report it; the caller's own result stands
            return f"could not stop it on the host ({type(e).__name__}: {e})"
        return _stopped(result, grace)

    def _kill(self, tag: str, grace: float, open_timeout: float | None = None) -> CommandResult:
        """Run ``procgroup.kill_command`` on a fresh channel; raises when no channel opens in time."""
        return self._run_on_fresh_channel(procgroup.kill_command(tag, grace), timeout=grace + 15,
                                          open_timeout=open_timeout)

    def _run_on_fresh_channel(self, script: str, timeout: float, open_timeout: float | None = None) -> CommandResult:
        """A bookkeeping command on a channel of its own, bounded by ``timeout``; never a shell session."""
        channel = self.connection.transport.open_session(timeout=open_timeout or self.settings.connect_timeout)
        waiter = ChannelWaiter(channel)
        try:
            channel.settimeout(timeout)
            channel.exec_command(script)
            out = bytearray()
            deadline = time.monotonic() + timeout
            while not channel.exit_status_ready() or channel.recv_ready():
                if time.monotonic() >= deadline:
                    return CommandResult(124, out.decode("utf-8", "replace"), "timed out")
                waiter.wait(max(0.0, min(1.0, deadline - time.monotonic())))
                while channel.recv_ready():
                    out += channel.recv(65536)
                if channel.closed and not channel.exit_status_ready():
                    return CommandResult(255, out.decode("utf-8", "replace"), "channel closed")
            return CommandResult(channel.recv_exit_status(), out.decode("utf-8", "replace"))
        finally:
            channel.close()

    def put(self, upload: Upload) -> None:
        """A small file goes through the shell session (one command); others, or without a session, SFTP."""
        assert self.connection is not None, "connect() first"
        if self.settings.shell_session and not self._aborted and via_session.fits(upload.content):
            command = self._uploads.pop(upload, None) or self._session_upload(upload)
            result = self.run(command)
            if not result.ok:
                raise OSError(f"exit code {result.exit_code}: {result.stderr.strip()[-300:]}")
            return
        self._check_alive()
        try:
            if self._sftp is None:
                self._sftp = self.connection.client.open_sftp()
                self._sftp.get_channel().settimeout(SFTP_TIMEOUT)
            sftp_put(self._sftp, upload)
        except (paramiko.SSHException, EOFError, socket.timeout) as e:
            self._check_alive()
            raise ConnectionLost(f"upload to {upload.remote}: {type(e).__name__}: {e}") from e

    def _session_upload(self, upload: Upload) -> Command:
        return via_session.upload_command(upload.remote, upload.content, upload.mode, uuid.uuid4().hex[:8])

    # -- sending ahead ------------------------------------------------------------------------
    def send_ahead(self, items: list[tuple[Command | Upload, bool]]) -> None:
        """Send the host's shell session the commands the run will ask for next (and whether each begins
        a step), so they cost one round trip together; ``run`` and ``put`` then read their results.
        Only what goes through one session in a row: a file for SFTP or another prefix ends it."""
        if not self.settings.shell_session or self._aborted or self._holding:
            return
        entries: list[tuple[Command, bool]] = []
        uploads: dict[Upload, Command] = {}
        for item, begins_step in items:
            if isinstance(item, Upload):
                if not via_session.fits(item.content):
                    break
                uploads[item] = command = self._session_upload(item)
            else:
                command = item
            if entries and command.prefix != entries[0][0].prefix:
                break
            entries.append((command, begins_step))
        if len(entries) < 2:
            return  # one command costs one round trip either way
        session = self._session(entries[0][0].prefix)
        if session is None or session.reserved_elsewhere() or not session.busy.acquire(blocking=False):
            return
        try:
            session.send_ahead(entries)
            self._uploads.update(uploads)
        finally:
            session.busy.release()

    def sent_ahead(self) -> bool:
        """Are commands sent ahead still to be read (the host may be running them now)?"""
        with self._lock:
            sessions = list(self._sessions.values())
        return any(session.ahead and not session.dead for session in sessions)

    def hold(self) -> None:
        """The run is stopping (first Ctrl-C): no step sent ahead may start now. Writes each busy
        session's stop file over a fresh channel; the step the host is in goes on."""
        self._holding = True
        with self._lock:
            sessions = [s for s in self._sessions.values() if s.ahead and not s.dead]
        for session in sessions:
            try:
                self._run_on_fresh_channel(f": > {session.stop_file}", timeout=15.0,
                                           open_timeout=self._open_timeout())
            except Exception:  # noqa: BLE001 - a host that does not answer now is met by the abort
                pass

    def abort(self) -> None:
        """Stop what runs now: its process groups on the host (TERM, KILL after the grace), then its channels.

        ``abort_outcome`` says what that left on the host, before the channels close (which is what
        ends the host's step): a host that does not answer is marked silent, so its pipeline and the
        lock release fail at once instead of each waiting for it again.
        """
        with self._lock:
            self._aborted = True
            running = list(self._running)
        if running:
            self.abort_outcome = self._stop_all(running)
        with self._lock:
            channel = self._channel
            sessions = list(self._sessions.values())
        if channel is not None:
            channel.close()
        for session in sessions:  # never raise: called while the run is being torn down
            try:
                session.close()
            except Exception:  # noqa: BLE001
                pass

    def _stop_all(self, tags: list[str]) -> str:
        """Stop each running command; says what that left on the host."""
        if not (self._transport_active() and self._answering()):
            self._silent = True
            return NOT_ANSWERING
        said = []
        for tag in tags:
            try:
                result = self._kill(tag, self.settings.stop_grace, open_timeout=self._open_timeout())
            except Exception:  # noqa: BLE001 - no channel within the bound: the host does not answer
                self._silent = True
                return NOT_ANSWERING
            said.append(_stopped(result, self.settings.stop_grace))
        return "; ".join(dict.fromkeys(said))

    def close(self) -> None:
        self._closing = True
        if self.heartbeat is not None:
            self.heartbeat.stop()
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.close()
        if self._sftp is not None:
            self._sftp.close()
        if self.connection is not None:
            self.connection.close()


def _stopped(result: CommandResult, grace: float) -> str:
    """What ``procgroup.kill_command`` printed, in words."""
    said = result.stdout.strip().splitlines()[-1:] or [""]
    return {"PAMPA-STOP-NONE": "it had already ended on the host",
            "PAMPA-STOP-TERM": "its processes on the host were stopped (TERM)",
            "PAMPA-STOP-KILL": f"its processes on the host were killed (KILL after {grace:g}s)"}.get(
        said[0], f"stopping it on the host said: {result.stdout.strip() or result.stderr.strip()}")
