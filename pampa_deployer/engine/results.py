"""Per-step, per-host and per-run results (like Fabric's GroupResult: every host is accounted for)."""
from __future__ import annotations

import signal
from dataclasses import dataclass, field

from ..errors import DeployFailed, Interrupted, LockLost, PampaError


@dataclass(frozen=True)
class CommandResult:
    """What one command did; ``stdout``/``stderr`` are already masked and bounded."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class RecordFailed(Exception):
    """A command's ``record`` (the start record) could not be written on the host; its body did not run."""

    def __init__(self, result: CommandResult):
        super().__init__(f"exit code {result.exit_code}")
        self.result = result


class NotStarted(Exception):
    """A command sent ahead (``send_ahead``) was not started by the host: the run is stopping (the
    host found the session's stop file before the step), so the step never began there."""


class StepFailed(Exception):
    """The action failed; the step (and its host) fails with this exit code, stderr tail and message."""

    def __init__(self, exit_code: int | None, stderr: str, message: str = ""):
        super().__init__(message)
        self.exit_code, self.stderr, self.message = exit_code, stderr, message


@dataclass(frozen=True)
class StepResult:
    name: str
    ok: bool
    started: float
    ended: float
    exit_code: int | None = None
    stderr_tail: str = ""
    message: str = ""
    skipped: str | None = None  # the step succeeded without its work, and why (commands/skip.py)

    @property
    def seconds(self) -> float:
        return self.ended - self.started


#: Host outcomes. "skipped" means never touched (gate closed, max-fail, interrupted before start).
OK, FAILED, SKIPPED, INTERRUPTED = "ok", "failed", "skipped", "interrupted"

#: The reason of each host of a refused run: the refusal itself is said once, as the run's error.
NOT_STARTED_REFUSED = "not started: the run was refused before any command ran"


@dataclass(frozen=True)
class HostResult:
    host: str
    roles: str
    result: str
    started: float
    ended: float
    steps: tuple[StepResult, ...] = ()
    failed_step: str | None = None
    exit_code: int | None = None
    stderr_tail: str = ""
    reason: str = ""
    revision_before: str | None = None
    revision_after: str | None = None
    gated: bool = False
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.result == OK

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class RunResult:
    stage: str
    kind: str
    branch: str
    started: float
    ended: float
    hosts: tuple[HostResult, ...]
    gate: str = "none"
    gate_opened_at: float | None = None
    interrupted_by: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    revision: str | None = None
    dry_run: bool = False
    deploy_id: int | None = None
    refused: str | None = None  # why the run was refused before it touched any host (lock, hook...)
    message: str | None = None  # the run's -m: in the report, the revision logs, the webhooks
    canary: dict | None = None  # --canary: its hosts, the rest, how it ended (engine/canary.Canary.summary)

    @property
    def stopped_at_canary(self) -> str | None:
        """Why the canary kept the rest of the fleet from starting, or None."""
        if self.canary is None or self.canary.get("result") in (None, "passed", "whole fleet"):
            return None
        return self.canary.get("reason") or "the canary did not pass"

    @property
    def ok(self) -> bool:
        return self.refused is None and self.interrupted_by is None and all(h.ok for h in self.hosts)

    def by_result(self, result: str) -> list[HostResult]:
        return [h for h in self.hosts if h.result == result]

    def headline(self) -> str:
        """One line: what ran, how each host ended, how long, the gate (summary, access point detail)."""
        if self.refused is not None:
            # The reason is the run's one error line (stderr) and the report's `reason`: said once, not twice.
            return f"{self.kind} of {self.stage} refused: no host was touched"
        known = (OK, FAILED, SKIPPED, INTERRUPTED)
        others = sorted({h.result for h in self.hosts} - set(known))  # pull mode: stalled, waiting, running
        counts = {k: len(self.by_result(k)) for k in (*known, *others)}
        if self.dry_run and not (counts[FAILED] or counts[INTERRUPTED]):
            n = len(self.hosts)
            return (f"dry run of {self.stage}: {n} {'host' if n == 1 else 'hosts'} planned, nothing was run "
                    f"({self.ended - self.started:.1f}s)")
        parts = [f"{n} {k}" for k, n in counts.items() if n]
        what = "dry run" if self.dry_run else self.kind
        canary = "; stopped at the canary" if self.stopped_at_canary else ""
        return (f"{what} of {self.stage}: {', '.join(parts)} in {self.ended - self.started:.1f}s; gate {self.gate}"
                f"{canary}")


def _signal_name(signum: int) -> str:
    """``SIGINT (Ctrl-C)`` rather than ``signal 2``: the words an operator knows."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
    return f"{name} (Ctrl-C)" if signum == signal.SIGINT else name


def failure_for(result: RunResult, lost_lock: str | None = None) -> PampaError | None:
    """The error a finished run ends with, or None when every host succeeded."""
    kind, stage = result.kind, result.stage
    if result.interrupted_by:
        return Interrupted(f"{kind} interrupted by {_signal_name(result.interrupted_by)}; "
                           f"`pampa status {stage}` shows where each host stopped", result.interrupted_by)
    if lost_lock:
        return LockLost(f"{kind} of {stage} stopped starting hosts: its deploy lock was {lost_lock}; "
                        f"`pampa status {stage}` shows where each host is")
    if not result.ok and result.stopped_at_canary:
        rest = (result.canary or {}).get("rest") or []
        return DeployFailed(f"{kind} of {stage} stopped at the canary: {result.stopped_at_canary}; "
                            f"{len(rest)} {'host was' if len(rest) == 1 else 'hosts were'} not touched: "
                            f"{', '.join(rest[:10])}{' ...' if len(rest) > 10 else ''}")
    if not result.ok:
        bad = [h.host for h in result.hosts if not h.ok]
        total = f"{len(result.hosts)} {'host' if len(result.hosts) == 1 else 'hosts'}"
        return DeployFailed(f"{kind} of {stage} did not succeed on {len(bad)} of {total}: "
                            f"{', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}")
    return None
