"""Inventory + options -> Plan: each host's steps with their commands built, and the gate. No I/O.

``pampa plan`` prints a Plan; ``--dry-run`` runs one on the dry-run backend; the
engine runs one over SSH. All three see exactly the same commands.
"""
from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from .errors import ConfigError
from .inventory.model import Host, Stage
from .inventory.validate import suggest
from .sequences import GATE_ROLE, STEP_ORDER, ordered_union, step_order
from .shell import TemplateError, render
from .steps import BUILDERS, Restart, Run, StepContext, default_timeout
from .steps.git import git_reset_to
from .steps.health import checks_for, health_check
from .steps.python import call_task
from .steps.releases import Layout, layout_of, switch_back


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
    layout: Layout | None = None  # releases strategy: where the host's releases live


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


def template_variables(stage: Stage, host: Host, layout: Layout | None = None) -> dict:
    """The variables a command template may use on ``host``.

    Under the releases strategy ``{path}`` is ``ROOT/current`` (what restarts act on),
    ``{release_path}`` the release being built and ``{deploy_to}`` the root; in place all three are
    the checkout.
    """
    live = layout.current if layout is not None else host.path
    return {**dict(host.vars), "app": stage.setting("app"), "stage": stage.name, "name": host.name,
            "address": host.address, "path": live, "branch": host.branch,
            "release_path": (layout.release if layout.builds else live) if layout is not None else host.path,
            "deploy_to": host.path,
            "repo": stage.setting("repo"), "roles": ",".join(host.roles), "user": host.user or ""}


def release_stamp(at: float | None = None) -> str:
    """The time part of this run's release names (UTC, sorts by time): 20261126142400."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(at))


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
               revision: str | None = None, stamp: str | None = None,
               skip_unchanged: bool = True) -> tuple[StepPlan, ...]:
    """Build the steps ``host`` runs for ``roles`` (the union of their sequences, each step once).

    ``skip_unchanged`` lets bundle and migrate skip work the release does not need (never for
    ``pampa run``, which runs the steps it is given).
    """
    layout = layout_of(stage.settings, host.path, stamp or release_stamp())
    step_specs: Mapping = stage.setting("steps") or {}
    custom = {n: s for n, s in step_specs.items() if n not in BUILDERS}
    order = step_order(custom, [r.sequence for r in stage.roles.values() if r.sequence],
                       bundle_first=stage.setting("bundler.before_migrate", True) is not False)
    sequences = [stage.roles[r].sequence for r in roles]
    sequences.append([n for n, s in custom.items() if set(s.get("roles") or []) & set(roles)])
    if checks_for(stage.settings, roles):
        sequences.append(["health_check"])  # checks follow the restarts of whatever sequence runs
    if layout is not None:
        builds = any("git_reset" in seq for seq in sequences)
        layout = replace(layout, builds=builds)
        if builds:
            sequences.append(["switch_release"])  # a host that builds a release makes it current
    names = ordered_union(sequences, order)
    if kind == "rollback":
        names = _rollback_steps(names, layout)
    ctx = replace(step_context(stage, host, layout), skip_unchanged=skip_unchanged and kind != "run")
    return tuple(build_step(stage, ctx, name, roles, kind, revision) for name in names
                 if (step_specs.get(name) or {}).get("enabled") is not False)


def step_context(stage: Stage, host: Host, layout: Layout | None = None) -> StepContext:
    return StepContext(host=host, settings=stage.settings, variables=template_variables(stage, host, layout),
                       redactor=stage.redactor, secret_files=stage.secret_files, layout=layout)


def build_step(stage: Stage, ctx: StepContext, name: str, roles: tuple[str, ...], kind: str = "deploy",
               revision: str | None = None) -> StepPlan:
    """One step's actions on ``ctx.host``: a rollback's reset or switch, an override (``run``), a built-in
    or a step written in Python."""
    step_specs = stage.setting("steps") or {}
    spec = step_specs.get(name) or {}
    if kind == "rollback" and name == "switch_release":
        actions: tuple = switch_back(ctx, ctx.layout, str(revision))
    elif kind == "rollback" and name == "git_reset":
        actions = git_reset_to(ctx, revision)
    elif spec.get("run") is not None:
        actions = _override(stage, name, spec, ctx)
    elif name not in BUILDERS and name in stage.tasks:
        actions = call_task(ctx, stage.tasks[name], stage, roles, kind, revision if kind == "rollback" else None,
                            spec.get("timeout") or default_timeout(name, stage.setting("step_timeout")))
    else:
        actions = health_check(ctx, roles) if name == "health_check" else _built(stage, name, ctx)
    timeout = spec.get("timeout") or default_timeout(name, stage.setting("step_timeout"))
    if timeout:
        # A restart that waits (restart_timeout, stop_timeout) gets at least what it may wait, unless the
        # stage sets the step's timeout itself.
        actions = tuple(replace(a, command=_with_timeout(a.command, timeout if spec.get("timeout") else
                                                         max(timeout, a.command.timeout or 0)))
                        if isinstance(a, (Run, Restart)) else a for a in actions)
    custom = name not in BUILDERS and (name in step_specs or name in stage.tasks)
    return StepPlan(name=name, actions=actions, custom=custom)


def known_steps(stage: Stage) -> list[str]:
    """Every step name the stage knows, for ``pampa run STAGE STEP``: built-in, custom, then Python tasks."""
    custom = [n for n in (stage.setting("steps") or {}) if n not in STEP_ORDER]
    return list(STEP_ORDER) + custom + [n for n in stage.tasks if n not in custom]


_UNIT_TEMPLATES = ("units.restart", "units.pid_file", "units.stop")
_TEMPLATE_SETTINGS = {"restart_puma": ("units.puma", *_UNIT_TEMPLATES, "units.reload", "units.puma_state"),
                      "restart_processes": ("units.processes", *_UNIT_TEMPLATES),
                      "restart_workers": ("units.workers", *_UNIT_TEMPLATES)}


def _built(stage: Stage, name: str, ctx: StepContext) -> tuple:
    """A built-in step's actions; a template setting naming an unknown variable is the operator's error."""
    if name == "git_fetch" and not str(ctx.variables.get("repo") or "").strip():
        raise ConfigError(f"{stage.file}: repo: missing; set the git URL every host fetches from, e.g. "
                          "`repo: git@github.com:acme/mysaas.git` (here or in stages/common.yml)")
    try:
        return BUILDERS[name](ctx)
    except (KeyError, IndexError, ValueError) as e:
        keys = _TEMPLATE_SETTINGS.get(name, (f"steps.{name}",))
        keys = tuple(k for k in keys if f"{{{e.args[0]}}}" in str(stage.setting(k))) or keys \
            if isinstance(e, KeyError) else keys
        where = next((stage.origins[k] for k in keys if k in stage.origins), stage.file)
        what = f"unknown variable {{{e.args[0]}}}" if isinstance(e, KeyError) else f"bad template: {e}"
        known = ", ".join(sorted({*ctx.variables, "unit"}))
        raise ConfigError(f"{where}: {' or '.join(keys)}: {what}; known: {known}") from None


def _with_timeout(command, timeout):
    return replace(command, timeout=timeout)


_ROLLBACK_KEEP = {"git_reset", "bundle", "restart_puma", "restart_processes", "restart_workers",
                  "health_check", "report_version", "open_gate"}


def _rollback_steps(names: list[str], layout: Layout | None = None) -> list[str]:
    """A rollback resets code (where the role manages code), re-bundles, restarts, checks, reports and gates.

    No fetch (the target must already be on the host), no secrets, and no migrations:
    database migrations are not reverted. Under the releases strategy the reset is one switch of
    ``current`` back to an intact release, so there is nothing to bundle.
    """
    if layout is not None:
        return [n for n in names if n in _ROLLBACK_KEEP - {"git_reset", "bundle"} or n == "switch_release"]
    return [n for n in names if n in _ROLLBACK_KEEP]


def _host_layout(stage: Stage, host: Host, stamp: str, steps) -> Layout | None:
    layout = layout_of(stage.settings, host.path, stamp)
    if layout is None:
        return None
    return replace(layout, builds=any(s.name == "switch_release" for s in steps))


def build_plan(stage: Stage, roles: Iterable[str] | None = None, hosts: Iterable[str] | None = None,
               kind: str = "deploy", revision: str | None = None, stamp: str | None = None,
               skip_unchanged: bool = True) -> Plan:
    """The plan for a deploy (``kind='deploy'``) or a rollback to ``revision``.

    ``stamp`` names this run's releases (releases strategy); by default the current UTC time.
    ``skip_unchanged=False`` (``--no-skip``): bundle and migrate always do their work.
    """
    stamp = stamp or release_stamp()
    selected = select_hosts(stage, roles, hosts)
    role_filter = set(roles or [])
    has_kepler = any(GATE_ROLE in h.roles and (not role_filter or GATE_ROLE in role_filter) for h in selected)
    host_plans = []
    for host in selected:
        host_roles = tuple(r for r in host.roles if not role_filter or r in role_filter)
        opens = GATE_ROLE in host_roles
        gated = (not opens) and has_kepler and any(stage.roles[r].gated for r in host_roles)
        steps = host_steps(stage, host, host_roles, kind, revision, stamp, skip_unchanged)
        host_plans.append(HostPlan(host=host, roles=host_roles, gated=gated, opens_gate=opens,
                                   steps=steps, layout=_host_layout(stage, host, stamp, steps)))
    # Keplers first, then ungated hosts, then gated ones: the scheduler starts them in this order.
    host_plans.sort(key=lambda p: (0 if p.opens_gate else 2 if p.gated else 1))
    notes = []
    if kind == "rollback":
        notes.append("database migrations are not reverted by a rollback")
    layouts = {layout_of(stage.settings, h.host.path, stamp) for h in host_plans} - {None}
    if len(layouts) == 1:
        notes.append(next(iter(layouts)).describe(kind))
    elif layouts:
        notes.append(f"strategy releases on {len(layouts)} code paths (see each host's steps)")
    if not has_kepler and any(stage.roles[r].gated for h in host_plans for r in h.roles):
        notes.append("no kepler host in this run: gated roles start without waiting")
    branch = next(iter({h.host.branch for h in host_plans}), stage.setting("branch"))
    return Plan(stage=stage, kind=kind, branch=branch, hosts=tuple(host_plans), revision=revision,
                notes=tuple(notes))


__all__ = ["HostPlan", "Plan", "StepPlan", "build_plan", "build_step", "host_steps", "known_steps", "select_hosts"]
