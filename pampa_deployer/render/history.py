"""``pampa history`` shown: one row a deploy (a rich table at a terminal, aligned columns elsewhere), or JSON."""
from __future__ import annotations

import time

from .. import provenance
from ..engine.history import Deploy
from .words import count

COLUMNS = ("when", "kind", "who", "branch", "revision", "result", "hosts", "took", "message")


def _iso(at: float | None) -> str | None:
    return None if at is None else provenance.utc(at)


def _when(at: float | None) -> str:
    return "-" if not at else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))


def kind(d: Deploy) -> str:
    if d.request is not None:
        what = d.request.get("kind") or "deploy"
        return f"request {d.request['id']}" + ("" if what == "deploy" else f" ({what})")
    return d.kind


def hosts(d: Deploy) -> str:
    """``ok: kepler 2/2, newton 1/2``: per role, the hosts that ended ok of those the run touched."""
    parts = []
    for role, results in sorted(d.by_role().items()):
        total = sum(results.values())
        parts.append(f"{role} {results.get('ok', 0)}/{total}")
    return "ok: " + ", ".join(parts) if parts else "-"


def result(d: Deploy) -> str:
    """The run's result, and the hosts that did not end ok with where they stopped."""
    bad = [f"{name} {line.result}" + (f" at {line.step}" if line.step else "")
           for name, line in sorted(d.hosts.items()) if line.result != "ok"]
    shown = d.result if not bad else f"{d.result}: {', '.join(bad[:5])}" + (" ..." if len(bad) > 5 else "")
    return shown


def took(d: Deploy) -> str:
    seconds = d.duration
    if seconds is None:
        return "-"
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"  # the logs count whole seconds


def row(d: Deploy) -> list[str]:
    return [_when(d.when), kind(d), d.user or "?", d.branch or "?", (d.revision or "-")[:12], result(d),
            hosts(d), took(d), d.message or ""]


def title(stage: str, shown: int, read: int, total: int) -> str:
    return (f"history of {stage}: {count(shown, 'deploy')}, newest first "
            f"({read} of {count(total, 'host')} read)")


def to_dict(d: Deploy) -> dict:
    return {"run": d.run, "kind": d.kind, "request": d.request, "started": _iso(d.started), "ended": _iso(d.ended),
            "duration": None if d.duration is None else round(d.duration, 1), "user": d.user, "branch": d.branch,
            "revision": d.revision, "message": d.message, "result": d.result,
            "roles": {role: dict(results) for role, results in sorted(d.by_role().items())},
            "hosts": {name: {"result": line.result, "step": line.step, "revision": line.after,
                             "roles": list(line.roles)} for name, line in sorted(d.hosts.items())}}
