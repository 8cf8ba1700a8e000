"""``pampa check``: connect to every host in parallel; auth, host key, git, code path, commands."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text

from ..commands.probe import parse_probe, probe_command, programs_used
from ..engine.pool import each_host, open_pool
from ..errors import ConnectError, Refused
from ..inventory import load_stage
from ..plan import build_plan
from . import output


def commands_used(host_plan) -> list[str]:
    """Programs the host's steps call, to check they exist."""
    return programs_used(c for step in host_plan.steps for action in step.actions for c in action.commands())


def check(args) -> int:
    stage = load_stage(args.stage, args.stages)
    plan = build_plan(stage, args.roles, args.hosts)

    def probe(host, backend):
        hp = next(h for h in plan.hosts if h.host.name == host.name)
        return parse_probe(backend.run(probe_command(host.path, host.prefix, commands_used(hp))).stdout)

    with open_pool(stage, accept_new=args.accept_new_host_keys) as pool:
        found = each_host(pool, stage.hosts if not (args.hosts or args.roles) else [h.host for h in plan.hosts],
                          probe)
    console = output.console(args)
    table = Table("host", "auth", "host key", "git", "code path", "commands", title=f"check {stage.name}")
    bad = 0
    for name, v in found.items():
        if isinstance(v, ConnectError):
            bad += 1
            auth = "failed" if v.reason == "auth failed" else "-"
            key = "REFUSED" if "host key" in v.reason else "-"
            table.add_row(name, auth, key, "-", "-", Text(v.message, style="red"))
            continue
        missing = [k[4:] for k, val in v.items() if k.startswith("cmd:") and val != "ok"]
        ok = v.get("git") == "ok" and v.get("path") == "ok" and not missing
        bad += 0 if ok else 1
        table.add_row(name, "ok", "ok", v.get("git", "?"), v.get("path", "?"),
                      Text("ok" if not missing else "missing: " + ", ".join(missing),
                           style="green" if not missing else "red"))
    console.print(table)
    if bad:
        raise Refused(f"check {stage.name}: {bad} of {len(found)} hosts are not ready")
    return 0
