"""``pampa lock status``, ``pampa lock acquire`` (maintenance) and ``pampa unlock``."""
from __future__ import annotations

import contextlib

from .. import provenance
from ..commands import lock as locking
from ..engine import holder
from ..engine.backends.pool import open_pool
from ..engine.lock import MAINTENANCE_LEASE, DeployLock, holder_info
from ..errors import LockHeld, PampaError, UsageError
from ..inventory import load_stage
from . import output


def declare_lock(cmd) -> None:
    p = cmd("lock", "inspect the stage lock, or hold it for maintenance until `pampa unlock`",
            "pampa lock acquire production -m 'db maintenance until 18:00'")
    p.add_argument("action", choices=["status", "acquire"])
    p.add_argument("stage")
    for word in ("release", "remove", "free", "unlock", "delete", "break"):
        p.choice_hints[word] = "to release a lock, run `pampa unlock STAGE -m WHY`"
    p.add_argument("--message", "-m", help="acquire: why; shown to every deploy refused meanwhile")
    p.set_defaults(handler=lambda args: lock_acquire(args) if args.action == "acquire" else lock_status(args))


def declare_unlock(cmd) -> None:
    p = cmd("unlock", "remove a stage lock by hand (recorded on the lock host)",
            "pampa unlock production -m 'deploy host died'")
    p.add_argument("stage")
    p.add_argument("--message", "-m", help="why; recorded with who did it")
    p.add_argument("--force", action="store_true",
                   help="remove the lock even though its holder looks alive (its lease is being renewed)")
    p.set_defaults(handler=unlock)


@contextlib.contextmanager
def _lock_host(stage):
    """The lock host's backend, connected; the connection closes on the way out."""
    with open_pool(stage) as pool:
        try:
            backend = pool.connect(stage.lock_host)
        except PampaError as e:
            raise PampaError(f"lock host {stage.lock_host.name}: {e.message}") from None
        yield backend


def lock_status(args) -> int:
    stage = load_stage(args.stage, args.stages)
    with _lock_host(stage) as backend:
        state = locking.parse_state(backend.run(locking.status_command(stage.lock.path, stage.name)).stdout)
    gone = holder.gone(state.info) if state.state == locking.HELD else None
    stale = state.state == locking.STALE or gone
    output.console(args).print(f"stage {stage.name} lock on {stage.lock_host.name}: {state.describe(gone)}"
                               + ("  (STALE: the next deploy takes it over, or "
                                  f"`{output.again(args, 'unlock ' + stage.name)}` removes it)" if stale else ""))
    return 0


def lock_acquire(args) -> int:
    """Hold the stage for maintenance: deploys and rollbacks refuse (exit 3) until ``pampa unlock``."""
    if not (args.message or "").strip():
        raise UsageError(f"pampa lock acquire {args.stage}: say why with -m, e.g. -m 'db maintenance'; "
                         "refused deploys show it")
    stage = load_stage(args.stage, args.stages)
    info = {**holder_info(stage.name, "-", args.message, MAINTENANCE_LEASE), "maintenance": True}
    with _lock_host(stage) as backend:
        DeployLock(backend, stage.lock.path, stage.name, info, MAINTENANCE_LEASE).acquire()
    output.console(args).print(f"stage {stage.name}: locked for maintenance on {stage.lock_host.name} "
                               f"({args.message}); deploys refuse until `{output.again(args, 'unlock ' + stage.name)}`")
    return 0


def unlock(args) -> int:
    stage = load_stage(args.stage, args.stages)
    record = {"unlocked_by": provenance.user(), "machine": provenance.machine(), "at": provenance.utc(),
              "message": args.message or ""}
    force = bool(getattr(args, "force", False))
    with _lock_host(stage) as backend:
        out = backend.run(locking.unlock_command(stage.lock.path, stage.name, record, force=force)).stdout
        state = locking.parse_state(out) if out.startswith("PAMPA-LOCK-LIVE") else None
        gone = holder.gone(state.info) if state is not None else None
        if gone:  # a deploy from this machine that died: its lease still runs, but nobody renews it
            out = backend.run(locking.unlock_command(stage.lock.path, stage.name, record, dead=state.raw)).stdout
    if out.startswith("PAMPA-LOCK-LIVE"):
        raise LockHeld(f"stage {stage.name}: not unlocked: the lock is {locking.parse_state(out).describe()}. Its "
                       f"holder looks alive (the lease is being renewed): stop that deploy, or wait for the lease to "
                       f"run out, or pass --force if you are sure it is dead")
    console = output.console(args)
    if "PAMPA-LOCK-REMOVED" in out:
        console.print(f"stage {stage.name}: lock removed on {stage.lock_host.name} (recorded in "
                      f"{stage.lock.path}/{stage.name}.unlocks.jsonl)")
    else:
        console.print(f"stage {stage.name}: no lock was held")
    return 0
