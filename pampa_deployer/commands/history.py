"""``pampa history``: reading a host's revision log and start record, and checking every line of it.

A revision-log line is one run on one host (commands/revlog.py): when it ended and (since issue 23)
when it started, the kind, branch, revisions before and after, who, the result and step, the run id
and the ``-m`` message. The newest N runs of a fleet are always within each host's last N lines
(each run writes at most one line per host), so ``-n N`` reads ``tail -n N`` and no more.

Every field is validated and made printable here: a log line is text anyone with a shell on the host
could have written.
"""
from __future__ import annotations

import calendar
import json
import time

from ..shell import quote
from .command import Command
from .pending import REVISION
from .untrusted import printable

STATE_MARK = "--pampa-state--"
#: Bytes of one log line read (a longer line is cut, so unreadable, and counted as such).
LINE_BYTES = 16384
#: The kinds of run a log line may name; anything else is shown as "?".
KINDS = ("deploy", "rollback", "run")
RESULTS = ("ok", "failed", "interrupted")


def read(log: str, state: str, lines: int) -> Command:
    """The last ``lines`` lines of the revision log, then the start record (empty unless a run is on)."""
    script = (f"tail -n {int(lines)} {quote(log)} 2>/dev/null | cut -c 1-{LINE_BYTES}; echo {STATE_MARK}; "
              f"head -c {LINE_BYTES} {quote(state)} 2>/dev/null || true")
    return Command(script=script, timeout=30, killable=False)


def stamp(text: object) -> float | None:
    """``2026-11-26T14:35:05Z`` -> Unix seconds; anything else -> None."""
    if not isinstance(text, str) or len(text) != 20:
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def entry(raw: object) -> dict | None:
    """One log line's object, with only known fields, each validated; None when it is not a log line."""
    if not isinstance(raw, dict):
        return None
    ended = stamp(raw.get("time"))
    if ended is None:
        return None
    roles = raw.get("roles")
    return {
        "ended": ended,
        "started": stamp(raw.get("started")),
        "stage": _word(raw.get("stage")),
        "kind": raw.get("kind") if raw.get("kind") in KINDS else "?",
        "branch": _word(raw.get("branch")),
        "before": revision(raw.get("before")),
        "after": revision(raw.get("after")),
        "user": _word(raw.get("user")),
        "result": raw.get("result") if raw.get("result") in RESULTS else "?",
        "step": _word(raw.get("step")),
        "run": _word(raw.get("run")),
        "message": printable(raw["message"]) if isinstance(raw.get("message"), str) else None,
        "roles": [printable(r, 50) for r in roles[:10] if isinstance(r, str)] if isinstance(roles, list) else None,
    }


def record(raw: object) -> dict | None:
    """The start record (a run that began on the host and has not written its line), validated."""
    if not isinstance(raw, dict):
        return None
    return {"run": _word(raw.get("run")), "stage": _word(raw.get("stage")),
            "kind": raw.get("kind") if raw.get("kind") in KINDS else "?", "branch": _word(raw.get("branch")),
            "user": _word(raw.get("user")), "started": stamp(raw.get("started")), "step": _word(raw.get("step"))}


def parse(text: str) -> tuple[list[dict], dict | None, int]:
    """Output of ``read`` -> (entries oldest first, the start record or None, lines that were not entries)."""
    log_part, _, state_part = text.partition(STATE_MARK)
    entries, unreadable = [], 0
    for line in log_part.splitlines():
        if not line.strip():
            continue
        try:
            found = entry(json.loads(line))
        except ValueError:
            found = None
        if found is None:
            unreadable += 1
        else:
            entries.append(found)
    state = None
    raw = state_part.strip()
    if raw:
        try:
            state = record(json.loads(raw.splitlines()[-1]))
        except ValueError:
            state = {"run": None, "stage": None, "kind": "?", "branch": None, "user": None, "started": None,
                     "step": None}  # unreadable, but present: a run started there and never finished
    return entries, state, unreadable


def _word(value: object) -> str | None:
    return printable(value, 100) if isinstance(value, str) and value else None


def revision(value: object) -> str | None:
    """``value`` if it is a full commit id, else None."""
    return value if isinstance(value, str) and REVISION.fullmatch(value) else None
