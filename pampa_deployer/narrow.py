"""Narrowing a plan to chosen steps (``pampa run STAGE STEP...``) or without some (``--skip``).

The narrowed plan keeps everything else of a deploy: the lock, the gate, reports. Hosts left
with no step drop out. The gate still holds when a kepler host remains: keplers run the
chosen steps first, then gated roles start; without one, gated roles start at once (a note
says so, as ``build_plan`` does for ``--roles``).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from .errors import ConfigError
from .inventory.validate import suggest
from .plan import Plan
from .plan import known_steps as stage_steps


def known_steps(plan: Plan) -> list[str]:
    """Every step name the stage knows: built-in, custom and written in Python (``plan.known_steps``)."""
    return stage_steps(plan.stage)


def _check(names: Iterable[str], plan: Plan, option: str) -> list[str]:
    names = list(names)
    known = known_steps(plan)
    for name in names:
        if name not in known:
            raise ConfigError(f"{option}: unknown step '{name}'{suggest(name, known)}; steps of stage "
                              f"{plan.stage.name}: {', '.join(known)}")
    return names


def narrow(plan: Plan, only: Iterable[str] | None = None, skip: Iterable[str] | None = None,
           kind: str | None = None) -> Plan:
    """The plan with only the steps in ``only`` (if given) and none of ``skip``."""
    only = set(_check(only, plan, "pampa run")) if only else None
    skip = set(_check(skip, plan, "--skip")) if skip else set()
    if not only and not skip:
        return replace(plan, kind=kind or plan.kind)
    hosts = []
    for hp in plan.hosts:
        steps = tuple(s for s in hp.steps if (only is None or s.name in only) and s.name not in skip)
        if steps:
            hosts.append(replace(hp, steps=steps))
    if not hosts:
        chosen = ", ".join(sorted(only)) if only else "the remaining steps"
        raise ConfigError(f"stage {plan.stage.name}: no selected host runs {chosen}; check the roles' sequences "
                          "with `pampa plan`")
    notes = [n for n in plan.notes if not n.startswith("no kepler host in this run")]
    has_kepler = any(h.opens_gate for h in hosts)
    if not has_kepler and any(plan.stage.roles[r].gated for h in hosts for r in h.roles):
        hosts = [replace(h, gated=False) for h in hosts]
        notes.append("no kepler host in this run: gated roles start without waiting")
    if skip:
        notes.append(f"skipped steps: {', '.join(s for s in known_steps(plan) if s in skip)}")
    return replace(plan, hosts=tuple(hosts), notes=tuple(notes), kind=kind or plan.kind)
