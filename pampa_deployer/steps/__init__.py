"""The step registry: name -> builder. Each builder turns a StepContext into actions, without I/O.

A stage's ``steps.NAME.run`` replaces a builder's commands; ``steps.NAME.enabled: false``
turns a step off; any other name with ``run`` is a custom step.
"""
from __future__ import annotations

from typing import Callable

from .actions import Action, Command, HealthCheck, OpenGate, ReportVersion, Restart, Run, StepContext, Upload
from .bundle import bundle
from .gate import open_gate
from .git import git_fetch, git_reset, switch_release
from .health import health_check
from .migrate import migrate
from .report import report_version
from .secrets import secrets
from .services import restart_processes, restart_puma, restart_workers

Builder = Callable[[StepContext], tuple]

BUILDERS: dict[str, Builder] = {
    "git_fetch": git_fetch,
    "git_reset": git_reset,
    "secrets": secrets,
    "migrate": migrate,
    "bundle": bundle,
    "switch_release": switch_release,
    "restart_puma": restart_puma,
    "restart_processes": restart_processes,
    "restart_workers": restart_workers,
    "health_check": health_check,
    "report_version": report_version,
    "open_gate": open_gate,
}

#: Steps that can run long get a longer default timeout than the stage's ``step_timeout``.
LONG_TIMEOUTS: dict[str, float] = {
    "migrate": 3600.0,
    "bundle": 1800.0,
}


def default_timeout(name: str, stage_timeout: float | None) -> float | None:
    """A step's timeout when it sets none: the stage's ``step_timeout``, or longer for long steps."""
    long = LONG_TIMEOUTS.get(name)
    if stage_timeout is None:
        return long
    return max(stage_timeout, long) if long else stage_timeout


__all__ = ["Action", "BUILDERS", "LONG_TIMEOUTS", "default_timeout", "Command", "HealthCheck", "OpenGate", "ReportVersion", "Restart", "Run", "StepContext",
           "Upload"]
