"""The node token, read from its file, and read again when the file changes (a rotated token).

Issuing a new token for a node revokes the old one at once (docs/pull-mode.md), so an operator
rotating tokens writes the new one into the agent's token file. The agent notices the file's
change (its mtime, size or inode) before each poll and whenever the access point answers 401,
and goes on with the new token without a restart.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import ConfigError

#: Read the token from this variable instead of a file (no rotation then: the environment is fixed).
TOKEN_ENV = "PAMPA_AGENT_TOKEN"


def read_token(file: Path, stage: str, node: str) -> str:
    """The token in ``file``, which only its owner may read (like an SSH key); ConfigError otherwise."""
    try:
        mode = file.stat().st_mode
    except OSError:
        raise ConfigError(f"agent: token file {file} not found; create it with `pampa access-point token {stage} "
                          f"{node} --out DIR` on the developer's machine and copy it here (mode 0600)") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"agent: token file {file} is readable by others (mode {stat.S_IMODE(mode):04o}); "
                          f"run `chmod 600 {file}`")
    try:
        token = file.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"agent: token file {file} cannot be read: {e}") from None
    if not token:
        raise ConfigError(f"agent: token file {file} is empty")
    return token


class TokenFile:
    """The agent's current token; ``changed()`` re-reads the file when it changed (None: the same token)."""

    def __init__(self, path: Path | None, stage: str, node: str, token: str | None = None):
        self.path, self.stage, self.node = path, stage, node
        self._seen = self._signature()
        self.token = token if token is not None else read_token(path, stage, node)

    def _signature(self) -> tuple | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def changed(self, force: bool = False) -> str | None:
        """The new token if the file now holds another one (checked when its signature changed, or
        ``force``, e.g. after a 401); None otherwise. ConfigError if the file became unusable."""
        if self.path is None:
            return None
        now = self._signature()
        if now == self._seen and not force:
            return None
        token = read_token(self.path, self.stage, self.node)
        self._seen = now
        if token == self.token:
            return None
        self.token = token
        return token
