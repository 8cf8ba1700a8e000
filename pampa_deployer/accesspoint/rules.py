"""The coordinator's rules as pure functions: a pull request's state from its nodes, and stalls.

A pull-mode deploy request lists the nodes expected to act on it (the stage's hosts
when it was requested). Each node's run moves ``waiting -> running -> ok | failed |
interrupted``, or ends ``skipped`` without running anything. The request's state
follows from those runs and only ever moves forward.
"""
from __future__ import annotations

from typing import Iterable, Mapping

PENDING, TAKEN, ALLOWED, DONE, FAILED = "PENDING", "TAKEN", "ALLOWED", "DONE", "FAILED"
#: A pull request the developer called off (``POST /deploys/ID/cancel``): never handed out again, its gate never
#: opens; nodes already running it are told so in their next answer and stop at a step boundary.
CANCELLED = "CANCELLED"
ORDER = (PENDING, TAKEN, ALLOWED, DONE, FAILED, CANCELLED)
TERMINAL_REQUEST = (DONE, FAILED, CANCELLED)

WAITING, RUNNING, OK, NODE_FAILED, INTERRUPTED, SKIPPED = "waiting", "running", "ok", "failed", "interrupted", "skipped"
NODE_STATES = (WAITING, RUNNING, OK, NODE_FAILED, INTERRUPTED, SKIPPED)
NODE_FINAL = (OK, NODE_FAILED, INTERRUPTED, SKIPPED)


def request_state(current: str, runs: Iterable[Mapping]) -> str:
    """The state a pull request moves to, given its nodes' runs (never backwards).

    - a kepler (``opens_gate``) that ended without success: FAILED, for good;
    - every kepler succeeded (or the request has none): ALLOWED;
    - some node started: TAKEN;
    - every node ended: DONE if all succeeded, else FAILED.
    """
    if current in TERMINAL_REQUEST:
        return current
    runs = list(runs)
    openers = [r for r in runs if r["opens_gate"]]
    if any(r["state"] in (NODE_FAILED, INTERRUPTED, SKIPPED) for r in openers):
        return FAILED
    if runs and all(r["state"] in NODE_FINAL for r in runs):
        return DONE if all(r["state"] == OK for r in runs) else FAILED
    wanted = current
    if all(r["state"] == OK for r in openers):
        wanted = ALLOWED
    elif any(r["state"] != WAITING for r in runs):
        wanted = TAKEN
    return wanted if ORDER.index(wanted) > ORDER.index(current) else current


def gate_closed_reason(runs: Iterable[Mapping]) -> str | None:
    """Why gated nodes will never act on this request (a kepler ended without success), or None."""
    for r in runs:
        if r["opens_gate"] and r["state"] in (NODE_FAILED, INTERRUPTED, SKIPPED):
            where = f" at {r['step']}" if r.get("step") else ""
            return f"{r['node']} {r['state']}{where}"
    return None


def gate_revision(runs: Iterable[Mapping]) -> str | None:
    """The revision every kepler of the request reached (their finish reports agree), or None.

    Recorded on the request when its gate opens: the stage's history of what ran, which a
    pull-mode rollback without ``--to`` goes back in (docs/pull-mode.md).
    """
    revisions = {r.get("revision") for r in runs if r["opens_gate"]}
    if len(revisions) != 1 or None in revisions:
        return None
    return next(iter(revisions))


def actionable(run: Mapping, request_state_now: str) -> bool:
    """May this node start this request now? Gated nodes only act on ALLOWED (or later, not FAILED) ones."""
    if run["state"] != WAITING:
        return False
    if run["gated"]:
        return request_state_now in (ALLOWED, DONE)
    return True


def stalled(run: Mapping, request: Mapping, now: float, stall_after: float) -> str | None:
    """Why a node's run is stalled (it should be reporting and is not), or None.

    A running node that sent nothing for ``stall_after`` seconds, or a node that could act
    and has not started for that long: its agent is down, stuck or cut off. A stalled
    request is never shown as done.
    """
    if run["state"] == RUNNING:
        quiet = now - (run.get("updated_at") or run.get("started_at") or now)
        if quiet > stall_after:
            return f"no report for {quiet:.0f}s (last step: {run.get('step') or 'none'})"
        return None
    if run["state"] == WAITING and actionable(run, request["state"]):
        since = request.get("allowed_at") if run["gated"] else request.get("created_at")
        if since and now - since > stall_after:
            return f"not started {now - since:.0f}s after it could (is its agent running?)"
    return None
