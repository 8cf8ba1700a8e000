"""Host key verification: known_hosts is enforced; trusting new keys is an explicit choice.

Fabric's ``Connection`` installs paramiko's AutoAddPolicy and never loads
known_hosts; ``secure`` replaces both on a connection and on its gateways.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import paramiko

_SAVE_LOCK = threading.Lock()


class UnknownHostKey(paramiko.SSHException):
    """The server's key is not in known_hosts and trusting new keys is off."""

    def __init__(self, hostname: str, key: paramiko.PKey, known_hosts: str):
        super().__init__(f"unknown host key for {hostname} ({key.get_name()} "
                         f"{key.fingerprint if hasattr(key, 'fingerprint') else ''})")
        self.hostname, self.key, self.known_hosts = hostname, key, known_hosts


class RejectUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: str):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(hostname, key, self.known_hosts)


class TrustOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Accept an unknown key and append it to known_hosts (a changed key is still refused by paramiko)."""

    def __init__(self, known_hosts: str):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        path = Path(self.known_hosts)
        with _SAVE_LOCK:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def secure(connection, known_hosts: str, accept_new: bool) -> None:
    """Load known_hosts into a Fabric connection (and each gateway hop) and set the key policy."""
    path = os.path.expanduser(known_hosts)
    hop = connection
    while hop is not None and not isinstance(hop, str):
        client = hop.client
        if os.path.exists(path):
            client.load_host_keys(path)
        client.set_missing_host_key_policy(TrustOnFirstUse(path) if accept_new else RejectUnknown(path))
        hop = hop.gateway
