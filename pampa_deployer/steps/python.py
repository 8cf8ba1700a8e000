"""Steps written in Python: the one action of a task step, calling the task on the host.

The stage's ``tasks`` modules are loaded with the stage (``inventory/tasks.py``); the call
itself runs in the engine (``engine/tasks/``).
"""
from __future__ import annotations

from ..inventory.tasks import PyTask
from .actions import CallTask, StepContext


def call_task(ctx: StepContext, task: PyTask, stage, roles: tuple[str, ...], kind: str = "deploy",
              target: str | None = None, timeout: float | None = None) -> tuple[CallTask, ...]:
    """The step's one action: call ``task`` on ``ctx.host`` with ``c.config.pampa`` filled in."""
    host = ctx.host
    info = {"stage": stage.name, "kind": kind, "step": task.name, "host": host.name, "address": host.address,
            "roles": list(roles), "branch": host.branch, "path": ctx.code_path, "target": target,
            "vars": dict(ctx.variables), "settings": _plain(stage.settings)}
    return (CallTask(name=task.name, source=task.source, doc=task.doc, body=task.body, base=ctx.command(""),
                     info=info, timeout=timeout, stage=stage, host=host, roles=tuple(roles),
                     layout=ctx.layout),)


def _plain(node):
    """Settings as plain dicts and lists (invoke's config wraps dicts; mapping proxies are not dicts)."""
    if hasattr(node, "items"):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node
