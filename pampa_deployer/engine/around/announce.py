"""What happens around a run, outside the fleet: local hooks and webhook notifications.

``before`` runs the ``pre-KIND`` hook (a failure refuses the run before anything is
contacted) and sends the start notification; ``after`` sends the end notification and
runs ``post-KIND`` or ``on-failure``. Hook and webhook failures after the run are warnings.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Callable

from ... import provenance
from .hooks import Hooks, hook_env
from .notify import Notifier, finished_payload, started_payload

#: Kinds whose hooks exist (``pampa run`` shares the deploy's).
HOOK_KIND = {"deploy": "deploy", "run": "deploy", "rollback": "rollback"}


class Announcer:
    """Hooks and webhooks around the runs of one stage; ``rundir`` (optional) names the report for hooks;
    ``message`` is the run's ``-m`` (masked like any text that may hold a secret)."""

    def __init__(self, stage, warn: Callable[[str], None], hook_line: Callable[[str, str], None], rundir=None,
                 message: str | None = None):
        self.stage = stage
        self.message = stage.redactor.mask(message) if message else None
        self.user = provenance.user()
        self.warn = warn
        self.rundir = rundir
        self.hooks = Hooks(Path(stage.root) / "hooks", stage.hooks.timeout, hook_line)
        self.notifier = Notifier.from_stage(stage, warn)
        self.started = time.time()

    def before(self, plan) -> None:
        """pre-KIND hook (raises ``Refused``), then the start notification."""
        self.hooks.pre(HOOK_KIND.get(plan.kind, plan.kind), self._env(plan))
        self.started = time.time()
        if self.notifier is not None:
            self.notifier.send(started_payload(self.stage.name, plan.kind, plan.branch, self.user,
                                               _hosts(plan), plan.revision, self.message))

    def after(self, plan, result=None, error: BaseException | None = None) -> None:
        """End notification, then ``post-KIND`` (success) or ``on-failure``; never raises for them."""
        outcome, failed, revision = _outcome(plan, result, error)
        duration = time.time() - self.started
        if self.notifier is not None:
            self.notifier.send(finished_payload(self.stage.name, plan.kind, plan.branch, self.user, _hosts(plan),
                                                outcome, failed, duration, revision, self.message))
        run_dir = getattr(self.rundir, "path", None)
        report = run_dir / "report.json" if run_dir is not None and (run_dir / "report.json").exists() else None
        env = self._env(plan, result=outcome, failed=failed, revision=revision, report=report, run_dir=run_dir,
                        duration=duration)
        hook = self.hooks.post(HOOK_KIND.get(plan.kind, plan.kind), outcome == "ok", env)
        if hook is not None and not hook.ok:
            why = "timed out" if hook.timed_out else f"exited {hook.exit_code}"
            self.warn(f"hook {hook.path} {why}")

    def _env(self, plan, result: str | None = None, failed=None, revision=None, report=None, run_dir=None,
             duration=None) -> dict[str, str]:
        return hook_env(self.stage.name, plan.kind, plan.branch, self.user, _hosts(plan),
                        revision or plan.revision, result, failed,
                        str(Path(report).resolve()) if report else None,
                        str(Path(run_dir).resolve()) if run_dir else None, duration, self.message)


def _hosts(plan) -> list[str]:
    return [h.host.name for h in plan.hosts]


def _outcome(plan, result, error) -> tuple[str, list[str], str | None]:
    """(ok|failed|interrupted|refused, failed hosts, the revision the hosts ended on)."""
    if result is None:
        return ("interrupted" if isinstance(error, KeyboardInterrupt) else "refused"), [], plan.revision
    failed = [h.host for h in result.hosts if not h.ok]
    after = Counter(h.revision_after for h in result.hosts if h.revision_after)
    revision = after.most_common(1)[0][0] if after else result.revision
    outcome = "interrupted" if result.interrupted_by else ("ok" if result.ok else "failed")
    return outcome, failed, revision
