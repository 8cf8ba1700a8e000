"""The four role sequences of the seed, and how a host's roles combine into one step list."""
from __future__ import annotations

from typing import Iterable, Mapping

#: Canonical order of the built-in steps; a host with several roles runs the union in this order.
STEP_ORDER = (
    "git_fetch", "git_reset", "secrets", "migrate", "bundle",
    "restart_puma", "restart_processes", "restart_workers", "report_version", "open_gate",
)

#: The seed's sequences (the original brief's "Sequences"; README.md lists them).
DEFAULT_SEQUENCES: Mapping[str, tuple[str, ...]] = {
    "kepler": ("git_fetch", "git_reset", "secrets", "migrate", "bundle",
               "restart_puma", "restart_processes", "report_version", "open_gate"),
    "euler": ("bundle", "restart_puma", "report_version"),
    "newton": ("git_fetch", "git_reset", "secrets", "migrate", "bundle",
               "restart_workers", "report_version"),
    "copernico": ("bundle", "restart_processes", "report_version"),
}

#: Roles that wait for the kepler gate unless a stage says otherwise.
DEFAULT_GATED = {"kepler": False, "euler": True, "newton": False, "copernico": True}

#: The role whose hosts open the gate.
GATE_ROLE = "kepler"


def ordered_union(sequences: Iterable[Iterable[str]], order: list[str]) -> list[str]:
    """Union of several role sequences, each step once, in the stage's step order."""
    wanted = {step for seq in sequences for step in seq}
    return [step for step in order if step in wanted]


def step_order(custom_steps: Mapping[str, Mapping]) -> list[str]:
    """The built-in order with custom steps inserted after the step they name (or at the end)."""
    order = list(STEP_ORDER)
    pending = dict(custom_steps)
    # Custom steps may hang off other custom steps; insert until nothing moves.
    while pending:
        placed = False
        for name, spec in list(pending.items()):
            after = spec.get("after")
            if after is None:
                # Before the report/gate tail so a custom step is part of what gets reported.
                order.insert(order.index("report_version"), name)
            elif after in order:
                order.insert(order.index(after) + 1, name)
            else:
                continue
            del pending[name]
            placed = True
        if not placed:
            order.extend(pending)
            break
    return order
