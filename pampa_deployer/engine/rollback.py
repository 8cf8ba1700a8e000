"""Choosing the one rollback target for the whole fleet, and refusing when a host lacks it.

Read-only: it runs only the queries of ``commands/git.py`` and ``commands/revlog.py``.
"""
from __future__ import annotations

from ..commands import git, releases, revlog
from ..errors import ConnectError, Refused
from .backends.pool import each_host


def release_history(entries: list[dict]) -> list[str]:
    """The revisions the host ran, oldest first, as a stack: a deploy pushes, a rollback pops back.

    A rollback to R removes everything deployed after R, so a second rollback goes
    further back (C -> B -> A) instead of flipping between the last two revisions.
    """
    stack: list[str] = []
    for entry in entries:
        before, after = entry.get("before"), entry.get("after")
        if entry.get("result") != "ok" or not after:
            continue
        if entry.get("kind") == "rollback":
            if after in stack:
                del stack[len(stack) - stack[::-1].index(after):]
            else:
                stack = [after]
            continue
        if not stack and before and before != after:
            stack.append(before)
        elif stack and before and stack[-1] != before and before != after:
            stack.append(before)  # a run the log missed: the host was on `before`
        if not stack or stack[-1] != after:
            stack.append(after)
    return stack


def previous_revision(entries: list[dict], current: str | None) -> str | None:
    """The revision the fleet ran before ``current``, from a host's revision log (newest last)."""
    stack = release_history(entries)
    if len(stack) >= 2 and stack[-1] == current:
        return stack[-2]
    return None


def resolve_target(stage, plan, reader, to: str | None) -> str:
    """Pick the target (``--to`` or the previous revision) and check it exists on every targeted host.

    ``reader`` is an SSH backend pool: even ``--dry-run`` reads revisions (read-only) to show the plan.
    """
    if any(hp.layout is not None for hp in plan.hosts):
        return resolve_release_target(stage, plan, reader, to)
    # Only hosts whose role manages code are reset; the others just restart on what they have.
    hosts = [hp.host for hp in plan.hosts if any(step.name == "git_reset" for step in hp.steps)]
    if not hosts:
        raise Refused("rollback: no targeted host resets code (no git_reset in their sequences)")
    wanted = to if to is not None else previous_on_lock_host(stage.lock_host, reader)

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


def previous_on_lock_host(lock_host, reader) -> str:
    """The revision the lock host ran before its current one: its revision log, else ``HEAD~1``."""
    try:
        backend = reader.connect(lock_host)
    except ConnectError as e:
        raise Refused(f"rollback: cannot read revisions from {lock_host.name}: {e.message}") from None
    entries, head, _ = revlog.parse(backend.run(revlog.read_command(revlog.base(lock_host.path), 200)).stdout)
    wanted = previous_revision(entries, head)
    if wanted is None:
        out = backend.run(git.parent_revision(lock_host.path))
        if not out.ok:
            raise Refused(f"rollback: no previous revision found on {lock_host.name} "
                          f"(no revision log entry and no HEAD~1); give one with --to REV")
        wanted = out.stdout.strip()
    return wanted


def manages_code(plan) -> bool:
    """Does any host of ``plan`` reset or switch its code (the hosts a rollback target must exist on)?"""
    return any(step.name in ("git_reset", "switch_release") for hp in plan.hosts for step in hp.steps)


def history_target(deploys: list[dict], current: str | None) -> str | None:
    """Pull mode: the revision before ``current`` in the access point's history of a stage.

    ``deploys`` are the stage's requests, newest first, as the access point lists them. A pull
    request records the revision its keplers reached when its gate opened (a rollback request
    names it from the start); those that got that far are the history, a rollback popping back
    as in ``release_history``. ``current`` is what the keplers report now (None: the newest entry).
    """
    entries = [{"after": d["revision"], "result": "ok", "kind": d.get("kind") or "deploy"}
               for d in reversed(deploys) if d.get("mode") == "pull" and d.get("revision")
               and (d.get("allowed_at") or d.get("state") == "DONE")]
    stack = release_history(entries)
    return previous_revision(entries, current if current is not None else (stack[-1] if stack else None))


def resolve_release_target(stage, plan, reader, to: str | None) -> str:
    """Releases strategy: the target is the revision of the previous live release on the lock host
    (or ``--to``); every host that switches must hold a live release of it, or nothing changes."""
    switching = [hp for hp in plan.hosts if any(step.name == "switch_release" for step in hp.steps)]
    if not switching:
        raise Refused("rollback: no targeted host builds releases (no git_reset in their sequences)")
    first = next((hp for hp in switching if hp.host.name == stage.lock_host.name), switching[0])
    try:
        backend = reader.connect(first.host)
    except ConnectError as e:
        raise Refused(f"rollback: cannot read releases from {first.host.name}: {e.message}") from None
    if to is None:
        _, previous = releases.parse_current_and_previous(
            backend.run(releases.current_and_previous(first.layout.root)).stdout)
        if previous is None:
            raise Refused(f"rollback: no previous release on {first.host.name}; give a revision with --to REV")
        wanted = previous[1]
    else:
        out = backend.run(releases.mirror_commit(first.layout.root, to))
        if not out.ok:
            raise Refused(f"rollback: revision {to} is not in {first.host.name}'s mirror. Nothing was changed")
        wanted = out.stdout.strip()

    def verify(host, be):
        hp = next(h for h in switching if h.host.name == host.name)
        out = be.run(releases.live_release_of(hp.layout.root, wanted))
        return out.stdout.strip() if out.ok and out.stdout.strip() else None

    found = each_host(reader, [hp.host for hp in switching], verify)
    missing = [name for name, rel in found.items() if not isinstance(rel, str)]
    if missing:
        unreachable = [n for n in missing if isinstance(found[n], ConnectError)]
        detail = f"; unreachable: {', '.join(unreachable)}" if unreachable else ""
        raise Refused(f"rollback: no intact release of {wanted[:12]} on {', '.join(missing)}{detail}. "
                      "Nothing was changed. Choose a revision every host has with --to REV")
    return wanted
