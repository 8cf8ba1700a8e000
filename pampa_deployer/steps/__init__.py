"""The step registry: name -> builder. Each builder turns a StepContext into actions, without I/O.

A stage's ``steps.NAME.run`` replaces a builder's commands; ``steps.NAME.enabled: false``
turns a step off; any other name with ``run`` is a custom step.
"""
from __future__ import annotations

from typing import Callable

from .actions import Action, Command, HealthCheck, OpenGate, ReportVersion, Run, StepContext, Upload
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

__all__ = ["Action", "BUILDERS", "Command", "HealthCheck", "OpenGate", "ReportVersion", "Run", "StepContext", "Upload"]
