"""``pampa plan``, ``pampa stages`` and ``pampa config``: read-only views of the inventory."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..inventory import load_stage, stage_files
from ..inventory.yamlfile import Secret
from ..plan import Plan, build_plan
from ..redact import MASK
from . import output


def render_plan(plan: Plan, console: Console) -> None:
    """Phases, the gate, then each host's steps with every command resolved (secrets masked)."""
    stage = plan.stage
    openers = [h for h in plan.hosts if h.opens_gate]
    free = [h for h in plan.hosts if not h.opens_gate and not h.gated]
    gated = [h for h in plan.hosts if h.gated]
    console.print(f"{plan.kind} plan for stage {stage.name} ({stage.file}), branch {plan.branch}"
                  + (f", target {plan.revision}" if plan.revision else ""))
    console.print(f"phase 1, at once: {', '.join(h.host.name for h in openers + free) or '-'}")
    if gated:
        console.print(f"gate: opens when every kepler host has finished ({', '.join(h.host.name for h in openers)})")
        console.print(f"phase 2, after the gate: {', '.join(h.host.name for h in gated)}")
    for note in plan.notes:
        console.print(f"note: {note}")
    for hp in plan.hosts:
        where = f"{hp.host.user + '@' if hp.host.user else ''}{hp.host.address}:{hp.host.port}"
        tag = "opens the gate" if hp.opens_gate else ("waits for the gate" if hp.gated else "does not wait")
        tree = Tree(Text(f"{hp.host.name} [{','.join(hp.roles)}] {where} ({tag})"))
        for step in hp.steps:
            node = tree.add(Text(step.name + (" (custom)" if step.custom else "")))
            for action in step.actions:
                node.add(Text(action.display()), highlight=False)
            if not step.actions:
                node.add("(nothing to do)")
        console.print(tree)


def plan(args) -> int:
    overrides = {"branch": args.branch} if args.branch else None
    stage = load_stage(args.stage, args.stages, overrides=overrides)
    render_plan(build_plan(stage, args.roles, args.hosts), output.console(args))
    return 0


def stages(args) -> int:
    console = output.console(args)
    files = stage_files(Path(args.stages))
    if not files:
        console.print(f"no stages in {args.stages}/; run `pampa init` to create some")
        return 0
    table = Table("stage", "file", "hosts", "roles")
    for name, path in files.items():
        try:
            stage = load_stage(name, args.stages)
            roles = sorted({r for h in stage.hosts for r in h.roles})
            table.add_row(name, str(path), str(len(stage.hosts)), ",".join(roles))
        except Exception as e:  # noqa: BLE001 - one broken stage must not hide the others
            table.add_row(name, str(path), "-", f"invalid: {str(e).splitlines()[0]}")
    console.print(table)
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
    console = output.console(args)
    table = Table("key", "value", "from", title=f"stage {stage.name}: merged configuration")
    for key, value in _flatten(dict(stage.settings)):
        shown = stage.redactor.show(value) if isinstance(value, Secret) else stage.redactor.mask(
            repr(value) if not isinstance(value, str) else value)
        origin = stage.origins.get(key) or next((o for k, o in stage.origins.items() if k.startswith(key)), "default")
        table.add_row(key, shown, origin)
    console.print(table)
    console.print("merge order: default < stages/common.yml < stage file < host settings < command line")
    return 0
