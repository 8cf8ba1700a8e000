"""The SSH backend: one Fabric connection per host, kept for the whole run.

Fabric resolves ssh_config (User, Port, IdentityFile, ProxyJump) and opens the
connection; commands then run on raw paramiko channels read with ``select``,
which avoids invoke's sleep-polling runner. TCP_NODELAY is set on the socket:
paramiko leaves Nagle's algorithm on, which adds tens of ms per command.
"""
from __future__ import annotations

import os
import posixpath
import select
import socket
import threading
import time
import uuid

import paramiko
from fabric import Config, Connection

from ..commands.command import Command
from ..errors import ConnectError
from ..inventory.model import Host
from ..inventory.settings import SSHView, view
from ..steps.actions import Upload
from .backend import LineSplitter, OnLine
from .hostkeys import UnknownHostKey, secure
from .results import CommandResult
from .session import SessionBroken, ShellSession


class SSHSettings:
    """The stage's ``ssh`` section (``Stage.ssh``), resolved once per run; defaults come from the schema."""

    def __init__(self, ssh: SSHView | None = None, known_hosts: str | None = None, accept_new: bool | None = None):
        ssh = ssh or view({}, "ssh", SSHView)
        self.known_hosts = os.path.expanduser(known_hosts or ssh.known_hosts)
        self.accept_new = ssh.accept_new_host_keys if accept_new is None else accept_new
        self.ssh_config = os.path.expanduser(ssh.config) if ssh.config else None
        self.connect_timeout = ssh.connect_timeout
        self.retries = ssh.connect_retries
        self.shell_session = ssh.shell_session
        # Bounded SSH handshakes in flight: hundreds at once overwhelm sshd's MaxStartups.
        self.handshakes = threading.BoundedSemaphore(max(1, ssh.max_startups))
        self.fabric_config: Config | None = None

    @classmethod
    def from_stage(cls, stage, accept_new: bool | None = None) -> "SSHSettings":
        known = stage.ssh.known_hosts
        if not os.path.isabs(os.path.expanduser(known)):
            known = str(stage.root.parent / known)  # relative paths are relative to the project folder
        return cls(stage.ssh, known_hosts=known, accept_new=accept_new)


def _fabric_config(settings: SSHSettings) -> Config:
    """One Fabric config per run: the stage's ssh_config file only (not /etc/ssh/ssh_config)."""
    if settings.fabric_config is None:
        if settings.ssh_config and os.path.exists(settings.ssh_config):
            settings.fabric_config = Config(runtime_ssh_path=settings.ssh_config)
        else:
            settings.fabric_config = Config(overrides={"load_ssh_configs": False})
    return settings.fabric_config


def classify(error: BaseException, host: Host, settings: SSHSettings) -> ConnectError:
    """Turn a connect exception into one clear reason: refused, timed out, auth failed, host key..."""
    where = f"{host.name} ({host.address}:{host.port})"
    if isinstance(error, UnknownHostKey):
        return ConnectError(f"{where}: unknown host key {error.key.get_name()}; verify it and add it to "
                            f"{settings.known_hosts}, or pass --accept-new-host-keys to trust it on first use",
                            "unknown host key")
    if isinstance(error, paramiko.BadHostKeyException):
        return ConnectError(f"{where}: HOST KEY CHANGED ({error.key.get_name()}): the key differs from "
                            f"{settings.known_hosts}; this may be an attack. Refusing to connect. If the host was "
                            "really rebuilt, remove its old line from known_hosts", "host key mismatch")
    if isinstance(error, paramiko.AuthenticationException):
        return ConnectError(f"{where}: authentication failed for user {host.user or os.environ.get('USER', '?')}; "
                            "check `user` and `key` for this host", "auth failed")
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError) or isinstance(error, ConnectionRefusedError):
        return ConnectError(f"{where}: connection refused; is sshd running and is the port right?",
                            "refused", retryable=True)
    if isinstance(error, (socket.timeout, TimeoutError)):
        return ConnectError(f"{where}: connection timed out after {settings.connect_timeout:g}s",
                            "timed out", retryable=True)
    if isinstance(error, socket.gaierror):
        return ConnectError(f"{where}: cannot resolve address '{host.address}'", "name not resolved")
    if isinstance(error, OSError):
        return ConnectError(f"{where}: {error.strerror or error}", "network error", retryable=True)
    if isinstance(error, paramiko.SSHException):
        # Banner/handshake errors happen when sshd sheds load (MaxStartups): worth a retry.
        return ConnectError(f"{where}: SSH handshake failed: {error}", "handshake failed", retryable=True)
    return ConnectError(f"{where}: {type(error).__name__}: {error}", "error")


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
    """Runs one host's commands over one SSH connection."""

    def __init__(self, host: Host, settings: SSHSettings):
        self.host = host
        self.name = host.name
        self.settings = settings
        self.connection: Connection | None = None
        self._channel: paramiko.Channel | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()
        self._sessions: dict[str | None, ShellSession] = {}
        self._broken: set[str | None] = set()
        self._aborted = False

    # -- connecting -------------------------------------------------------------------------
    def _new_connection(self) -> Connection:
        host, settings = self.host, self.settings
        kwargs = {}
        if host.key:
            kwargs["key_filename"] = [os.path.expanduser(host.key)]
        conn = Connection(host.address, user=host.user or None, port=host.port,
                          config=_fabric_config(settings), connect_timeout=int(settings.connect_timeout),
                          connect_kwargs=kwargs)
        secure(conn, settings.known_hosts, settings.accept_new)
        return conn

    def connect(self) -> None:
        """Open the connection, throttled and retried with back-off for transient failures."""
        attempt = 0
        while True:
            conn = self._new_connection()
            try:
                with self.settings.handshakes:
                    conn.open()
                sock = conn.transport.sock
                if isinstance(sock, socket.socket):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.transport.set_keepalive(15)
                self.connection = conn
                return
            except Exception as e:  # noqa: BLE001 - classified below, nothing is swallowed
                conn.close()
                error = classify(e, self.host, self.settings)
                if not error.retryable or attempt >= self.settings.retries:
                    raise error from e
                attempt += 1
                time.sleep(min(0.25 * 2 ** attempt, 4.0))

    # -- running ----------------------------------------------------------------------------
    def run(self, command: Command, on_line: OnLine | None = None) -> CommandResult:
        """Run on the host's shell session (the default), or on a channel of its own."""
        assert self.connection is not None, "connect() first"
        if self.settings.shell_session and not self._aborted:
            session = self._session(command.prefix)
            if session is not None:
                result = session.run(command, on_line)
                if session.dead:
                    with self._lock:
                        if self._sessions.get(command.prefix) is session:
                            del self._sessions[command.prefix]
                return result
        return self._run_on_channel(command, on_line)

    def _session(self, prefix: str | None) -> ShellSession | None:
        session = self._sessions.get(prefix)
        if session is None and prefix not in self._broken:
            try:
                session = ShellSession(self.connection.transport, prefix)
            except (SessionBroken, paramiko.SSHException):
                # e.g. the prefix fails: each command then runs (and fails) on its own channel.
                self._broken.add(prefix)
                return None
            with self._lock:
                self._sessions[prefix] = session
        return session

    def _run_on_channel(self, command: Command, on_line: OnLine | None = None) -> CommandResult:
        channel = self.connection.transport.open_session()
        with self._lock:
            self._channel = channel
        out = LineSplitter("stdout", command, on_line)
        err = LineSplitter("stderr", command, on_line)
        deadline = time.monotonic() + command.timeout if command.timeout else None
        try:
            channel.exec_command(command.line())
            while True:
                wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
                select.select([channel], [], [], wait)
                while channel.recv_ready():
                    out.feed(channel.recv(65536))
                while channel.recv_stderr_ready():
                    err.feed(channel.recv_stderr(65536))
                if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                if channel.closed and not channel.exit_status_ready():
                    return CommandResult(255, out.text(), err.text() + "\n[pampa] channel closed (aborted)")
                if deadline is not None and time.monotonic() >= deadline:
                    return CommandResult(124, out.text(),
                                         err.text() + f"\n[pampa] timed out after {command.timeout:g}s")
            return CommandResult(channel.recv_exit_status(), out.text(), err.text())
        finally:
            with self._lock:
                self._channel = None
            channel.close()

    def put(self, upload: Upload) -> None:
        assert self.connection is not None, "connect() first"
        if self._sftp is None:
            self._sftp = self.connection.client.open_sftp()
        sftp_put(self._sftp, upload)

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            if self._channel is not None:
                self._channel.close()
            sessions = list(self._sessions.values())
        for session in sessions:  # called from a signal handler: never raise
            try:
                session.close()
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.close()
        if self._sftp is not None:
            self._sftp.close()
        if self.connection is not None:
            self.connection.close()
