"""``pampa check``: connect to every host in parallel; auth, host key, git, code path, commands."""
from __future__ import annotations

import posixpath

from rich.table import Table
from rich.text import Text

from ..errors import ConnectError, Refused
from ..inventory import load_stage
from ..plan import build_plan
from ..shell import quote
from ..steps.actions import Command
from . import output
from .hosts import each_host
from .run import pool_for

_SKIP = {"cd", "export", "source", ".", "if", "then", "fi", "test", "[", "true", "echo", "sudo"}


def commands_used(host_plan) -> list[str]:
    """Programs the host's steps call (first word of each command part), to check they exist."""
    found: list[str] = []
    for step in host_plan.steps:
        for action in step.actions:
            command = getattr(action, "command", None) or getattr(action, "revision", None)
            if command is None:
                continue
            for part in command.script.replace("||", "&&").replace(";", "&&").split("&&"):
                words = part.strip().split()
                while words and (words[0] in _SKIP or "=" in words[0]):
                    words = words[1:]
                if words and not words[0].startswith(("$", "{", "(", "-", "!")) and words[0] not in found:
                    found.append(words[0])
    return found


def check(args) -> int:
    stage = load_stage(args.stage, args.stages)
    plan = build_plan(stage, args.roles, args.hosts)
    pool = pool_for(stage, args)

    def probe(host, backend):
        hp = next(h for h in plan.hosts if h.host.name == host.name)
        programs = commands_used(hp)
        parent = posixpath.dirname(host.path.rstrip("/")) or "."
        checks = " ; ".join(
            ["command -v git >/dev/null && echo git=ok || echo git=missing",
             f"if [ -d {quote(host.path)} ]; then t={quote(host.path)}; else t={quote(parent)}; mkdir -p \"$t\" "
             f"2>/dev/null; fi; [ -w \"$t\" ] && echo path=ok || echo path=not-writable"]
            + [f"(cd {quote(host.path)} 2>/dev/null; command -v {quote(p)} >/dev/null || [ -x {quote(p)} ]) "
               f"&& echo cmd:{p}=ok || echo cmd:{p}=missing" for p in programs])
        command = Command(script=checks, prefix=host.prefix, timeout=30)
        out = backend.run(command).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    try:
        found = each_host(pool, stage.hosts if not (args.hosts or args.roles) else [h.host for h in plan.hosts],
                          probe)
    finally:
        pool.close_all()
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
