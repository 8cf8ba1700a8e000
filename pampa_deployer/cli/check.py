"""``pampa check``: connect to every host in parallel; auth, host key, git, code path, commands."""
from __future__ import annotations

from ..commands.probe import parse_probe, probe_command, programs_used
from ..engine.pool import each_host, open_pool
from ..errors import ConnectError, Refused
from ..inventory import load_stage
from ..plan import build_plan
from ..render import tables
from ..render.words import count
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
    rows = []
    for name, v in found.items():
        if isinstance(v, ConnectError):
            auth = "failed" if v.reason == "auth failed" else "-"
            key = "REFUSED" if "host key" in v.reason else "-"
            rows.append([name, False, auth, key, "-", "-", v.message])
            continue
        missing = [k[4:] for k, val in v.items() if k.startswith("cmd:") and val != "ok"]
        ok = v.get("git") == "ok" and v.get("path") == "ok" and not missing
        rows.append([name, ok, "ok", "ok", v.get("git", "?"), v.get("path", "?"),
                     "ok" if not missing else "missing: " + ", ".join(missing)])
    bad = sum(1 for r in rows if not r[1])
    as_json = getattr(args, "json", False)
    columns = ["host", "ready", "auth", "host key", "git", "code path", "commands"]
    shown = rows if as_json else [[r[0], "yes" if r[1] else "NO", *r[2:]] for r in rows]
    tables.show(columns, shown, console=output.console(args), terminal=not output.is_ci(args), json_out=as_json,
                title=f"check {stage.name}", styles=lambda i, row: None if rows[i][1] else "red")
    if bad:
        raise Refused(f"check {stage.name}: {bad} of {count(len(found), 'host')} "
                      f"{'is' if bad == 1 else 'are'} not ready")
    return 0
