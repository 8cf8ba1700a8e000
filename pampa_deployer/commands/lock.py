"""Lock commands: an atomic ``mkdir`` on the lock host, with a lease the running deploy renews.

The lock folder holds ``info.json`` (who, from where, pid, start, stage, branch,
message), ``token`` (only its holder may renew or release it) and ``expires``
(epoch seconds, host clock). Each builder is pure; ``parse_state`` reads what
``status_command`` (and a refused ``acquire_command``) print.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..shell import quote
from .command import Command

FREE, HELD, STALE = "free", "held", "stale"


@dataclass(frozen=True)
class LockState:
    state: str
    info: dict
    expires: int | None
    now: int | None
    raw: str = ""
    """``info.json`` as the host printed it: what a takeover of a dead holder's lock names (``dead=``)."""

    def describe(self, gone: str | None = None) -> str:
        """The holder in words; ``gone`` (engine/holder.py) says its process is known dead, so the lease
        is not described as renewing."""
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
        if gone and self.state != STALE:
            left = f"; {gone}"
        return (f"{self.state} by {who} since {since}, deploying {self.info.get('branch', '?')}"
                f"{msg}{left}")


def _dir(root: str, stage: str) -> str:
    return f"{root.rstrip('/')}/{stage}.lock"


def _is(qd: str, raw: str) -> str:
    """A test that the lock's ``info.json`` is still exactly ``raw`` (the one judged dead, not a newer one)."""
    return f"[ \"$(cat {qd}/info.json 2>/dev/null)\" = {quote(raw)} ]"


def acquire_command(root: str, stage: str, info: dict, token: str, lease: int, dead: str | None = None) -> Command:
    """Take the lock; a stale one (lease run out, or ``dead``: the info of a holder known dead) is taken over."""
    d, body = _dir(root, stage), json.dumps(info, sort_keys=True)
    qd = quote(d)
    stale = f"{{ [ \"$now\" -gt \"$exp\" ] || {_is(qd, dead)}; }}" if dead else "[ \"$now\" -gt \"$exp\" ]"
    write = (f"printf '%s' {quote(body)} > {qd}/info.json && printf '%s' {quote(token)} > {qd}/token && "
             f"echo $((now + {int(lease)})) > {qd}/expires")
    script = (
        f"mkdir -p {quote(root)} && now=$(date +%s); "
        f"if mkdir {qd} 2>/dev/null; then {write} && echo PAMPA-LOCK-ACQUIRED && exit 0; fi; "
        f"exp=$(cat {qd}/expires 2>/dev/null || echo 0); "
        # A stale lock is taken over by moving it aside atomically; only one contender's mv succeeds.
        f"if {stale} && mv {qd} {qd}.stale.$$ 2>/dev/null; then "
        f"  old=$(cat {qd}.stale.$$/info.json 2>/dev/null); rm -rf {qd}.stale.$$; "
        f"  if mkdir {qd} 2>/dev/null; then {write} && echo PAMPA-LOCK-TOOK-STALE && echo \"$old\" && exit 0; fi; "
        f"fi; "
        f"echo PAMPA-LOCK-HELD; cat {qd}/info.json 2>/dev/null; echo; echo \"$(cat {qd}/expires 2>/dev/null) $now\"")
    return Command(script=script, timeout=30, killable=False)


def renew_command(root: str, stage: str, token: str, lease: int) -> Command:
    qd = quote(_dir(root, stage))
    script = (f"[ \"$(cat {qd}/token 2>/dev/null)\" = {quote(token)} ] && "
              f"echo $(( $(date +%s) + {int(lease)} )) > {qd}/expires.tmp && mv {qd}/expires.tmp {qd}/expires "
              f"&& echo PAMPA-LOCK-RENEWED || {{ echo PAMPA-LOCK-LOST; cat {qd}/info.json 2>/dev/null; echo; }}")
    return Command(script=script, timeout=30, killable=False)


def release_command(root: str, stage: str, token: str) -> Command:
    qd = quote(_dir(root, stage))
    script = (f"if [ \"$(cat {qd}/token 2>/dev/null)\" = {quote(token)} ]; then "
              f"mv {qd} {qd}.released.$$ && rm -rf {qd}.released.$$ && echo PAMPA-LOCK-RELEASED; "
              f"else echo PAMPA-LOCK-NOT-OURS; fi")
    return Command(script=script, timeout=30, killable=False)


def status_command(root: str, stage: str) -> Command:
    qd = quote(_dir(root, stage))
    script = (f"if [ -d {qd} ]; then echo PAMPA-LOCK-HELD; cat {qd}/info.json 2>/dev/null; echo; "
              f"echo \"$(cat {qd}/expires 2>/dev/null || echo 0) $(date +%s)\"; else echo PAMPA-LOCK-FREE; fi")
    return Command(script=script, timeout=30, killable=False)


_REMOVED = "__PAMPA_REMOVED_LOCK__"


def unlock_command(root: str, stage: str, record: dict, force: bool = False, dead: str | None = None) -> Command:
    """Remove the lock by hand and append ``record`` plus the removed lock's info to STAGE.unlocks.jsonl.

    Without ``force`` a lock whose lease is alive stays (PAMPA-LOCK-LIVE, then the lock's state as
    ``status_command`` prints it), unless it is a maintenance lock (`pampa lock acquire`): ending
    those is what `pampa unlock` is for; or its info is still ``dead`` (a holder known dead).
    """
    d = _dir(root, stage)
    qd = quote(d)
    log = quote(f"{root.rstrip('/')}/{stage}.unlocks.jsonl")
    # One JSON object per line (JSON Lines): the removed lock's info.json is spliced in as "lock"
    # (null when it was missing or empty), the way the revision log splices in "after".
    line = json.dumps({**record, "lock": _REMOVED}, sort_keys=True)
    before, _, after = line.partition(json.dumps(_REMOVED))
    live = "" if force else (
        f"exp=$(cat {qd}/expires 2>/dev/null || echo 0); now=$(date +%s); "
        f"if [ -d {qd} ] && [ \"$now\" -le \"$exp\" ] && ! grep -q '\"maintenance\": true' {qd}/info.json 2>/dev/null"
        + (f" && ! {_is(qd, dead)}" if dead else "") + "; "
        f"then echo PAMPA-LOCK-LIVE; cat {qd}/info.json 2>/dev/null; "
        f"echo; echo \"$exp $now\"; exit 0; fi; ")
    script = (f"{live}if [ -d {qd} ]; then old=$(tr -d '\\n' 2>/dev/null < {qd}/info.json); "
              f"mv {qd} {qd}.unlocked.$$ && rm -rf {qd}.unlocked.$$ && "
              f"printf '%s%s%s\\n' {quote(before)} \"${{old:-null}}\" {quote(after)} >> {log} && "
              f"echo PAMPA-LOCK-REMOVED && echo \"$old\"; else echo PAMPA-LOCK-FREE; fi")
    return Command(script=script, timeout=30, killable=False)


def parse_lost(output: str) -> str | None:
    """Output of ``renew_command`` -> None while the lock is ours, else who holds it now (or "removed")."""
    lines = output.strip().splitlines()
    if not lines or lines[0] != "PAMPA-LOCK-LOST":
        return None
    try:
        info = json.loads(lines[1]) if len(lines) > 1 and lines[1].strip() else {}
    except ValueError:
        info = {}
    if not info:
        return "removed (by `pampa unlock --force`?)"
    return f"taken over by {info.get('user', '?')}@{info.get('machine', '?')} (pid {info.get('pid', '?')})"


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
    raw = lines[1].strip() if len(lines) > 1 else ""
    return LockState(STALE if stale else HELD, info, expires, now, raw)


def parse_acquired(output: str) -> tuple[bool, dict | None]:
    """Output of ``acquire_command`` -> (taken, info of the stale lock taken over, or None)."""
    lines = output.strip().splitlines()
    first = lines[0] if lines else ""
    if first == "PAMPA-LOCK-ACQUIRED":
        return True, None
    if first == "PAMPA-LOCK-TOOK-STALE":
        try:
            return True, json.loads(lines[1])
        except (ValueError, IndexError):
            return True, {}
    return False, None
