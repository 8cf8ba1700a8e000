"""argparse value types that say what is wrong in the words the stage file's validator uses.

``--parallel 0`` and ``parallel: 0`` give the same sentence: both read ``inventory.validate.RULES``.
"""
from __future__ import annotations

import argparse

from ..engine.scheduler import COUNT_WORDS, count_of
from ..inventory.validate import RULES


def _ruled(rule: str, convert):
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {RULES[rule][1]}, got {text!r}") from None
        if not RULES[rule][0](value):
            raise argparse.ArgumentTypeError(f"expected {RULES[rule][1]}, got {text}")
        return value

    parse.__name__ = rule  # argparse names the type in its own messages
    return parse


positive_int = _ruled("positive", int)
non_negative = _ruled("non_negative", float)
port = _ruled("port", int)


def count(text: str) -> str:
    """A number of hosts or a percentage of them (``--batch``, ``--max-fail``); resolved against the plan later."""
    try:
        count_of(text, 100)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {COUNT_WORDS}, got {text!r}") from None
    return text.strip()


def listen_port(text: str) -> int:
    """A port to listen on: 1 to 65535, or 0 for any free port."""
    return 0 if text.strip() == "0" else port(text)


def subnet(text: str) -> str:
    """Three octets of a loopback address, e.g. ``127.0.5``."""
    parts = text.strip().split(".")
    if len(parts) != 3 or parts[0] != "127" or not all(p.isdigit() and int(p) <= 255 for p in parts):
        raise argparse.ArgumentTypeError(f"expected three octets of a loopback address such as 127.0.5, got {text!r}")
    return ".".join(str(int(p)) for p in parts)


def since(text: str, now: float | None = None) -> float:
    """``--since``: a UTC date or time (``2026-11-26``, ``2026-11-26T14:00``, ``2026-11-26 14:00:05Z``) or an
    age (``30m``, ``12h``, ``7d``, ``2w``) -> Unix seconds."""
    import calendar
    import re
    import time
    value = text.strip()
    age = re.fullmatch(r"(\d{1,6})([mhdw])", value)
    if age:
        unit = {"m": 60, "h": 3600, "d": 86400, "w": 604800}[age.group(2)]
        return (time.time() if now is None else now) - int(age.group(1)) * unit
    value = value.rstrip("Z").replace(" ", "T")
    for form in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return float(calendar.timegm(time.strptime(value, form)))
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"expected a UTC date or time such as 2026-11-26 or 2026-11-26T14:00, "
                                     f"or an age such as 12h or 7d, got {text!r}")


since.__name__ = "since"


def history_count(text: str) -> int:
    """``-n``: how many deploys ``pampa history`` shows, 1 to 1000."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"expected a number of deploys from 1 to 1000, got {text!r}")
    return value
