"""Read-only queries on a host's releases (releases strategy): rollback target, status, verification.

A release that was ever live carries ``LIVE_MARK``; names sort by time, so "previous" is the newest
live release older than ``current``. The shell snippets here are shared with the builders in
``steps/releases.py``, which switch and prune.
"""
from __future__ import annotations

from ..shell import quote
from .command import Command

LIVE_MARK = ".pampa-live"

#: Sets ``prev`` to the newest live release older than ``cur`` (run in the releases root).
PREVIOUS = ("prev=; seen=; for r in $(ls -1 releases 2>/dev/null | sort -r); do "
            f"if [ -n \"$seen\" ] && [ -e \"releases/$r/{LIVE_MARK}\" ]; then prev=$r; break; fi; "
            "if [ \"$r\" = \"$cur\" ]; then seen=1; fi; done")


def find_live(revision: str) -> str:
    """Shell snippet: sets ``t`` to the newest release that was live at ``revision`` (intact, bundled)."""
    return ("t=; for r in $(ls -1 releases 2>/dev/null | sort -r); do "
            f"if [ -e \"releases/$r/{LIVE_MARK}\" ] && [ \"$(cat \"releases/$r/REVISION\" 2>/dev/null)\" = {quote(revision)} ]; "
            "then t=releases/$r; break; fi; done")


def current_and_previous(root: str) -> Command:
    """Two lines, ``NAME REVISION`` of the current release then of the previous one (``-`` if none)."""
    script = ("{ cur=$(basename \"$(readlink current)\" 2>/dev/null); " + PREVIOUS
              + "; for r in \"$cur\" \"$prev\"; do if [ -n \"$r\" ]; then printf '%s %s\\n' \"$r\" "
              "\"$(cat \"releases/$r/REVISION\" 2>/dev/null)\"; else echo -; fi; done; }")
    return Command(script=script, cwd=root, timeout=30)


def parse_current_and_previous(text: str) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """Output of ``current_and_previous`` -> ((name, revision) or None, same for previous)."""
    pairs = []
    for line in (text.splitlines() + ["-", "-"])[:2]:
        parts = line.split()
        pairs.append((parts[0], parts[1]) if len(parts) == 2 else None)
    return pairs[0], pairs[1]


def live_release_of(root: str, revision: str) -> Command:
    """Print the newest live release of ``revision`` (exit 1 and nothing if the host has none)."""
    return Command(script="{ " + find_live(revision) + "; [ -n \"$t\" ] && echo \"$t\"; }", cwd=root, timeout=30)


def mirror_commit(root: str, revision: str) -> Command:
    """Full commit id of ``revision`` in the host's mirror (for ``rollback --to``)."""
    return Command(script=f"git --git-dir=repo.git rev-parse --verify --quiet {quote(revision + '^{commit}')}",
                   cwd=root, timeout=30)


def current_name(root: str) -> Command:
    """The release ``current`` points at (``pampa status``), nothing if there is none."""
    return Command(script="readlink current || true", cwd=root, timeout=30)
