"""The JSON door: what no route of the access point takes is refused here, before any route sees it.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``1e400`` (as infinity) and keeps lone surrogates
(``"\\ud800"``) in strings; a database or a follower's terminal then fails on them later, far from the
request that brought them. So a body is refused with 400 when it holds a number that is not finite or
beyond ±2^53 (the integers JSON carries exactly; a time of 1e300 is no time), a string (or key) with
a NUL or a lone surrogate, or is not an object. Names in the path and the query get the same string check.
"""
from __future__ import annotations

import json
import math
import re

from .checks import ApiError

#: The largest magnitude a number may have: JSON's exact integers (and far beyond any time or count).
LIMIT = 2 ** 53
_BAD = re.compile("[\x00\ud800-\udfff]")


def _constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value) or abs(value) > LIMIT:
        raise ValueError(f"number {literal[:30]} is out of range")
    return value


def _int(literal: str) -> int:
    if len(literal) > 17:
        raise ValueError(f"number {literal[:30]} is out of range")
    value = int(literal)
    if abs(value) > LIMIT:
        raise ValueError(f"number {literal} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_float=_float, parse_int=_int, parse_constant=_constant)


def parse(raw: bytes) -> dict:
    """The body as a JSON object, or ApiError(400) saying what is wrong with it."""
    if not raw:
        return {}
    try:
        text = raw.decode("utf-8")
        body = _DECODER.decode(text)
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8") from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply") from None
    except ValueError as e:
        why = str(e) if "out of range" in str(e) or "not a number" in str(e) else "it is not valid JSON"
        raise ApiError(400, f"the body was refused: {why}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    check_strings(body)
    return body


def check_strings(body) -> None:
    """Every string and key, however deep: no NUL, no lone surrogate (iterative: depth costs no stack)."""
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _BAD.search(item):
                raise ApiError(400, "the body was refused: a string holds a NUL or a lone surrogate (not valid text)")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def check_text(value: str, what: str) -> str:
    """A name from the path or the query: the same refusal as a body's strings."""
    if _BAD.search(value):
        raise ApiError(400, f"{what} holds a NUL or a lone surrogate (not valid text)")
    return value
