"""Typed views of a stage's settings sections, built once from the merged settings and the schema.

Code reads ``stage.ssh.connect_timeout`` rather than ``stage.setting("ssh.connect_timeout") or 10``:
a default lives only in ``inventory/schema.py``, and a view's fields are the schema's keys (a test
checks both agree), so the two cannot drift.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from . import schema


@dataclass(frozen=True)
class SSHView:
    known_hosts: str
    accept_new_host_keys: bool
    config: str | None
    connect_timeout: float
    connect_retries: int
    max_startups: int
    server_alive_interval: float
    server_alive_count_max: int
    stop_grace: float
    shell_session: bool


@dataclass(frozen=True)
class LockView:
    lease: float
    path: str


@dataclass(frozen=True)
class AccessPointView:
    url: str | None
    api_key: str | None
    timeout: float
    optional: bool
    report_retry: float
    report_required: bool


@dataclass(frozen=True)
class UnitsView:
    puma: list
    processes: list
    workers: list
    restart: str
    puma_restart: str
    pid_file: str | None
    puma_state: str
    reload: str
    stop: str | None
    stop_timeout: float
    restart_timeout: float


@dataclass(frozen=True)
class CheckView:
    min_free_mb: int


@dataclass(frozen=True)
class NotifyView:
    webhooks: list
    timeout: float


@dataclass(frozen=True)
class HooksView:
    timeout: float


@dataclass(frozen=True)
class LogsView:
    files: list | None


@dataclass(frozen=True)
class RunsView:
    keep: int


#: Section -> its view; ``Stage`` has one property per section (a test checks fields against the schema).
VIEWS = {"ssh": SSHView, "lock": LockView, "access_point": AccessPointView, "units": UnitsView,
         "check": CheckView, "notify": NotifyView, "hooks": HooksView, "logs": LogsView, "runs": RunsView}

_CASTS = {"int": int, "number": float, "bool": bool, "str": str}


def view(settings: Mapping[str, Any], section: str, cls):
    """``cls`` filled from ``settings[section]``, missing keys taking the schema's default."""
    keys = schema.TOP[section].children
    given = settings.get(section) or {}
    values = {}
    for f in fields(cls):
        value = given.get(f.name, keys[f.name].default)
        cast = _CASTS.get(keys[f.name].type)
        values[f.name] = cast(value) if value is not None and cast is not None else value
    return cls(**values)
