"""What the store accepts from a request body: names, texts, booleans, ids; every refusal an ``ApiError``.

The JSON door (``door.py``) already refused what no route takes (non-finite or huge numbers, NUL,
lone surrogates); these checks are per field, so a refusal names the field. A progress event's fields
are the protocol's wire codec's (``accesspoint/wire.py``), shared with the agent and the follower.
"""
from __future__ import annotations

import re

from ..accesspoint.wire import MAX_LINE, MAX_NAME, MAX_NODES  # noqa: F401 - the protocol's bounds, named once

MAX_ID = 2 ** 62          # the largest request id (ids are 64-bit integers in both databases)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ApiError(Exception):
    """A request the server refuses with ``status`` and a one-line reason (``extra`` joins the answer)."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def name(body: dict, key: str, required: bool = True) -> str | None:
    """A stage, node or role name: 1 to 128 characters, no '/', no control characters."""
    value = body.get(key)
    if value is None and not required:
        return None
    if not is_name(value):
        raise ApiError(400, f"'{key}' is required: a name of 1 to {MAX_NAME} characters without '/' "
                            "or control characters")
    return value


def is_name(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME and "/" not in value \
        and not _CONTROL.search(value)


def plain(value, key: str, limit: int = 255) -> str:
    """A required one-line value (a branch name): 1 to ``limit`` characters, no control characters."""
    if not isinstance(value, str) or not 0 < len(value) <= limit or _CONTROL.search(value):
        raise ApiError(400, f"'{key}' is required: 1 to {limit} characters without control characters")
    return value


def text(value, limit: int = MAX_LINE) -> str:
    """A free text field, cut to ``limit`` characters (``None`` is empty)."""
    return str(value if value is not None else "")[:limit]


def flag(body: dict, key: str) -> bool:
    """A JSON boolean (absent is false): ``"false"`` or ``0`` is refused, never read as true."""
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"'{key}' must be true or false (a JSON boolean), not {type(value).__name__}")
    return value


def integer(value, key: str) -> int | None:
    """An optional id: a JSON integer (never a boolean) from 0 to 2^62."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise ApiError(400, f"'{key}' must be an integer from 0 to {MAX_ID}")
    return value


def roles(value, key: str = "roles") -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 32 or not all(is_name(r) for r in value):
        raise ApiError(400, f"'{key}' must be a list of at most 32 role names")
    return value
