"""Host key verification: known_hosts is enforced; trusting new keys is an explicit choice.

Fabric's ``Connection`` installs paramiko's AutoAddPolicy and never loads
known_hosts; ``secure`` replaces that on a connection and on its gateways.

known_hosts is parsed once per run (``KnownHosts``) and checked by a policy:
paramiko's own ``load_host_keys`` re-parses the file for every client and matches
names linearly, which at hundreds of hosts cost more CPU than the deploy itself.
Since no keys are loaded into the client, paramiko hands every server key to the
policy, which accepts a known key, refuses a changed one, and refuses (or, with
trust-on-first-use, saves) an unknown one.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import threading
from base64 import b64decode
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry


class UnknownHostKey(paramiko.SSHException):
    """The server's key is not in known_hosts and trusting new keys is off."""

    def __init__(self, hostname: str, key: paramiko.PKey, known_hosts: str):
        super().__init__(f"unknown host key for {hostname} ({key.get_name()})")
        self.hostname, self.key, self.known_hosts = hostname, key, known_hosts


class KnownHosts:
    """One known_hosts file, parsed once; plain names are a dict lookup, hashed names a short scan."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._plain: dict[str, dict[str, str]] = {}
        self._hashed: list[tuple[bytes, bytes, str, str]] = []  # (salt, digest, key type, base64)
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    self._index_line(line)

    def _index_line(self, line: str) -> None:
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("@"):
            return  # @cert-authority / @revoked markers are not supported: such lines are ignored
        parts = line.split()
        if len(parts) < 3:
            return
        names, key_type, key_b64 = parts[0], parts[1], parts[2]
        for name in names.split(","):
            if name.startswith("|1|"):
                try:
                    _, _, salt, digest = name.split("|")
                    self._hashed.append((b64decode(salt), b64decode(digest), key_type, key_b64))
                except ValueError:
                    continue
            else:
                self._plain.setdefault(name, {})[key_type] = key_b64

    def lookup(self, hostname: str) -> dict[str, str]:
        """Key type -> base64 key for ``hostname`` (as paramiko names it: ``[host]:port`` off port 22)."""
        found = dict(self._plain.get(hostname, {}))
        for salt, digest, key_type, key_b64 in self._hashed:
            if hmac.compare_digest(hmac.new(salt, hostname.encode(), hashlib.sha1).digest(), digest):
                found.setdefault(key_type, key_b64)
        return found

    def add(self, hostname: str, key: paramiko.PKey) -> None:
        with self._lock:
            entry = HostKeyEntry([hostname], key).to_line()
            path = Path(self.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(entry)
            self._index_line(entry)


class VerifyKnownHosts(paramiko.MissingHostKeyPolicy):
    """Accept a key known_hosts has; refuse a changed one always; an unknown one unless ``accept_new``."""

    def __init__(self, known: KnownHosts, accept_new: bool):
        self.known, self.accept_new = known, accept_new

    def missing_host_key(self, client, hostname, key):
        keys = self.known.lookup(hostname)
        if not keys:
            if self.accept_new:
                self.known.add(hostname, key)
                return
            raise UnknownHostKey(hostname, key, self.known.path)
        expected = keys.get(key.get_name())
        if expected is None:
            # Known under another key type: treat as changed, like a mismatch (never silently accept).
            other_type, other = next(iter(keys.items()))
            raise paramiko.BadHostKeyException(hostname, key, paramiko.PKey.from_type_string(
                other_type, b64decode(other)))
        if not hmac.compare_digest(expected, key.get_base64()):
            raise paramiko.BadHostKeyException(hostname, key, paramiko.PKey.from_type_string(
                key.get_name(), b64decode(expected)))


_CACHE: dict[str, KnownHosts] = {}
_CACHE_LOCK = threading.Lock()


def known_hosts(path: str) -> KnownHosts:
    """The parsed file, shared by every connection of this process."""
    path = os.path.expanduser(path)
    with _CACHE_LOCK:
        if path not in _CACHE:
            _CACHE[path] = KnownHosts(path)
        return _CACHE[path]


def secure(connection, known_hosts_path: str, accept_new: bool) -> None:
    """Verify host keys against known_hosts on a Fabric connection and on each gateway hop."""
    policy = VerifyKnownHosts(known_hosts(known_hosts_path), accept_new)
    hop = connection
    while hop is not None and not isinstance(hop, str):
        hop.client.set_missing_host_key_policy(policy)
        hop = hop.gateway
