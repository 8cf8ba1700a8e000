"""``pampa pending`` shown: one block per group of hosts (lines a terminal, a pipe and CI read alike), or JSON.

Every field that came from the repository was made printable when it was parsed
(``commands/untrusted.py``); this module only arranges it.
"""
from __future__ import annotations

import time

from .. import provenance
from ..engine.pending import AHEAD, BEHIND, DIVERGED, FIRST, NOT_UPDATED, UNKNOWN, UP_TO_DATE, Group, Preview
from .words import count, plural

#: Host names written out in a group's first line; the rest are counted (``--json`` lists them all).
NAMES_SHOWN = 20


def _date(at: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(at))


def _iso(at: int) -> str:
    return provenance.utc(at)


def _names(names: list[str]) -> str:
    if len(names) <= NAMES_SHOWN:
        return ", ".join(names)
    return ", ".join(names[:NAMES_SHOWN]) + f" and {len(names) - NAMES_SHOWN} more"


def _short(revision: str | None) -> str:
    return (revision or "-")[:12]


def headline(g: Group) -> str:
    """The group's first line: who, from where to where, and what kind of move it is."""
    c, who = g.comparison, _names(g.hosts)
    state = g.state
    if state == NOT_UPDATED:
        return (f"{who}: {_short(g.revision) if g.revision else 'no checkout'}, not updated: "
                f"{'its sequence has' if len(g.hosts) == 1 else 'their sequences have'} no git_reset "
                "(a deploy restarts what is there)")
    if c is not None and c.target is None:
        return f"{who}: branch {g.branch} is not in the repository: nothing to compare"
    target = _short(c.target if c else None)
    if state == FIRST:
        return f"{who}: no checkout yet: the first deploy brings {g.branch} at {target} ({count(c.behind, 'commit')})"
    if state == UNKNOWN:
        return (f"{who}: {_short(g.revision)} is not in the repository (a commit never pushed, or history "
                f"rewritten): cannot say what a deploy of {g.branch} ({target}) changes")
    if state == UP_TO_DATE:
        return f"{who}: up to date with {g.branch} ({target})"
    if state == AHEAD:
        return (f"{who}: ahead of {g.branch}: {_short(g.revision)} has {count(c.ahead, 'commit')} that {g.branch} "
                f"({target}) does not; a deploy would move it back")
    move = f"{who}: {_short(g.revision)} -> {target} ({g.branch}): {count(c.behind, 'commit')}"
    if state == DIVERGED:
        move += f"; diverged: {count(c.ahead, 'commit')} on the host {plural(c.ahead, 'is')} not in {g.branch} " \
                "and would be left"
    return move


def details(g: Group) -> list[str]:
    """Commits, migrations, Gemfile.lock and size, for a group a deploy changes."""
    c = g.comparison
    if c is None or c.target is None or g.state not in (BEHIND, DIVERGED, AHEAD):
        return []
    out = [f"  {x.revision[:12]}  {_date(x.at)}  {x.author}  {x.subject}" for x in c.commits]
    if c.behind > len(c.commits):
        out.append(f"  ... and {c.behind - len(c.commits)} older (--json lists {len(c.commits)}; "
                   f"git log {_short(g.revision)}..{_short(c.target)} all)")
    if c.migrations:
        on = f"on {_names(g.migrating)}" if g.migrating else "no host here runs migrate"
        out.append(f"  migrations to run ({on}): {', '.join(c.migrations)}"
                   + (" (and more)" if "migrations" in c.cut else ""))
    else:
        out.append("  migrations to run: none")
    if c.migrations_removed:
        out.append(f"  migration files removed (already run; not reverted): {', '.join(c.migrations_removed)}")
    out.append(f"  Gemfile.lock: {c.lock.describe() if c.lock else 'unchanged'}")
    out.append(f"  {count(c.files_changed, 'file')} changed (+{c.insertions} -{c.deletions})")
    return out


def lines(p: Preview) -> list[str]:
    out = [f"pending for {p.stage}: repository {p.repository}"]
    for g in p.groups:
        out.append(headline(g))
        out.extend(details(g))
    for host, why in p.unreachable.items():
        out.append(f"{host}: unreachable (not read): {why}")
    out.append(summary(p))
    return out


def summary(p: Preview) -> str:
    """The last line: how many hosts are in each state (a host unreachable is counted, never dropped)."""
    by: dict[str, int] = {}
    for g in p.groups:
        by[g.state] = by.get(g.state, 0) + len(g.hosts)
    words = {BEHIND: "to update", DIVERGED: "diverged", FIRST: "without a checkout", UP_TO_DATE: "up to date",
             AHEAD: "ahead", UNKNOWN: "on a revision the repository lacks", NOT_UPDATED: "not updated by a deploy"}
    parts = [f"{count(n, 'host')} {words[state]}" for state, n in by.items()]
    if p.unreachable:
        parts.append(f"{count(len(p.unreachable), 'host')} unreachable")
    return f"pending {p.stage}: " + ", ".join(parts)


def to_dict(p: Preview) -> dict:
    return {"stage": p.stage, "repository": p.repository, "complete": p.complete,
            "unreachable": [{"host": h, "error": e} for h, e in p.unreachable.items()],
            "missing_branches": p.missing_branches, "groups": [_group(g) for g in p.groups]}


def _group(g: Group) -> dict:
    c = g.comparison
    out = {"hosts": g.hosts, "state": g.state, "revision": g.revision, "branch": g.branch,
           "target": c.target if c else None}
    if c is not None and c.target is not None and c.known:
        out.update(ahead=c.ahead, behind=c.behind,
                   commits=[{"revision": x.revision, "author": x.author, "date": _iso(x.at), "subject": x.subject}
                            for x in c.commits],
                   migrations=list(c.migrations), migrations_run_on=g.migrating,
                   migrations_removed=list(c.migrations_removed),
                   gemfile_lock=None if c.lock is None else c.lock.to_dict(),
                   files_changed=c.files_changed, insertions=c.insertions, deletions=c.deletions, cut=list(c.cut))
    return out
