"""``pampa plan``, ``pampa stages`` and ``pampa config``: read-only views of the inventory."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import PampaError
from ..inventory import load_stage, stage_files
from ..inventory.yamlfile import Secret
from ..plan import Plan, build_plan
from ..render import tables
from . import output
from .parser import csv


def declare_plan(cmd) -> None:
    p = cmd("plan", "show the phases, the gate and each host's resolved commands", "pampa plan production")
    p.add_argument("stage")
    p.add_argument("--roles", type=csv, help="only hosts (and steps) of these roles, comma-separated")
    p.add_argument("--hosts", type=csv, help="only these hosts (names or shell globs), comma-separated")
    p.add_argument("--branch", help="plan this branch instead of the stage's")
    p.add_argument("--no-skip", action="store_true", help="plan as `pampa deploy --no-skip` runs: bundle and "
                   "migrate without their checks")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(handler=plan)


def declare_stages(cmd) -> None:
    p = cmd("stages", "list the stages", "pampa stages")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(handler=stages)


def declare_config(cmd) -> None:
    p = cmd("config", "print a stage's merged configuration (secrets masked) and where each value came from",
            "pampa config production")
    p.add_argument("stage")
    p.add_argument("--json", action="store_true", help="print the settings as JSON")
    p.set_defaults(handler=config)


def _where(hp) -> str:
    return f"{hp.host.user + '@' if hp.host.user else ''}{hp.host.address}:{hp.host.port}"


def _gate_tag(hp) -> str:
    return "opens the gate" if hp.opens_gate else ("waits for the gate" if hp.gated else "does not wait")


def plan_lines(plan: Plan) -> list[str]:
    """The plan as lines: phases, the gate, then each host's steps with every command on a line of its own.

    Commands are never wrapped nor decorated, so each line can be copied and typed as is.
    """
    stage = plan.stage
    openers = [h for h in plan.hosts if h.opens_gate]
    free = [h for h in plan.hosts if not h.opens_gate and not h.gated]
    gated = [h for h in plan.hosts if h.gated]
    lines = [f"{plan.kind} plan for stage {stage.name} ({stage.file}), branch {plan.branch}"
             + (f", target {plan.revision}" if plan.revision else ""),
             f"phase 1, at once: {', '.join(h.host.name for h in openers + free) or '-'}"]
    if gated:
        lines.append(f"gate: opens when every kepler host has finished "
                     f"({', '.join(h.host.name for h in openers)})")
        lines.append(f"phase 2, after the gate: {', '.join(h.host.name for h in gated)}")
    lines += [f"note: {note}" for note in plan.notes]
    for hp in plan.hosts:
        lines += ["", f"{hp.host.name} [{','.join(hp.roles)}] {_where(hp)} ({_gate_tag(hp)})"]
        for step in hp.steps:
            lines.append(f"  {step.name}" + (" (custom)" if step.custom else ""))
            lines += [f"    {action.display()}" for action in step.actions] or ["    (nothing to do)"]
    return lines


def plan_json(plan: Plan) -> dict:
    return {"kind": plan.kind, "stage": plan.stage.name, "file": plan.stage.file, "branch": plan.branch,
            "revision": plan.revision, "notes": list(plan.notes),
            "hosts": [{"name": hp.host.name, "address": hp.host.address, "port": hp.host.port,
                       "user": hp.host.user, "roles": list(hp.roles), "opens_gate": hp.opens_gate,
                       "gated": hp.gated,
                       "steps": [{"name": st.name, "custom": st.custom,
                                  "actions": [a.display() for a in st.actions]} for st in hp.steps]}
                      for hp in plan.hosts]}


def render_plan(plan: Plan, console=None) -> None:
    """Print the plan's lines (no wrapping: a long command stays one line)."""
    for line in plan_lines(plan):
        print(line)


def plan(args) -> int:
    overrides = {"branch": args.branch} if args.branch else None
    stage = load_stage(args.stage, args.stages, overrides=overrides)
    built = build_plan(stage, args.roles, args.hosts, skip_unchanged=not getattr(args, "no_skip", False))
    if getattr(args, "json", False):
        print(json.dumps(plan_json(built), indent=2, default=str))
    else:
        render_plan(built)
    return 0


def stages(args) -> int:
    files = stage_files(Path(args.stages))
    if not files and not getattr(args, "json", False):
        print(f"no stages in {args.stages}/; run `pampa init` to create some")
        return 0
    rows = []
    for name, path in files.items():
        try:
            stage = load_stage(name, args.stages)
            roles = sorted({r for h in stage.hosts for r in h.roles})
            rows.append([name, str(path), len(stage.hosts), ",".join(roles)])
        except PampaError as e:  # one broken stage must not hide the others
            rows.append([name, str(path), None, f"invalid: {str(e).splitlines()[0]}"])
    tables.show(["stage", "file", "hosts", "roles"], rows, console=output.console(args),
                terminal=not output.is_ci(args), json_out=getattr(args, "json", False))
    return 0


def _flatten(node, prefix=""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), node


def config(args) -> int:
    """Every merged value with the layer it came from; secrets masked."""
    stage = load_stage(args.stage, args.stages)
    as_json = getattr(args, "json", False)
    rows = []
    for key, value in _flatten(dict(stage.settings)):
        origin = stage.origins.get(key) or next((o for k, o in stage.origins.items() if k.startswith(key)),
                                                "default")
        rows.append([key, _shown(stage, value, as_json), origin])
    tables.show(["key", "value", "from"], rows, console=output.console(args), terminal=not output.is_ci(args),
                json_out=as_json, title=f"stage {stage.name}: merged configuration",
                **({"stage": stage.name} if as_json else {}))
    if not as_json:
        print("merge order: default < stages/common.yml < stage file < host settings < command line")
    return 0


def _shown(stage, value, as_json: bool):
    """A value as written in YAML/JSON (never a Python repr), secrets masked, an empty secret "(empty)"."""
    if isinstance(value, Secret):
        return stage.redactor.show(value)
    if isinstance(value, list):
        value = [_shown(stage, v, True) for v in value]
    elif isinstance(value, dict):  # a mapping inside a list (secrets[]); _flatten opens the top-level ones
        value = {k: _shown(stage, v, True) for k, v in value.items()}
    elif isinstance(value, str):
        return stage.redactor.mask(value)
    return value if as_json else stage.redactor.mask(json.dumps(value, default=str))
