"""``pampa pending``: what a deploy would bring to a host, as commands and the parsing of what they print.

Each host is read once, for the revision its live code runs (``commands/revlog.revision_command``).
Everything else is git work on the operator's machine, in a bare mirror of the stage's ``repo``
(``.pampa/repos/``), fetched once per call: the repository is the truth about the target, and the
hosts are neither written to nor asked to reach it. One ``compare`` command answers, for one host
revision and one branch, everything the preview shows (as Capistrano's ``deploy:pending`` reads
the log locally); hosts on the same revision share it.

What a host printed (its revision) is checked against ``REVISION`` before it reaches a local
command line; the repository's text (authors, subjects, file names) goes through ``printable``.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ..shell import quote
from .command import Command
from .gemlock import LockChange, parse_diff
from .untrusted import printable

#: A full commit id (SHA-1, or SHA-256 for repositories that use it); nothing else is a host's revision.
REVISION = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
MAX_COMMITS = 50        # commits listed per group (the count is always exact)
MAX_FILES = 200         # migration files listed per group
MAX_LOCK_LINES = 2000   # changed lines of Gemfile.lock read
FETCH_TIMEOUT = 300     # seconds for the one fetch of a call
COMPARE_TIMEOUT = 60
LOCKFILE = "Gemfile.lock"
#: The queries read the mirror without the user's git configuration (colours, signatures, pagers would
#: change what git prints); the fetch keeps it (credential helpers, url.insteadOf).
PLAIN_GIT = (("GIT_CONFIG_NOSYSTEM", "1"), ("GIT_CONFIG_GLOBAL", "/dev/null"), ("LC_ALL", "C"))
#: No prompt can hang a fetch: not git's, not ssh's (BatchMode), unless the user chose their own ssh command.
FETCH_ENV = (("GIT_TERMINAL_PROMPT", "0"),)

_MARKS = ("--pampa-commits--", "--pampa-migrations--", "--pampa-stat--", "--pampa-lock--")


def mirror_name(repo: str) -> str:
    """The mirror's folder name for ``repo``: one mirror per repository URL, whatever the stage."""
    return hashlib.sha256(repo.encode()).hexdigest()[:16] + ".git"


def fetch(mirror: str, repo: str) -> Command:
    """Create the bare mirror once, then fetch every branch of ``repo`` into it (incremental, pruned)."""
    m = quote(mirror)
    script = (f'export GIT_SSH_COMMAND="${{GIT_SSH_COMMAND:-ssh -o BatchMode=yes}}" && '
              f"{{ [ -d {m} ] || git init -q --bare {m}; }} && "
              f"git --git-dir={m} fetch -q --prune --no-tags -- {quote(repo)} '+refs/heads/*:refs/heads/*'")
    return Command(script=script, env=FETCH_ENV, timeout=FETCH_TIMEOUT)


def compare(mirror: str, branch: str, current: str | None, migrations: str = "db/migrations") -> Command:
    """Everything the preview says about moving ``current`` (a full commit id, or None: no checkout yet)
    to the head of ``branch``: target, counts, commits, migration files, size, and the Gemfile.lock diff."""
    if current is not None and not REVISION.fullmatch(current):
        raise ValueError(f"not a commit id: {current!r}")
    git = f"git --git-dir={quote(mirror)}"
    target = f"t=$({git} rev-parse --verify -q {quote(f'refs/heads/{branch}^{{commit}}')})"
    if current is None:
        rest = f'echo "counts 0 $({git} rev-list --count "$t")"'
    else:
        c = current
        rest = (f"if {git} cat-file -e {quote(c + '^{commit}')} 2>/dev/null; then "
                f'echo "counts $({git} rev-list --left-right --count {c}..."$t")"; '
                f"echo {_MARKS[0]}; {git} log --no-color --no-decorate --max-count={MAX_COMMITS} "
                f"--format=%H%x1f%an%x1f%at%x1f%s {c}..\"$t\"; "
                f"echo {_MARKS[1]}; {git} diff --no-color --no-renames --name-status {c} \"$t\" -- "
                f"{quote(migrations)} | head -n {MAX_FILES + 1}; "
                f"echo {_MARKS[2]}; {git} diff --no-color --shortstat {c} \"$t\"; "
                f"echo {_MARKS[3]}; {git} diff --no-color --no-renames --unified=0 {c} \"$t\" -- {LOCKFILE} | "
                f"head -n {MAX_LOCK_LINES + 1}; "
                "else echo unknown; fi")
    script = f'{target}; if [ -z "$t" ]; then echo no-branch; else echo "target $t"; {rest}; fi'
    return Command(script=script, env=PLAIN_GIT, timeout=COMPARE_TIMEOUT)


@dataclass(frozen=True)
class Commit:
    revision: str
    author: str
    at: int        # author date, Unix seconds
    subject: str


@dataclass(frozen=True)
class Comparison:
    """What moving a host from ``current`` to the branch's head changes, as the mirror says."""

    target: str | None                      # None: the branch is not in the repository
    known: bool = True                      # False: the repository does not have the host's revision
    ahead: int = 0                          # commits on the host that the target does not have
    behind: int = 0                         # commits the deploy brings
    commits: tuple[Commit, ...] = ()        # newest first, at most MAX_COMMITS
    migrations: tuple[str, ...] = ()        # migration files the target adds (they run at migrate)
    migrations_removed: tuple[str, ...] = ()
    files_changed: int = 0
    insertions: int = 0
    deletions: int = 0
    lock: LockChange | None = None          # None: Gemfile.lock does not change
    cut: tuple[str, ...] = field(default_factory=tuple)  # lists cut at their bound ("migrations"...)


def parse_revision(text: str) -> str | None:
    """A host's answer to ``revision_command``: its full commit id, or None (no checkout, or garbage)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines and REVISION.fullmatch(lines[-1]) else None


def parse_compare(text: str) -> Comparison:
    """Output of ``compare`` -> ``Comparison``; lines that do not have their expected form are ignored."""
    head, sections = _sections(text)
    target = next((w[1] for w in (line.split() for line in head) if len(w) == 2 and w[0] == "target"
                   and REVISION.fullmatch(w[1])), None)
    if target is None:
        return Comparison(target=None)
    if "unknown" in head:
        return Comparison(target=target, known=False)
    counts = next((w[1:] for w in (line.split() for line in head) if len(w) == 3 and w[0] == "counts"
                   and w[1].isdigit() and w[2].isdigit()), ("0", "0"))
    commits = tuple(c for c in map(_commit, sections.get(_MARKS[0], [])) if c is not None)
    added, removed, cut = _migrations(sections.get(_MARKS[1], []))
    files, plus, minus = _shortstat(sections.get(_MARKS[2], []))
    lock_lines = sections.get(_MARKS[3], [])
    lock = parse_diff(lock_lines[:MAX_LOCK_LINES], truncated=len(lock_lines) > MAX_LOCK_LINES) \
        if any(line.startswith(("+", "-")) for line in lock_lines) else None
    return Comparison(target=target, ahead=int(counts[0]), behind=int(counts[1]), commits=commits[:MAX_COMMITS],
                      migrations=added, migrations_removed=removed, files_changed=files, insertions=plus,
                      deletions=minus, lock=lock, cut=cut)


def _sections(text: str) -> tuple[list[str], dict[str, list[str]]]:
    head: list[str] = []
    sections: dict[str, list[str]] = {}
    current = head
    for line in text.splitlines():
        if line in _MARKS:
            current = sections.setdefault(line, [])
        else:
            current.append(line)
    return head, sections


def _commit(line: str) -> Commit | None:
    parts = line.split("\x1f", 3)
    if len(parts) != 4 or not REVISION.fullmatch(parts[0]) or not parts[2].isdigit():
        return None
    return Commit(revision=parts[0], author=printable(parts[1], 100), at=int(parts[2]),
                  subject=printable(parts[3], 200))


def _migrations(lines: list[str]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    added, removed = [], []
    for line in lines[:MAX_FILES]:
        status, _, path = line.partition("\t")
        if status == "A":
            added.append(printable(path, 300))
        elif status == "D":
            removed.append(printable(path, 300))
    return tuple(sorted(added)), tuple(sorted(removed)), (("migrations",) if len(lines) > MAX_FILES else ())


_STAT = re.compile(r"(\d+) files? changed(?:, (\d+) insertions?\(\+\))?(?:, (\d+) deletions?\(-\))?")


def _shortstat(lines: list[str]) -> tuple[int, int, int]:
    for line in lines:
        m = _STAT.search(line)
        if m:
            return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    return 0, 0, 0
