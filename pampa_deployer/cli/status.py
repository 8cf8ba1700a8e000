"""``pampa status``: each host's revision, last deploy and its result; drift and interrupted deploys marked."""
from __future__ import annotations

import json
from collections import Counter

from rich.table import Table
from rich.text import Text

from ..accesspoint.client import AccessPointClient
from ..commands import revlog
from ..engine.pool import open_pool
from ..errors import AccessPointError, ConnectError
from ..inventory import load_stage
from ..plan import select_hosts
from . import output
from .hosts import each_host


def collect(stage, hosts, pool) -> dict[str, dict]:
    """Read each host's HEAD and revision log in parallel."""
    def read(host, backend):
        out = backend.run(revlog.read_command(revlog.base(host.path)))
        entries, head, subject = revlog.parse(out.stdout)
        return {"revision": head, "subject": subject, "last": entries[-1] if entries else None}

    return each_host(pool, hosts, read)


def status(args) -> int:
    stage = load_stage(args.stage, args.stages)
    hosts = select_hosts(stage, args.roles, args.hosts)
    with open_pool(stage) as pool:
        found = collect(stage, hosts, pool)
    versions = {}
    client = AccessPointClient.from_stage(stage)
    ap_error = None
    if client is not None:
        try:
            versions = {n["node"]: n for n in client.nodes(stage.name)}
        except AccessPointError as e:
            ap_error = e.message
    revisions = Counter(v["revision"] for v in found.values() if isinstance(v, dict) and v["revision"])
    majority = revisions.most_common(1)[0][0] if revisions else None
    drift = len(revisions) > 1
    rows = []
    for host in hosts:
        v = found[host.name]
        row = {"host": host.name, "roles": list(host.roles)}
        if isinstance(v, ConnectError):
            row.update(reachable=False, error=v.message)
        else:
            last = v["last"] or {}
            row.update(reachable=True, revision=v["revision"], subject=v["subject"],
                       last_deploy=last.get("time"), last_result=last.get("result"), last_step=last.get("step"),
                       last_user=last.get("user"), drift=bool(drift and v["revision"] != majority),
                       interrupted=last.get("result") == "interrupted")
        if host.name in versions:
            row["access_point_revision"] = versions[host.name].get("revision")
        rows.append(row)
    if args.json:
        print(json.dumps({"stage": stage.name, "drift": drift, "hosts": rows, "access_point_error": ap_error},
                         indent=2))
        return 0
    console = output.console(args)
    table = Table(title=f"stage {stage.name}: " + ("DRIFT: hosts run different revisions" if drift
                                                  else "all hosts on one revision"), title_justify="left")
    for col in ("host", "roles", "revision", "last deploy", "result", "note"):
        table.add_column(col, overflow="fold")
    if versions:
        table.add_column("access point")
    for r in rows:
        if not r["reachable"]:
            cells = [r["host"], ",".join(r["roles"]), "?", "", Text("unreachable", style="red"), r["error"]]
        else:
            rev = f"{(r['revision'] or '-')[:10]} {r['subject'] or ''}".strip()
            result = r["last_result"] or "-"
            if r["last_step"] and result != "ok":
                result += f" at {r['last_step']}"
            notes = []
            if r["drift"]:
                notes.append("DRIFT")
            if r["interrupted"]:
                notes.append(f"interrupted at {r['last_step']}")
            style = "green" if result == "ok" else "yellow" if r["interrupted"] else "red"
            cells = [r["host"], ",".join(r["roles"]), rev, r["last_deploy"] or "-", Text(result, style=style),
                     ", ".join(notes)]
        if versions:
            cells.append((r.get("access_point_revision") or "-")[:10])
        table.add_row(*cells)
    console.print(table)
    if ap_error:
        console.print(f"access point: {ap_error}")
    return 0
