"""Choosing the one rollback target for the whole fleet, and refusing when a host lacks it.

Read-only: it runs only the queries of ``commands/git.py`` and ``commands/revlog.py``.
"""
from __future__ import annotations

from ..commands import git, revlog
from ..errors import ConnectError, Refused
from .pool import each_host


def previous_revision(entries: list[dict], current: str | None) -> str | None:
    """The revision the fleet ran before ``current``, from a host's revision log (newest last)."""
    for entry in reversed(entries):
        if entry.get("result") == "ok" and entry.get("after") == current and entry.get("before") \
                and entry.get("before") != current:
            return entry["before"]
    return None


def resolve_target(stage, plan, reader, to: str | None) -> str:
    """Pick the target (``--to`` or the previous revision) and check it exists on every targeted host.

    ``reader`` is an SSH backend pool: even ``--dry-run`` reads revisions (read-only) to show the plan.
    """
    lock_host = stage.lock_host
    # Only hosts whose role manages code are reset; the others just restart on what they have.
    hosts = [hp.host for hp in plan.hosts if any(step.name == "git_reset" for step in hp.steps)]
    if not hosts:
        raise Refused("rollback: no targeted host resets code (no git_reset in their sequences)")
    try:
        backend = reader.connect(lock_host)
    except ConnectError as e:
        raise Refused(f"rollback: cannot read revisions from {lock_host.name}: {e.message}") from None
    entries, head, _ = revlog.parse(backend.run(revlog.read_command(revlog.base(lock_host.path), 200)).stdout)
    wanted = to
    if wanted is None:
        wanted = previous_revision(entries, head)
        if wanted is None:
            out = backend.run(git.parent_revision(lock_host.path))
            if not out.ok:
                raise Refused(f"rollback: no previous revision found on {lock_host.name} "
                              f"(no revision log entry and no HEAD~1); give one with --to REV")
            wanted = out.stdout.strip()

    def verify(host, be):
        out = be.run(git.verify_commit(host.path, wanted))
        return out.stdout.strip() if out.ok else None

    found = each_host(reader, hosts, verify)
    missing = [name for name, rev in found.items() if not isinstance(rev, str)]
    if missing:
        unreachable = [n for n in missing if isinstance(found[n], ConnectError)]
        detail = f"; unreachable: {', '.join(unreachable)}" if unreachable else ""
        raise Refused(f"rollback: revision {wanted} is not present on {', '.join(missing)}{detail}. "
                      f"Nothing was changed. Choose a revision every host has with --to REV")
    resolved = {rev for rev in found.values()}
    if len(resolved) != 1:
        raise Refused(f"rollback: {wanted} resolves to different commits on different hosts: {sorted(resolved)}")
    return resolved.pop()
