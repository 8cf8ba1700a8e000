"""The stage deploy lock: an atomic ``mkdir`` on the lock host, with a lease the running deploy renews.

The lock folder holds ``info.json`` (who, from where, pid, start, stage, branch,
message), ``token`` (only its holder may renew or release it) and ``expires``
(epoch seconds, host clock). A lock whose lease ran out is *stale*: the next
deploy takes it over, and ``pampa lock status`` shows it as stale.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from ..errors import LockHeld, PampaError
from ..shell import quote
from ..steps.actions import Command

FREE, HELD, STALE = "free", "held", "stale"

#: Lease of a maintenance lock (``pampa lock acquire``): it never goes stale; ``pampa unlock`` ends it.
MAINTENANCE_LEASE = 100 * 365 * 86400


@dataclass(frozen=True)
class LockState:
    state: str
    info: dict
    expires: int | None
    now: int | None

    def describe(self) -> str:
        if self.state == FREE:
            return "free"
        who = f"{self.info.get('user', '?')}@{self.info.get('machine', '?')} (pid {self.info.get('pid', '?')})"
        since = self.info.get("started_at", "?")
        msg = f", message: {self.info['message']!r}" if self.info.get("message") else ""
        if self.info.get("maintenance"):
            by = f"{self.info.get('user', '?')}@{self.info.get('machine', '?')}"  # no pid: `lock acquire` has exited
            return f"{self.state} for maintenance by {by} since {since}{msg}"
        left = "" if self.expires is None or self.now is None else \
            (f", lease expired {self.now - self.expires}s ago" if self.state == STALE
             else f", lease renews, expires in {self.expires - self.now}s")
        return (f"{self.state} by {who} since {since}, deploying {self.info.get('branch', '?')}"
                f"{msg}{left}")


def _dir(root: str, stage: str) -> str:
    return f"{root.rstrip('/')}/{stage}.lock"


def acquire_command(root: str, stage: str, info: dict, token: str, lease: int) -> Command:
    d, body = _dir(root, stage), json.dumps(info, sort_keys=True)
    qd = quote(d)
    write = (f"printf '%s' {quote(body)} > {qd}/info.json && printf '%s' {quote(token)} > {qd}/token && "
             f"echo $((now + {int(lease)})) > {qd}/expires")
    script = (
        f"mkdir -p {quote(root)} && now=$(date +%s); "
        f"if mkdir {qd} 2>/dev/null; then {write} && echo PAMPA-LOCK-ACQUIRED && exit 0; fi; "
        f"exp=$(cat {qd}/expires 2>/dev/null || echo 0); "
        # A stale lock is taken over by moving it aside atomically; only one contender's mv succeeds.
        f"if [ \"$now\" -gt \"$exp\" ] && mv {qd} {qd}.stale.$$ 2>/dev/null; then "
        f"  old=$(cat {qd}.stale.$$/info.json 2>/dev/null); rm -rf {qd}.stale.$$; "
        f"  if mkdir {qd} 2>/dev/null; then {write} && echo PAMPA-LOCK-TOOK-STALE && echo \"$old\" && exit 0; fi; "
        f"fi; "
        f"echo PAMPA-LOCK-HELD; cat {qd}/info.json 2>/dev/null; echo; echo \"$(cat {qd}/expires 2>/dev/null) $now\"")
    return Command(script=script, timeout=30)


def renew_command(root: str, stage: str, token: str, lease: int) -> Command:
    qd = quote(_dir(root, stage))
    script = (f"[ \"$(cat {qd}/token 2>/dev/null)\" = {quote(token)} ] && "
              f"echo $(( $(date +%s) + {int(lease)} )) > {qd}/expires.tmp && mv {qd}/expires.tmp {qd}/expires "
              f"&& echo PAMPA-LOCK-RENEWED || echo PAMPA-LOCK-LOST")
    return Command(script=script, timeout=30)


def release_command(root: str, stage: str, token: str) -> Command:
    qd = quote(_dir(root, stage))
    script = (f"if [ \"$(cat {qd}/token 2>/dev/null)\" = {quote(token)} ]; then "
              f"mv {qd} {qd}.released.$$ && rm -rf {qd}.released.$$ && echo PAMPA-LOCK-RELEASED; "
              f"else echo PAMPA-LOCK-NOT-OURS; fi")
    return Command(script=script, timeout=30)


def status_command(root: str, stage: str) -> Command:
    qd = quote(_dir(root, stage))
    script = (f"if [ -d {qd} ]; then echo PAMPA-LOCK-HELD; cat {qd}/info.json 2>/dev/null; echo; "
              f"echo \"$(cat {qd}/expires 2>/dev/null || echo 0) $(date +%s)\"; else echo PAMPA-LOCK-FREE; fi")
    return Command(script=script, timeout=30)


def unlock_command(root: str, stage: str, record: dict) -> Command:
    d = _dir(root, stage)
    qd = quote(d)
    log = quote(f"{root.rstrip('/')}/{stage}.unlocks.jsonl")
    script = (f"if [ -d {qd} ]; then old=$(cat {qd}/info.json 2>/dev/null); "
              f"mv {qd} {qd}.unlocked.$$ && rm -rf {qd}.unlocked.$$ && "
              f"printf '%s %s\\n' {quote(json.dumps(record, sort_keys=True))} \"$old\" >> {log} && "
              f"echo PAMPA-LOCK-REMOVED && echo \"$old\"; else echo PAMPA-LOCK-FREE; fi")
    return Command(script=script, timeout=30)


def parse_state(output: str) -> LockState:
    lines = output.strip().splitlines()
    if not lines or lines[0] == "PAMPA-LOCK-FREE":
        return LockState(FREE, {}, None, None)
    try:
        info = json.loads(lines[1]) if len(lines) > 1 and lines[1].strip() else {}
    except ValueError:
        info = {}
    expires = now = None
    if len(lines) > 2:
        parts = lines[-1].split()
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            expires, now = int(parts[0]), int(parts[1])
    stale = expires is not None and now is not None and now > expires
    return LockState(STALE if stale else HELD, info, expires, now)


def holder_info(stage: str, branch: str, message: str | None, lease: int) -> dict:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001
        user = "unknown"
    return {"user": user, "machine": socket.gethostname(), "pid": os.getpid(), "stage": stage, "branch": branch,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "message": message or "",
            "lease_seconds": lease, "ci_job": os.environ.get("CI_JOB_URL") or os.environ.get("GITHUB_RUN_ID") or ""}


class DeployLock:
    """Acquire, renew (in a background thread) and release one stage's lock through a backend."""

    def __init__(self, backend, root: str, stage: str, info: dict, lease: int):
        self.backend, self.root, self.stage, self.info, self.lease = backend, root, stage, info, lease
        self.token = uuid.uuid4().hex
        self.took_stale: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    def acquire(self, wait: float = 0.0, on_wait=None) -> None:
        """Take the lock, or raise ``LockHeld``; with ``wait`` > 0, retry until then."""
        deadline = time.monotonic() + wait
        told = False
        while True:
            out = self.backend.run(acquire_command(self.root, self.stage, self.info, self.token, self.lease))
            if out.exit_code != 0 and "PAMPA-LOCK" not in out.stdout:
                raise PampaError(f"lock host {self.backend.name}: could not take the lock: {out.stderr.strip()}")
            first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
            if first in ("PAMPA-LOCK-ACQUIRED", "PAMPA-LOCK-TOOK-STALE"):
                self.held = True
                if first == "PAMPA-LOCK-TOOK-STALE":
                    try:
                        self.took_stale = json.loads(out.stdout.strip().splitlines()[1])
                    except (ValueError, IndexError):
                        self.took_stale = {}
                return
            state = parse_state(out.stdout)
            if time.monotonic() >= deadline:
                hint = (f"`pampa unlock {self.stage}` ends the maintenance" if state.info.get("maintenance") else
                        f"Wait with --lock-wait SECONDS, or if that deploy is dead run `pampa unlock {self.stage}`")
                raise LockHeld(f"stage {self.stage} is locked on {self.backend.name}: {state.describe()}. {hint}")
            if on_wait and not told:
                on_wait(state)
                told = True
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))

    def start_renewing(self) -> None:
        def loop() -> None:
            while not self._stop.wait(max(1.0, self.lease / 3)):
                try:
                    self.backend.run(renew_command(self.root, self.stage, self.token, self.lease))
                except Exception:  # noqa: BLE001 - the lease just runs out; the next renew retries
                    pass

        self._thread = threading.Thread(target=loop, name="pampa-lock-lease", daemon=True)
        self._thread.start()

    def release(self) -> bool:
        self._stop.set()
        if not self.held:
            return False
        out = self.backend.run(release_command(self.root, self.stage, self.token))
        self.held = False
        return "PAMPA-LOCK-RELEASED" in out.stdout
