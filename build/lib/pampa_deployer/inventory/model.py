"""The validated inventory: frozen objects the planner reads and nothing mutates."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ..redact import Redactor


@dataclass(frozen=True)
class Host:
    """One server of a stage, with its settings already merged (stage < host < command line)."""

    name: str
    address: str
    roles: tuple[str, ...]
    port: int
    user: str | None
    key: str | None
    path: str
    branch: str
    prefix: str | None
    vars: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def role_label(self) -> str:
        return ",".join(self.roles)


@dataclass(frozen=True)
class SecretFile:
    """A secret file's content, read (and filled) locally before any SSH."""

    source: str
    remote: str
    mode: int
    content: bytes = field(repr=False)


@dataclass(frozen=True)
class Role:
    name: str
    gated: bool
    sequence: tuple[str, ...]


@dataclass(frozen=True)
class Stage:
    """A fully loaded, validated stage."""

    name: str
    file: str
    root: Path
    settings: Mapping[str, Any]
    origins: Mapping[str, str]
    hosts: tuple[Host, ...]
    roles: Mapping[str, Role]
    secret_files: tuple[SecretFile, ...]
    redactor: Redactor

    def setting(self, dotted: str, default: Any = None) -> Any:
        """Read a merged setting by dotted path, e.g. ``ssh.known_hosts``."""
        node: Any = self.settings
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    @property
    def lock_host(self) -> Host:
        """The host that holds the stage lock: the first kepler, or the first host."""
        for h in self.hosts:
            if "kepler" in h.roles:
                return h
        return self.hosts[0]


def frozen(mapping: dict) -> Mapping:
    return MappingProxyType(mapping)
