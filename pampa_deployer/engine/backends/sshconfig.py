"""The stage's ``ssh`` section resolved for one run, and what a failed connect means in one clear line.

Apart from the backend (ssh.py) that uses them: the settings every host's connection shares (the
handshake throttle, the Fabric config), and ``classify``, which turns a connect exception into a
reason an operator can act on and says whether it is worth a retry.
"""
from __future__ import annotations

import os
import socket
import threading

import paramiko
from fabric import Config

from ...errors import ConfigError, ConnectError
from ...inventory.model import Host
from ...inventory.settings import SSHView, view
from .hostkeys import UnknownHostKey


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
        self.alive_interval = ssh.server_alive_interval
        self.alive_count_max = ssh.server_alive_count_max
        self.stop_grace = ssh.stop_grace
        # Bounded SSH handshakes in flight: hundreds at once overwhelm sshd's MaxStartups.
        self.handshakes = threading.BoundedSemaphore(max(1, ssh.max_startups))
        self.fabric_config: Config | None = None
        #: How the operator trusts an unknown key, in the words of the command in use (`fab` says it otherwise).
        self.accept_hint = "pass --accept-new-host-keys to trust it on first use"

    @classmethod
    def from_stage(cls, stage, accept_new: bool | None = None) -> "SSHSettings":
        named = stage.origins.get("ssh.config", "default")
        if stage.ssh.config and named != "default" and not os.path.isfile(os.path.expanduser(stage.ssh.config)):
            # Checked when connecting (like a key file), so `plan` works where the file is not: ignoring a
            # named file would silently drop its ProxyJump, User and Port.
            raise ConfigError(f"{named}: ssh.config: {stage.ssh.config} does not exist; create it, fix the path, "
                              "or leave `ssh.config` out to use ~/.ssh/config")
        known = stage.ssh.known_hosts
        if not os.path.isabs(os.path.expanduser(known)):
            known = str(stage.root.parent / known)  # relative paths are relative to the project folder
        return cls(stage.ssh, known_hosts=known, accept_new=accept_new)

    @property
    def dead_after(self) -> float:
        """Seconds of silence after which a host is unresponsive (interval x count)."""
        return self.alive_interval * self.alive_count_max


def fabric_config(settings: SSHSettings) -> Config:
    """One Fabric config per run: the stage's ssh_config file only (not /etc/ssh/ssh_config)."""
    if settings.fabric_config is None:
        if settings.ssh_config and os.path.exists(settings.ssh_config):
            settings.fabric_config = Config(runtime_ssh_path=settings.ssh_config)
        else:
            settings.fabric_config = Config(overrides={"load_ssh_configs": False})
    return settings.fabric_config


def classify(error: BaseException, host: Host, settings: SSHSettings, elapsed: float = 0.0) -> ConnectError:
    """Turn a connect exception into one clear reason: refused, timed out, auth failed, host key...

    ``elapsed`` (seconds the attempt took) tells a banner that never came (a frozen host, or a port
    that is not SSH: not worth a retry) from a connection closed before the banner (sshd shedding load).
    """
    where = f"{host.name} ({host.address}:{host.port})"
    if isinstance(error, UnknownHostKey):
        return ConnectError(f"{where}: unknown host key {error.key.get_name()}; verify it and add it to "
                            f"{settings.known_hosts}, or {settings.accept_hint}",
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
    text = str(error)
    if isinstance(error, paramiko.SSHException) and "protocol banner" in text:
        if elapsed >= 0.9 * settings.connect_timeout or "timed out" in text:
            return ConnectError(f"{where}: no SSH banner within {settings.connect_timeout:g}s (is this port an SSH "
                                "server? is the host frozen or overloaded?)", "no SSH banner")
        # The connection closed before the banner: sshd shedding load (MaxStartups); worth a retry.
        return ConnectError(f"{where}: no SSH banner (is this port an SSH server?): the connection closed",
                            "no SSH banner", retryable=True)
    if isinstance(error, paramiko.SSHException) and ("No existing session" in text or "Authentication timeout" in text):
        return ConnectError(f"{where}: unresponsive: no answer to the SSH handshake within "
                            f"{settings.connect_timeout:g}s (is this port an SSH server? is the host frozen or "
                            "overloaded?)", "unresponsive")
    if isinstance(error, paramiko.SSHException):
        # Banner/handshake errors happen when sshd sheds load (MaxStartups): worth a retry.
        return ConnectError(f"{where}: SSH handshake failed: {error}", "handshake failed", retryable=True)
    return ConnectError(f"{where}: {type(error).__name__}: {error}", "error")
