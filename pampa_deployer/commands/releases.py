"""Read-only queries on a host's releases (releases strategy): rollback target, status, verification.

A release that was ever live carries ``LIVE_MARK``; names sort by time, so "previous" is the newest
live release older than ``current``. The shell snippets here are shared with the builders in
``steps/releases.py``, which switch and prune.
"""
from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass

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


#: Releases listed per host, newest first (``keep_releases`` keeps far fewer).
MAX_LISTED = 200


def listing(root: str) -> Command:
    """``pampa releases``: ``current``, the previous live release (the rollback target), the one last built,
    then one ``release NAME live|- REVISION`` line per release, newest first; ``no-root`` without a layout."""
    script = ("if cd " + quote(root) + " 2>/dev/null; then cur=$(basename \"$(readlink current)\" 2>/dev/null); "
              + PREVIOUS + "; echo \"current $cur\"; echo \"previous $prev\"; "
              "echo \"built $(basename \"$(readlink release)\" 2>/dev/null)\"; "
              f"for r in $(ls -1 releases 2>/dev/null | sort -r | head -n {MAX_LISTED}); do "
              f"if [ -e \"releases/$r/{LIVE_MARK}\" ]; then l=live; else l=-; fi; "
              "printf 'release %s %s %s\\n' \"$r\" \"$l\" \"$(head -c 64 \"releases/$r/REVISION\" 2>/dev/null)\"; "
              "done; else echo no-root; fi")
    return Command(script=script, timeout=30)


def prune_script(keep: int) -> str:
    """Remove all but the newest ``keep`` releases, never the current or the previous one (run in the root)."""
    return ("{ cur=$(basename \"$(readlink current)\") && " + PREVIOUS + "; "
            f"for r in $(ls -1 releases | sort -r | tail -n +{int(keep) + 1}); do "
            "if [ \"$r\" != \"$cur\" ] && [ \"$r\" != \"$prev\" ]; then rm -rf \"releases/$r\" && echo \"pruned $r\"; fi; "
            "done; git --git-dir=repo.git worktree prune; }")


def prune(root: str, keep: int) -> Command:
    """``pampa releases --prune``: what a deploy's switch prunes after it, alone (the same script)."""
    return Command(script=prune_script(keep), cwd=root, timeout=300)


#: A release folder's name as pampa makes them (``20261126142400-3f2a9c1``, ``...-2``) or as a person might.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_REVISION = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


@dataclass(frozen=True)
class Release:
    name: str
    revision: str | None   # its REVISION file (None: missing or not a commit id)
    live: bool             # it was the live release at some point (``LIVE_MARK``)

    @property
    def built_at(self) -> float | None:
        """The UTC time in its name (the run's stamp), or None for a name pampa did not make."""
        try:
            return float(calendar.timegm(time.strptime(self.name[:14], "%Y%m%d%H%M%S")))
        except ValueError:
            return None


@dataclass(frozen=True)
class Listing:
    """A host's releases as ``listing`` read them; names that are not release names are left out."""

    exists: bool                         # False: the releases root is not there (no release built yet)
    current: str | None = None
    previous: str | None = None          # the rollback target: the newest live release older than current
    built: str | None = None             # the release the last deploy built (``release`` link)
    releases: tuple[Release, ...] = ()   # newest first
    cut: bool = False                    # more than MAX_LISTED releases: the oldest were not read


def parse_listing(text: str) -> Listing:
    """Output of ``listing`` -> ``Listing``."""
    lines = text.splitlines()
    if "no-root" in (line.strip() for line in lines):
        return Listing(exists=False)
    marks: dict[str, str | None] = {"current": None, "previous": None, "built": None}
    found = []
    for line in lines:
        words = line.split()
        if len(words) == 2 and words[0] in marks and _NAME.fullmatch(words[1]):
            marks[words[0]] = words[1]
        elif len(words) in (3, 4) and words[0] == "release" and _NAME.fullmatch(words[1]):
            revision = words[3] if len(words) == 4 and _REVISION.fullmatch(words[3]) else None
            found.append(Release(name=words[1], revision=revision, live=words[2] == "live"))
    return Listing(exists=True, current=marks["current"], previous=marks["previous"], built=marks["built"],
                   releases=tuple(found[:MAX_LISTED]), cut=len(found) >= MAX_LISTED)
