"""Inventory + options -> Plan: each host's steps with their commands built, and the gate. No I/O.

``pampa plan`` prints a Plan; ``--dry-run`` runs one on the dry-run backend; the
engine runs one over SSH. All three see exactly the same commands.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from .errors import ConfigError
from .inventory.model import Host, Stage
from .inventory.validate import suggest
from .sequences import GATE_ROLE, ordered_union, step_order
from .shell import TemplateError, render
from .steps import BUILDERS, Run, StepContext, default_timeout
from .steps.git import git_reset_to


@dataclass(frozen=True)
class StepPlan:
    """One step of one host: its name and the actions it will run."""

    name: str
    actions: tuple
    custom: bool = False


@dataclass(frozen=True)
class HostPlan:
    """A host's place in the run: whether it waits for the gate or helps open it, and its steps."""

    host: Host
    roles: tuple[str, ...]
    gated: bool
    opens_gate: bool
    steps: tuple[StepPlan, ...]


@dataclass(frozen=True)
class Plan:
    """What a deploy (or rollback) will do, host by host."""

    stage: Stage
    kind: str
    branch: str
    hosts: tuple[HostPlan, ...]
    revision: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def gate_hosts(self) -> tuple[str, ...]:
        return tuple(h.host.name for h in self.hosts if h.opens_gate)

    @property
    def has_gate(self) -> bool:
        return any(h.gated for h in self.hosts)


def select_hosts(stage: Stage, roles: Iterable[str] | None, names: Iterable[str] | None) -> list[Host]:
    """Hosts of the stage narrowed by ``--roles`` and ``--hosts`` (names or shell globs)."""
    hosts = list(stage.hosts)
    if roles:
        roles = list(roles)
        for role in roles:
            if role not in stage.roles:
                raise ConfigError(f"--roles: unknown role '{role}'{suggest(role, stage.roles)}; "
                                  f"known: {', '.join(stage.roles)}")
        hosts = [h for h in hosts if set(h.roles) & set(roles)]
    if names:
        wanted = list(names)
        all_names = [h.name for h in stage.hosts]
        for pattern in wanted:
            if not fnmatch.filter(all_names, pattern):
                raise ConfigError(f"--hosts: no host '{pattern}' in stage {stage.name}"
                                  f"{suggest(pattern, all_names)}; hosts: {', '.join(all_names)}")
        hosts = [h for h in hosts if any(fnmatch.fnmatchcase(h.name, p) for p in wanted)]
    if not hosts:
        raise ConfigError(f"stage {stage.name}: no host matches --roles/--hosts; "
                          f"hosts: {', '.join(h.name for h in stage.hosts)}")
    return hosts


def template_variables(stage: Stage, host: Host) -> dict:
    """The variables a command template may use on ``host``."""
    return {**dict(host.vars), "app": stage.setting("app"), "stage": stage.name, "name": host.name,
            "address": host.address, "path": host.path, "branch": host.branch,
            "repo": stage.setting("repo"), "roles": ",".join(host.roles), "user": host.user or ""}


def _override(stage: Stage, name: str, spec: Mapping, ctx: StepContext) -> tuple:
    runs = spec["run"]
    runs = [runs] if isinstance(runs, (str, int)) else list(runs)
    actions = []
    for template in runs:
        template = str(template)
        try:
            script = render(template, ctx.variables)
        except TemplateError as e:
            where = stage.origins.get(f"steps.{name}.run") or stage.file
            raise ConfigError(f"{where}: steps.{name}.run: unknown variable {{{e.args[0]}}} in {template!r}; "
                              f"known: {', '.join(sorted(ctx.variables))}") from None
        except (ValueError, IndexError) as e:
            where = stage.origins.get(f"steps.{name}.run") or stage.file
            raise ConfigError(f"{where}: steps.{name}.run: bad template {template!r}: {e}") from None
        actions.append(Run(ctx.command(script)))
    return tuple(actions)


def host_steps(stage: Stage, host: Host, roles: tuple[str, ...], kind: str = "deploy",
               revision: str | None = None) -> tuple[StepPlan, ...]:
    """Build the steps ``host`` runs for ``roles`` (the union of their sequences, each step once)."""
    step_specs: Mapping = stage.setting("steps") or {}
    custom = {n: s for n, s in step_specs.items() if n not in BUILDERS}
    order = step_order(custom)
    sequences = [stage.roles[r].sequence for r in roles]
    sequences.append([n for n, s in custom.items() if set(s.get("roles") or []) & set(roles)])
    names = ordered_union(sequences, order)
    if kind == "rollback":
        names = _rollback_steps(names)
    ctx = StepContext(host=host, settings=stage.settings, variables=template_variables(stage, host),
                      redactor=stage.redactor, secret_files=stage.secret_files)
    steps = []
    for name in names:
        spec = step_specs.get(name) or {}
        if spec.get("enabled") is False:
            continue
        if kind == "rollback" and name == "git_reset":
            actions: tuple = git_reset_to(ctx, revision)
        elif spec.get("run") is not None:
            actions = _override(stage, name, spec, ctx)
        else:
            actions = BUILDERS[name](ctx)
        timeout = spec.get("timeout") or default_timeout(name, stage.setting("step_timeout"))
        if timeout:
            actions = tuple(Run(_with_timeout(a.command, timeout)) if isinstance(a, Run) else a
                            for a in actions)
        steps.append(StepPlan(name=name, actions=actions, custom=name in custom))
    return tuple(steps)


def _with_timeout(command, timeout):
    return replace(command, timeout=timeout)


_ROLLBACK_KEEP = {"git_reset", "bundle", "restart_puma", "restart_processes", "restart_workers",
                  "report_version", "open_gate"}


def _rollback_steps(names: list[str]) -> list[str]:
    """A rollback resets code (where the role manages code), re-bundles, restarts, reports and gates.

    No fetch (the target must already be on the host), no secrets, and no migrations:
    database migrations are not reverted.
    """
    return [n for n in names if n in _ROLLBACK_KEEP]


def build_plan(stage: Stage, roles: Iterable[str] | None = None, hosts: Iterable[str] | None = None,
               kind: str = "deploy", revision: str | None = None) -> Plan:
    """The plan for a deploy (``kind='deploy'``) or a rollback to ``revision``."""
    selected = select_hosts(stage, roles, hosts)
    role_filter = set(roles or [])
    has_kepler = any(GATE_ROLE in h.roles and (not role_filter or GATE_ROLE in role_filter) for h in selected)
    host_plans = []
    for host in selected:
        host_roles = tuple(r for r in host.roles if not role_filter or r in role_filter)
        opens = GATE_ROLE in host_roles
        gated = (not opens) and has_kepler and any(stage.roles[r].gated for r in host_roles)
        host_plans.append(HostPlan(host=host, roles=host_roles, gated=gated, opens_gate=opens,
                                   steps=host_steps(stage, host, host_roles, kind, revision)))
    # Keplers first, then ungated hosts, then gated ones: the scheduler starts them in this order.
    host_plans.sort(key=lambda p: (0 if p.opens_gate else 2 if p.gated else 1))
    notes = []
    if kind == "rollback":
        notes.append("database migrations are not reverted by a rollback")
    if not has_kepler and any(stage.roles[r].gated for h in host_plans for r in h.roles):
        notes.append("no kepler host in this run: gated roles start without waiting")
    branch = next(iter({h.host.branch for h in host_plans}), stage.setting("branch"))
    return Plan(stage=stage, kind=kind, branch=branch, hosts=tuple(host_plans), revision=revision,
                notes=tuple(notes))


__all__ = ["HostPlan", "Plan", "StepPlan", "build_plan", "host_steps", "select_hosts"]
