"""``pampa releases``: each host's releases on disk (releases strategy), and pruning them without a deploy.

Listing is read-only, one command per host. Pruning removes exactly what a deploy's switch would
(``commands/releases.prune_script``: all but the newest ``keep_releases``, never ``current`` nor the
previous live release), under the stage's deploy lock, so it never races a deploy building a release.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..commands import releases as cmd
from ..commands.untrusted import printable
from ..errors import ConnectError, Refused
from ..steps.releases import layout_of
from . import lock as locking
from .backends.pool import BackendPool, each_host


def list_releases(stage, hosts, pool: BackendPool) -> dict[str, cmd.Listing | ConnectError]:
    """Each host's listing, in parallel."""
    def read(host, backend):
        layout = layout_of(stage.settings, host.path, "")
        return cmd.parse_listing(backend.run(cmd.listing(layout.root)).stdout)

    return each_host(pool, hosts, read)


@dataclass(frozen=True)
class Pruned:
    """What ``--prune`` did on one host: the releases removed, or why nothing was."""

    removed: tuple[str, ...] = ()
    skipped: str | None = None      # why this host was left alone (no current release...)
    failed: str | None = None       # the prune command failed: its exit code and the telling line


def prune(stage, hosts, pool: BackendPool, listings: dict, message: str | None, lock: bool = True,
          lock_wait: float = 0.0) -> dict[str, Pruned | ConnectError]:
    """Prune every host that has a ``current`` release, under the stage lock (unless ``lock`` is False)."""
    held = _take_lock(stage, pool, message, lock_wait) if lock else None
    try:
        def work(host, backend):
            listing = listings.get(host.name)
            if not isinstance(listing, cmd.Listing) or not listing.exists or not listing.current:
                return Pruned(skipped="no current release: nothing is pruned where nothing is live")
            layout = layout_of(stage.settings, host.path, "")
            out = backend.run(cmd.prune(layout.root, layout.keep))
            removed = tuple(printable(line[len("pruned "):], 100) for line in out.stdout.splitlines()
                            if line.startswith("pruned "))
            if not out.ok:
                why = printable((out.stderr.strip().splitlines() or [""])[-1], 300)
                return Pruned(removed=removed, failed=f"exit code {out.exit_code}: {why}")
            return Pruned(removed=removed)

        return each_host(pool, hosts, work)
    finally:
        if held is not None:
            held.release()


def _take_lock(stage, pool: BackendPool, message: str | None, wait: float) -> locking.DeployLock:
    host = stage.lock_host
    try:
        backend = pool.connect(host)
    except ConnectError as e:
        raise Refused(f"cannot take the deploy lock on {host.name}; nothing was pruned: {e.message}") from None
    lease = int(stage.lock.lease)
    info = locking.holder_info(stage.name, "-", message or "pampa releases --prune", lease)
    held = locking.DeployLock(backend, stage.lock.path, stage.name, info, lease)
    held.acquire(wait=wait)
    held.start_renewing()
    return held
