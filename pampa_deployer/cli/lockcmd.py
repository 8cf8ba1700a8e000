"""``pampa lock status`` and ``pampa unlock``."""
from __future__ import annotations

import getpass
import socket
import time

from ..engine import lock as locking
from ..errors import PampaError, UsageError
from ..inventory import load_stage
from . import output
from .run import pool_for


def _backend(stage, args):
    pool = pool_for(stage, args)
    try:
        return pool, pool.connect(stage.lock_host)
    except PampaError as e:
        pool.close_all()
        raise PampaError(f"lock host {stage.lock_host.name}: {e.message}") from None


def _root(stage) -> str:
    return str(stage.setting("lock.path") or "~/.pampa/locks")


def lock_status(args) -> int:
    stage = load_stage(args.stage, args.stages)
    pool, backend = _backend(stage, args)
    try:
        state = locking.parse_state(backend.run(locking.status_command(_root(stage), stage.name)).stdout)
    finally:
        pool.close_all()
    output.console(args).print(f"stage {stage.name} lock on {stage.lock_host.name}: {state.describe()}"
                               + ("  (STALE: the next deploy takes it over)" if state.state == locking.STALE else ""))
    return 0


def lock_acquire(args) -> int:
    """Hold the stage for maintenance: deploys and rollbacks refuse (exit 3) until ``pampa unlock``."""
    if not (args.message or "").strip():
        raise UsageError(f"pampa lock acquire {args.stage}: say why with -m, e.g. -m 'db maintenance'; "
                         "refused deploys show it")
    stage = load_stage(args.stage, args.stages)
    pool, backend = _backend(stage, args)
    try:
        info = {**locking.holder_info(stage.name, "-", args.message, locking.MAINTENANCE_LEASE), "maintenance": True}
        lock = locking.DeployLock(backend, _root(stage), stage.name, info, locking.MAINTENANCE_LEASE)
        lock.acquire()
    finally:
        pool.close_all()
    output.console(args).print(f"stage {stage.name}: locked for maintenance on {stage.lock_host.name} "
                               f"({args.message}); deploys refuse until `pampa unlock {stage.name}`")
    return 0


def unlock(args) -> int:
    stage = load_stage(args.stage, args.stages)
    pool, backend = _backend(stage, args)
    try:
        record = {"unlocked_by": getpass.getuser(), "machine": socket.gethostname(),
                  "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "message": args.message or ""}
        out = backend.run(locking.unlock_command(_root(stage), stage.name, record)).stdout
    finally:
        pool.close_all()
    console = output.console(args)
    if "PAMPA-LOCK-REMOVED" in out:
        console.print(f"stage {stage.name}: lock removed on {stage.lock_host.name} (recorded in "
                      f"{_root(stage)}/{stage.name}.unlocks.jsonl)")
    else:
        console.print(f"stage {stage.name}: no lock was held")
    return 0
