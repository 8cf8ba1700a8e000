"""Which gems a change of ``Gemfile.lock`` adds, removes or updates, read from a zero-context diff.

In a lockfile the resolved gems are the lines indented by exactly four spaces under a ``specs:``
(``    rack (2.2.8)``, or ``    nokogiri (1.16.0-x86_64-linux)`` for a platform build); their own
dependencies are indented by six, ``DEPENDENCIES`` and ``PLATFORMS`` by two, and the bundler
version under ``BUNDLED WITH`` by three. ``git diff --unified=0`` of the file gives exactly the
changed lines, so the answer needs neither whole file: a few lines even for a large application.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .untrusted import printable

_SPEC = re.compile(r"^    ([A-Za-z0-9][A-Za-z0-9_.\-]{0,99}) \(([0-9A-Za-z][0-9A-Za-z._+\-]{0,99})\)$")
_BUNDLER = re.compile(r"^   (\d[0-9A-Za-z.\-]{0,40})$")


@dataclass(frozen=True)
class LockChange:
    """What a ``Gemfile.lock`` change does to the gems; versions are joined when a gem has several builds."""

    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    updated: dict[str, tuple[str, str]] = field(default_factory=dict)
    bundler: tuple[str, str] | None = None
    truncated: bool = False  # the diff was cut at its bound: the lists may miss gems

    def describe(self) -> str:
        """``updated rack 2.2.6 -> 2.2.8; added sinatra 3.1.0; removed json 2.6.1`` (or what else changed)."""
        parts = []
        if self.updated:
            parts.append("updated " + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in sorted(self.updated.items())))
        if self.added:
            parts.append("added " + ", ".join(f"{n} {v}" for n, v in sorted(self.added.items())))
        if self.removed:
            parts.append("removed " + ", ".join(f"{n} {v}" for n, v in sorted(self.removed.items())))
        if self.bundler:
            parts.append(f"bundler {self.bundler[0] or '-'} -> {self.bundler[1] or '-'}")
        text = "; ".join(parts) or "changed, no gem version changes (dependencies, platforms or sources)"
        return text + ("; (more changes not read)" if self.truncated else "")

    def to_dict(self) -> dict:
        return {"added": dict(sorted(self.added.items())), "removed": dict(sorted(self.removed.items())),
                "updated": {n: list(v) for n, v in sorted(self.updated.items())},
                "bundler": list(self.bundler) if self.bundler else None, "truncated": self.truncated}


def parse_diff(lines: list[str], truncated: bool = False) -> LockChange:
    """``git diff --unified=0 A B -- Gemfile.lock`` (its lines) -> the gems' changes."""
    old: dict[str, set[str]] = {}
    new: dict[str, set[str]] = {}
    bundler = ["", ""]
    for line in lines:
        if line.startswith(("---", "+++")) or line[:1] not in ("-", "+"):
            continue  # file headers, hunk headers, "\ No newline at end of file"
        side, body = (old, 0) if line[0] == "-" else (new, 1), line[1:]
        spec = _SPEC.match(body)
        if spec:
            side[0].setdefault(spec.group(1), set()).add(spec.group(2))
            continue
        version = _BUNDLER.match(body)
        if version:
            bundler[side[1]] = version.group(1)
    added = {n: _versions(v) for n, v in new.items() if n not in old}
    removed = {n: _versions(v) for n, v in old.items() if n not in new}
    updated = {n: (_versions(old[n]), _versions(new[n])) for n in old.keys() & new.keys() if old[n] != new[n]}
    return LockChange(added=added, removed=removed, updated=updated,
                      bundler=tuple(bundler) if any(bundler) and bundler[0] != bundler[1] else None,
                      truncated=truncated)


def _versions(versions: set[str]) -> str:
    return printable(", ".join(sorted(versions)), 200)
