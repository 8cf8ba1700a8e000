"""``pampa history STAGE``: the fleet's deploys, newest first, from the hosts' revision logs (and the
access point's pull requests). Read-only; a host that could not be read is named and the exit code is 1.
"""
from __future__ import annotations

import json

from ..engine.backends.pool import open_pool
from ..engine.history import SINCE_LINES, add_requests, merge, read_logs
from ..errors import ConnectError, NotObserved
from ..inventory import load_stage
from ..plan import select_hosts
from ..render import history as shown
from ..render import tables
from . import output, types
from .parser import csv


def declare(cmd) -> None:
    p = cmd("history", "the fleet's deploys, newest first: when, who, what, result per role, message",
            "pampa history production -n 10 --since 7d")
    p.add_argument("stage")
    p.add_argument("-n", type=types.history_count, default=20, metavar="N", help="show the newest N deploys "
                   "(default 20, at most 1000)")
    p.add_argument("--host", "--hosts", dest="hosts", type=csv, metavar="HOST[,HOST]",
                   help="only deploys that touched these hosts (names or shell globs); only they are read")
    p.add_argument("--roles", type=csv, help="only hosts of these roles, comma-separated")
    p.add_argument("--since", type=types.since, metavar="WHEN",
                   help="only deploys since then: a UTC date or time (2026-11-26, 2026-11-26T14:00) or an age "
                        "(12h, 7d)")
    p.add_argument("--json", action="store_true", help="print the deploys as JSON")
    p.set_defaults(handler=history)


def history(args) -> int:
    stage = load_stage(args.stage, args.stages)
    hosts = select_hosts(stage, args.roles, args.hosts)
    lines = SINCE_LINES if args.since is not None else args.n
    with open_pool(stage) as pool:
        found = read_logs(stage, hosts, pool, lines)
    read = {name: v for name, v in found.items() if not isinstance(v, ConnectError)}
    unreachable = {name: v.message for name, v in found.items() if isinstance(v, ConnectError)}
    deploys = merge(stage.name, read, {h.name: h.roles for h in hosts})
    ap_error = add_requests(deploys, stage, {h.name for h in hosts}, max(args.n, 20))
    if args.since is not None:
        deploys = [d for d in deploys if (d.ended or d.when) >= args.since]
    deploys = deploys[:args.n]
    cut = sorted(name for name, (entries, _, _) in read.items() if args.since is not None and
                 len(entries) >= SINCE_LINES and entries[0]["ended"] >= args.since)
    unreadable = {name: bad for name, (_, _, bad) in read.items() if bad}
    if args.json:
        print(json.dumps({"stage": stage.name, "complete": not unreachable and not ap_error,
                          "deploys": [shown.to_dict(d) for d in deploys],
                          "unreachable": [{"host": h, "error": e} for h, e in unreachable.items()],
                          "access_point_error": ap_error, "unreadable_lines": unreadable, "not_read_to_the_start": cut},
                         indent=2))
    else:
        console = output.console(args)
        tables.show(shown.COLUMNS, [shown.row(d) for d in deploys], console=console,
                    terminal=not output.is_ci(args), title=shown.title(stage.name, len(deploys), len(read), len(hosts)))
        for host, why in unreachable.items():
            console.print(f"{host}: not read ({why}): its deploys may be missing above")
        if ap_error:
            console.print(f"access point: not read ({ap_error}): pull requests may be missing above")
        for host, bad in unreadable.items():
            console.print(f"{host}: {bad} revision-log {'line is' if bad == 1 else 'lines are'} not valid and not shown")
        for host in cut:
            console.print(f"{host}: only its last {SINCE_LINES} runs were read; older ones since then are not shown")
    if unreachable or ap_error:
        missing = list(unreachable) + (["the access point"] if ap_error else [])
        raise NotObserved(f"history of {stage.name}: not read: {', '.join(missing)}")
    return 0
