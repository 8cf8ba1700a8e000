"""What a run the agent did not finish left on the node, said from what the node shows.

Under the releases strategy the one thing that matters after a crash is where ``current``
points: the switch is one ``rename(2)``, so it is either the release that was live before
the request or the one the request built, never half of each. The agent notes ``current``
in its journal before it runs anything, and the next agent reads it again and says which.
"""
from __future__ import annotations

from ..commands.releases import current_name
from ..engine.backends.local import LocalBackend
from ..steps.releases import layout_of


def release_root(stage, node: str) -> str | None:
    """The node's releases root (its code path) when the stage uses the releases strategy, else None."""
    host = next((h for h in stage.hosts if h.name == node), None)
    if host is None or layout_of(stage.settings, host.path, "-") is None:
        return None
    return host.path


def read_current(node: str, home: str | None, root: str) -> str | None:
    """Where ``ROOT/current`` points on this node (``releases/NAME``), or None when there is none."""
    out = LocalBackend(node, home).run(current_name(root))
    return (out.stdout.strip() or None) if out.ok else None


def detail(step: str | None, release: tuple[str | None, str | None] | None = None) -> str:
    """The interrupted run's detail: the step it stopped in, and (releases) ``current`` before and now."""
    said = (f"the agent stopped during {step}" if step else "the agent stopped before its first step") \
        + "; not run again"
    if release is None:
        return said
    before, now = release
    if now == before:
        return said + f"; current still {now or 'absent'} (not switched)"
    after = f"the steps after {step}" if step else "its steps"
    return said + (f"; current was switched to {now or 'nothing'} (from {before or 'no release'}); "
                   f"{after} did not run")
