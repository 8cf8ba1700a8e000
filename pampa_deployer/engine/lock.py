"""The stage deploy lock held by a running deploy: acquire, renew in the background, release.

The commands and their parsing live in ``commands/lock.py``. A lock whose lease ran
out is *stale*: the next deploy takes it over, and ``pampa lock status`` shows it as stale.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid

from .. import provenance
from ..commands.lock import (
    HELD,
    acquire_command,
    parse_acquired,
    parse_lost,
    parse_state,
    release_command,
    renew_command,
)
from ..errors import LockHeld, PampaError
from . import holder

#: Lease of a maintenance lock (``pampa lock acquire``): it never goes stale; ``pampa unlock`` ends it.
MAINTENANCE_LEASE = 100 * 365 * 86400


def holder_info(stage: str, branch: str, message: str | None, lease: int) -> dict:
    return {"user": provenance.user(), "machine": provenance.machine(), "pid": os.getpid(), "stage": stage,
            "branch": branch, "started_at": provenance.utc(), "message": message or "",
            "lease_seconds": lease, "ci_job": os.environ.get("CI_JOB_URL") or os.environ.get("GITHUB_RUN_ID") or "",
            **holder.identity()}


def _json(text: str) -> dict | None:
    try:
        return json.loads(text)
    except ValueError:
        return None


class DeployLock:
    """Acquire, renew (in a background thread) and release one stage's lock through a backend."""

    def __init__(self, backend, root: str, stage: str, info: dict, lease: int):
        self.backend, self.root, self.stage, self.info, self.lease = backend, root, stage, info, lease
        self.token = uuid.uuid4().hex
        self.took_stale: dict | None = None
        self.took_dead: str | None = None  # why the stale lock taken over was known dead before its lease ran out
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False
        self.lost: str | None = None  # why the lock is no longer ours: removed, or taken over by whom
        self.on_lost = None  # called once with that reason, from the renewing thread

    def acquire(self, wait: float = 0.0, on_wait=None) -> None:
        """Take the lock, or raise ``LockHeld``; with ``wait`` > 0, retry until then."""
        deadline = time.monotonic() + wait
        told = False
        dead: tuple[str, str] | None = None  # (info.json of a holder known dead, why): take it over at once
        while True:
            out = self.backend.run(acquire_command(self.root, self.stage, self.info, self.token, self.lease,
                                                   dead=dead[0] if dead else None))
            if out.exit_code != 0 and "PAMPA-LOCK" not in out.stdout:
                raise PampaError(f"lock host {self.backend.name}: could not take the lock: {out.stderr.strip()}")
            taken, stale = parse_acquired(out.stdout)
            if taken:
                self.held, self.took_stale = True, stale
                self.took_dead = dead[1] if dead and stale is not None and stale == _json(dead[0]) else None
                return
            state = parse_state(out.stdout)
            gone = holder.gone(state.info) if state.state == HELD else None
            if gone and (dead is None or dead[0] != state.raw):  # a deploy from here that died: no need to wait
                dead = (state.raw, gone)
                continue
            if time.monotonic() >= deadline:
                left = f" in {state.expires - state.now}s" if state.expires and state.now else ""
                hint = (f"`pampa unlock {self.stage}` ends the maintenance" if state.info.get("maintenance") else
                        f"Wait with --lock-wait SECONDS; if that deploy is dead, its lease runs out{left} and the "
                        f"next deploy takes the lock over, or `pampa unlock {self.stage} --force -m WHY` removes "
                        "it now")
                raise LockHeld(f"stage {self.stage} is locked on {self.backend.name}: {state.describe()}. {hint}")
            if on_wait and not told:
                on_wait(state)
                told = True
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))

    def start_renewing(self) -> None:
        def loop() -> None:
            while not self._stop.wait(max(1.0, self.lease / 3)):
                try:
                    out = self.backend.run(renew_command(self.root, self.stage, self.token, self.lease)).stdout
                except Exception:  # noqa: BLE001 - the lease just runs out; the next renew retries
                    continue
                lost = parse_lost(out)
                if lost:
                    self.held, self.lost = False, lost
                    if self.on_lost is not None:
                        self.on_lost(lost)
                    return

        self._thread = threading.Thread(target=loop, name="pampa-lock-lease", daemon=True)
        self._thread.start()

    def release(self) -> bool:
        self._stop.set()
        if not self.held:
            return False
        out = self.backend.run(release_command(self.root, self.stage, self.token))
        if "PAMPA-LOCK-RELEASED" not in out.stdout and "PAMPA-LOCK-NOT-OURS" not in out.stdout:
            # e.g. timed out on a host that stopped answering: say so, never "released" by omission
            raise PampaError(f"the release command did not complete (exit code {out.exit_code}: "
                             f"{out.stderr.strip()[-200:] or 'no output'})")
        self.held = False
        return "PAMPA-LOCK-RELEASED" in out.stdout
