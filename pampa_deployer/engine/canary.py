"""The canary: the first N hosts of each role deploy (and pass their health checks) before the rest start.

A small object the rollout asks three things: which hosts are the canary (``split``), whether the
canary passed (``verdict``), and, once it did, whether the rest may go (``hold``: wait
``--canary-wait`` seconds, or ask at a terminal with ``--canary-pause``). If a canary host fails, or
the wait is interrupted, or the operator says no, the rest are never started: not connected to, no
command, no revision-log line; each is reported skipped, naming why.

The kepler gate keeps its meaning: a gated host starts only after every kepler of the run has
finished. So when the run has gated hosts, every kepler is in the canary (a gated role's canary
waits for all of them, and they cannot wait for the canary's end); otherwise keplers are a role
like the others.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ..plan import HostPlan, Plan
from .results import HostResult
from .scheduler import count_of

#: What a canary can end as, in the report.
PASSED, FAILED, DECLINED, INTERRUPTED, WHOLE = "passed", "failed", "declined", "interrupted", "whole fleet"

#: Asks the operator (at a terminal) whether the rest may go: (question, should_stop) -> yes.
Confirm = Callable[[str, Callable[[], bool]], bool]


@dataclass(frozen=True)
class CanaryPlan:
    """Which hosts are the canary, and what the run should be told about the choice."""

    hosts: tuple[str, ...]
    rest: tuple[str, ...]
    notes: tuple[str, ...] = ()


def choose(plan: Plan, count: int | str) -> CanaryPlan:
    """The first ``count`` (N, or N% of the role, at least 1) hosts of each role of the run, in plan order;
    every kepler too when the run has gated hosts. ValueError for a count that is not one."""
    roles: dict[str, list[str]] = {}
    for hp in plan.hosts:
        for role in hp.roles:
            roles.setdefault(role, []).append(hp.host.name)
    chosen: set[str] = set()
    for names in roles.values():
        chosen.update(names[:count_of(count, len(names))])
    notes = []
    if plan.has_gate:
        openers = set(plan.gate_hosts)
        if openers - chosen:
            notes.append(f"canary: every kepler host is in it ({', '.join(plan.gate_hosts)}): the gated roles' "
                         "canaries start only after every kepler finished")
        chosen |= openers
    unchecked = [hp.host.name for hp in plan.hosts if hp.host.name in chosen
                 and not any(s.name == "health_check" for s in hp.steps)]
    if unchecked:
        notes.append(f"canary: {', '.join(unchecked)} {'has' if len(unchecked) == 1 else 'have'} no health check "
                     "(checks:): passing means their steps succeeded")
    hosts = tuple(hp.host.name for hp in plan.hosts if hp.host.name in chosen)
    rest = tuple(hp.host.name for hp in plan.hosts if hp.host.name not in chosen)
    if not rest:
        notes.append("canary: every host of this run is in the canary (no role has more hosts than it takes)")
    return CanaryPlan(hosts=hosts, rest=rest, notes=tuple(notes))


class Canary:
    """The canary phase of one run: choose, judge, then wait or ask before the rest go."""

    def __init__(self, chosen: CanaryPlan, wait: float = 0.0, confirm: Confirm | None = None):
        self.chosen = chosen
        self.wait = wait
        self.confirm = confirm
        self.state: str | None = None     # PASSED, FAILED, DECLINED, INTERRUPTED or WHOLE, once known
        self.reason: str = ""

    def split(self, hosts: list[HostPlan]) -> tuple[list[HostPlan], list[HostPlan]]:
        canary = set(self.chosen.hosts)
        return [hp for hp in hosts if hp.host.name in canary], [hp for hp in hosts if hp.host.name not in canary]

    def verdict(self, results: list[HostResult | None]) -> str | None:
        """Why the rest must not start (a canary host did not end ok), or None when the canary passed."""
        bad = [r for r in results if r is None or not r.ok]
        if not bad:
            return None
        self.state = FAILED
        worst = next((r for r in bad if r is not None and r.result == "failed"), bad[0])
        others = len(bad) - 1
        self.reason = ("a canary host did not end" if worst is None else
                       f"{worst.host} {worst.result}" + (f" at {worst.failed_step}" if worst.failed_step else "")) \
            + (f" (and {others} other canary {'host' if others == 1 else 'hosts'})" if others else "")
        return self.reason

    def hold(self, stopping: Callable[[], bool], announce: Callable[[str], None], dry_run: bool = False) -> str | None:
        """The canary passed: wait, or ask; why the rest must not start, or None when they may."""
        rest = len(self.chosen.rest)
        if self.wait > 0 and not dry_run:
            announce(f"canary passed on {', '.join(self.chosen.hosts)}; the other {rest} "
                     f"{'host starts' if rest == 1 else 'hosts start'} in {self.wait:g}s (Ctrl-C: they stay untouched)")
            deadline = time.monotonic() + self.wait
            while time.monotonic() < deadline:
                if stopping():
                    return self.stopped(INTERRUPTED, "interrupted while waiting after the canary")
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        if self.confirm is not None and not dry_run:
            question = (f"canary passed on {', '.join(self.chosen.hosts)}. Deploy the other {rest} "
                        f"{'host' if rest == 1 else 'hosts'} ({', '.join(self.chosen.rest[:10])}"
                        f"{' ...' if rest > 10 else ''})? [y/N] ")
            if not self.confirm(question, stopping):
                if stopping():
                    return self.stopped(INTERRUPTED, "interrupted while asking whether to go on after the canary")
                return self.stopped(DECLINED, "the canary passed, but going on was not confirmed at the terminal")
        if stopping():
            return self.stopped(INTERRUPTED, "interrupted after the canary")
        self.state = PASSED
        return None

    def stopped(self, state: str, reason: str) -> str:
        """The canary ends the run here (``state``), for ``reason``; returns the reason."""
        self.state, self.reason = state, reason
        return reason

    def summary(self) -> dict:
        """The report's ``canary``: its hosts, the rest, how it ended and why the rest did not go."""
        return {"hosts": list(self.chosen.hosts), "rest": list(self.chosen.rest), "result": self.state,
                "reason": self.reason or None}
