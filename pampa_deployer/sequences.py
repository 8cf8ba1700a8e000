"""The four role sequences of the seed, and how a host's roles combine into one step list."""
from __future__ import annotations

from typing import Iterable, Mapping

#: Canonical order of the built-in steps; a host with several roles runs the union in this order.
#: Gems are installed before migrations (``bundle exec sequel`` refuses to run while a gem of
#: Gemfile.lock is missing); ``bundler.before_migrate: false`` restores the seed's literal order.
#: ``health_check`` follows the restarts and runs on every host that has a check for its roles.
#: ``switch_release`` (releases strategy) follows migrate on every host whose sequence builds a release.
STEP_ORDER = (
    "git_fetch", "git_reset", "secrets", "bundle", "migrate", "switch_release",
    "restart_puma", "restart_processes", "restart_workers", "health_check", "report_version", "open_gate",
)

#: Built-in steps that skip work a release does not need (commands/skip.py), unless
#: ``steps.NAME.always`` or ``--no-skip``.
SKIPPING_STEPS = ("bundle", "migrate")

#: The seed's sequences (the original brief's "Sequences"; README.md lists them), with bundle before migrate.
DEFAULT_SEQUENCES: Mapping[str, tuple[str, ...]] = {
    "kepler": ("git_fetch", "git_reset", "secrets", "bundle", "migrate",
               "restart_puma", "restart_processes", "report_version", "open_gate"),
    "euler": ("bundle", "restart_puma", "report_version"),
    "newton": ("git_fetch", "git_reset", "secrets", "bundle", "migrate",
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


def step_order(custom_steps: Mapping[str, Mapping], sequences: Iterable[Iterable[str]] = (),
               bundle_first: bool = True) -> list[str]:
    """The built-in order with custom steps inserted after the step they name (or at the end).

    ``bundle_first=False`` is the seed's literal order: migrate, then bundle. Steps that only
    ``sequences`` name (Python task steps) are placed first, after the step before them in their
    sequence, so a custom step may also run ``after`` one of them.
    """
    order = list(STEP_ORDER)
    if not bundle_first:
        at = order.index("bundle")
        order[at], order[at + 1] = order[at + 1], order[at]
    order = place(order, [[n for n in seq if n not in custom_steps] for seq in sequences])
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


def place(order: list[str], sequences: Iterable[Iterable[str]]) -> list[str]:
    """Steps a sequence names that ``order`` lacks (Python task steps) go right after the step before them."""
    for seq in sequences:
        seq = list(seq)
        for i, name in enumerate(seq):
            if name in order:
                continue
            before = next((s for s in reversed(seq[:i]) if s in order), None)
            order.insert(order.index(before) + 1 if before is not None else 0, name)
    return order
