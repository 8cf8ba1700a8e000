"""Who does something, from which machine, and when, in the words every record of it uses.

The lock, the revision log, the start record, hooks, unlocks and access point requests all
name the operator and a UTC time; they ask here, so each is spelled one way and a machine
without a passwd entry for its user (some containers) still deploys.
"""
from __future__ import annotations

import getpass
import socket
import time


def user(fallback: str = "unknown") -> str:
    """The operator's user name, or ``fallback`` where the system has none for this uid."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry and no USER/LOGNAME: getpass raises anything
        return fallback


def machine() -> str:
    return socket.gethostname()


def who() -> str:
    """``user@machine``: how requests and unlocks name who made them."""
    return f"{user()}@{machine()}"


def utc(at: float | None = None) -> str:
    """``2026-12-02T12:27:27Z``: the time ``at`` (default now), in UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
