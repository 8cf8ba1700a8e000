"""The validated inventory: frozen objects the planner reads and nothing mutates."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ..redact import Redactor
from ..sequences import GATE_ROLE
from .schema import TOP
from .settings import (
    AccessPointView,
    CheckView,
    HooksView,
    LockView,
    LogsView,
    NotifyView,
    RunsView,
    SSHView,
    UnitsView,
    view,
)


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


@dataclass(frozen=True)
class FileToPut:
    """A local file's bytes bound for a path on a host, with a mode."""

    source: str
    remote: str
    mode: int
    content: bytes = field(repr=False)


#: A secret file of the stage: its content read (and filled) locally before any SSH; ``remote`` as written.
SecretFile = FileToPut


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
    tasks: Mapping[str, Any] = field(default_factory=dict)  # steps written in Python (inventory/tasks.PyTask)

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
        """The host that holds the stage lock: the first gate-opening (kepler) host, or the first host."""
        for h in self.hosts:
            if GATE_ROLE in h.roles:
                return h
        return self.hosts[0]

    # Typed settings views, built once (a frozen dataclass keeps cached_property values in __dict__).
    @cached_property
    def ssh(self) -> SSHView:
        return view(self.settings, "ssh", SSHView)

    @cached_property
    def lock(self) -> LockView:
        return view(self.settings, "lock", LockView)

    @cached_property
    def access_point(self) -> AccessPointView:
        return view(self.settings, "access_point", AccessPointView)

    @cached_property
    def units(self) -> UnitsView:
        return view(self.settings, "units", UnitsView)

    @cached_property
    def check(self) -> CheckView:
        return view(self.settings, "check", CheckView)

    @cached_property
    def notify(self) -> NotifyView:
        return view(self.settings, "notify", NotifyView)

    @cached_property
    def hooks(self) -> HooksView:
        return view(self.settings, "hooks", HooksView)

    @cached_property
    def logs(self) -> LogsView:
        return view(self.settings, "logs", LogsView)

    @cached_property
    def runs(self) -> RunsView:
        return view(self.settings, "runs", RunsView)

    @property
    def parallel(self) -> int:
        return int(self.setting("parallel", TOP["parallel"].default))


def frozen(mapping: dict) -> Mapping:
    return MappingProxyType(mapping)
