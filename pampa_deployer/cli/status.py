"""``pampa status``: each host's revision, branch, last deploy and its result; drift, incomplete and
interrupted deploys marked, and the access point's open or abandoned deploy requests.

It never claims what it has not seen: "all N hosts on one revision" only when every host answered,
none is incomplete and all run one revision. It exits 1 otherwise (``--json`` too), so a script can
trust its exit code.
"""
from __future__ import annotations

import json
import posixpath
import time
from collections import Counter

from ..accesspoint import wire
from ..accesspoint.client import AccessPointClient
from ..commands import releases, revlog
from ..engine.backends.pool import each_host, open_pool
from ..engine.follow import pull_request
from ..errors import AccessPointError, ConnectError, NotInAgreement
from ..inventory import load_stage
from ..plan import select_hosts
from ..printable import printable
from ..render import tables
from ..steps.releases import layout_of, live_path
from . import output
from .parser import csv


def declare(cmd) -> None:
    p = cmd("status", "what each host runs, its last deploy, drift and interrupted deploys",
            "pampa status production")
    p.add_argument("stage")
    p.add_argument("--hosts", type=csv, help="only these hosts (names or shell globs), comma-separated")
    p.add_argument("--roles", type=csv, help="only hosts of these roles, comma-separated")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(handler=status)


def collect(stage, hosts, pool) -> dict[str, dict]:
    """Read each host's HEAD and revision log in parallel."""
    def read(host, backend):
        layout = layout_of(stage.settings, host.path, "")
        base = revlog.base(live_path(host, layout))
        out = backend.run(revlog.read_command(base, log=revlog.log_path(host.path)))
        entries, head, subject = revlog.parse(out.stdout)
        found = {"revision": head, "subject": subject, "last": entries[-1] if entries else None,
                 "incomplete": revlog.parse_state(out.stdout)}
        if layout is not None:  # releases strategy: the release `current` points at, as read on the host
            link = backend.run(releases.current_name(layout.root)).stdout.strip()
            found["release"] = posixpath.basename(link) or None
        return found

    return each_host(pool, hosts, read)


def status(args) -> int:
    stage = load_stage(args.stage, args.stages)
    hosts = select_hosts(stage, args.roles, args.hosts)
    with open_pool(stage) as pool:
        found = collect(stage, hosts, pool)
    versions, requests, ap_error = _access_point(stage)
    pull, pull_error = _last_pull_request(stage)
    ap_error = ap_error or pull_error
    revisions = Counter(v["revision"] for v in found.values() if isinstance(v, dict) and v["revision"])
    majority = revisions.most_common(1)[0][0] if revisions else None
    drift = len(revisions) > 1
    rows = [_row(host, found[host.name], versions, drift, majority) for host in hosts]
    unreachable = [r["host"] for r in rows if not r["reachable"]]
    incomplete = [r["host"] for r in rows if r.get("incomplete")]
    agree = not unreachable and not incomplete and not drift and all(r.get("revision") for r in rows)
    problems = _problems(drift, unreachable, incomplete) or ([] if agree else ["a host has no checkout yet"])
    title = f"all {len(rows)} hosts on one revision" if agree else "; ".join(problems)
    if args.json:
        print(json.dumps({"stage": stage.name, "agree": agree, "drift": drift, "unreachable": unreachable,
                          "incomplete": incomplete, "hosts": rows, "access_point_error": ap_error,
                          "access_point_requests": requests, "pull_request": pull}, indent=2))
    else:
        console = output.console(args)
        terminal = not output.is_ci(args)
        columns, cells = _terminal(rows, versions, console.width) if terminal else _plain(rows, versions)
        tables.show(columns, cells, console=console, terminal=terminal, title=f"stage {stage.name}: {title}",
                    styles=lambda i, row: _style(rows[i]), whole=("host", "branch", "revision", "last deploy",
                                                                  "access point"))
        if pull is not None:
            console.print(printable(_pull_line(pull)))
        if ap_error:
            console.print(f"access point: {ap_error}")
        for r in requests:  # what the access point says is shown without control sequences
            taken = f" (taken by {r['taken_by']})" if r.get("taken_by") else ""
            console.print(printable(f"access point: deploy request {r.get('id')} {r.get('state')}{taken}: {r['note']}"))
    if not agree:
        raise NotInAgreement(f"stage {stage.name}: {title}")
    return 0


def _problems(drift: bool, unreachable: list[str], incomplete: list[str]) -> list[str]:
    problems = []
    if unreachable:
        problems.append(f"{len(unreachable)} unreachable (not seen): {', '.join(unreachable)}")
    if incomplete:
        problems.append(f"{len(incomplete)} incomplete (a deploy started there never finished): "
                        f"{', '.join(incomplete)}")
    if drift:
        problems.append("DRIFT: hosts run different revisions")
    return problems


def _access_point(stage) -> tuple[dict, list[dict], str | None]:
    """The versions the access point holds for the stage's nodes, the deploy requests worth an
    operator's eye (open ones, and ones closed as abandoned), or why they could not be read."""
    client = AccessPointClient.from_stage(stage)
    if client is None:
        return {}, [], None
    try:
        versions = {wire.text(n.get("node")): n for n in client.nodes(stage.name)}
        found = client.deploys(stage.name)
    except AccessPointError as e:
        return {}, [], e.message
    requests = []
    for d in found[:20]:
        if d.get("mode") == "pull":  # pull-mode requests have their own line (and their agents)
            continue
        if d.get("state") in ("TAKEN", "ALLOWED"):
            requests.append({**_iso_times(d), "note": "open: a deploy is running, or it died (the next deploy closes it)"})
        elif str(d.get("detail") or "").startswith("abandoned"):
            requests.append({**_iso_times(d), "note": d["detail"]})
    return versions, requests[:5], None


def _last_pull_request(stage) -> tuple[dict | None, str | None]:
    """The stage's newest pull-mode request as the access point sees it (docs/pull-mode.md), if any."""
    client = AccessPointClient.from_stage(stage)
    if client is None:
        return None, None
    try:
        found = client.deploys(stage.name)  # newest first
        newest = next((d for d in found if d.get("mode") == "pull"), None)
        if newest is None or (newest is not found[0] and newest.get("state") in ("DONE", "FAILED")):
            return None, None  # none, or a finished one that push deploys came after: history, not the state
        d = pull_request(client.deploy(wire.ident(newest.get("id")) or 0))
    except AccessPointError as e:
        return None, e.message
    return {"id": d["id"], "state": d["state"], "branch": d["branch"], "requested_by": d["requested_by"],
            "stalled": d["stalled"], "nodes": {n["node"]: (f"stalled: {n['stalled']}" if n["stalled"] else n["state"])
                                                for n in d["nodes"]}}, None


def _pull_line(pull: dict) -> str:
    stalled = [f"{node} ({why[len('stalled: '):]})" for node, why in pull["nodes"].items() if why.startswith("stalled")]
    counts = Counter(v for v in pull["nodes"].values() if not v.startswith("stalled"))
    state = "STALLED (not done)" if pull["stalled"] else pull["state"]
    line = f"last pull request {pull['id']} (branch {pull['branch']}): {state}; " + \
        ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return line + (f"; stalled: {', '.join(stalled)}" if stalled else "")


def _row(host, found, versions: dict, drift: bool, majority: str | None) -> dict:
    row = {"host": host.name, "roles": list(host.roles)}
    if isinstance(found, ConnectError):
        row.update(reachable=False, error=found.message, branch=host.branch)
    else:
        last = found["last"] or {}
        state = found["incomplete"]
        row.update(reachable=True, revision=found["revision"], subject=found["subject"],
                   branch=(state or {}).get("branch") or last.get("branch") or host.branch, incomplete=state,
                   last_deploy=last.get("time"), last_result=last.get("result"), last_step=last.get("step"),
                   last_user=last.get("user"), drift=bool(drift and found["revision"] != majority),
                   interrupted=last.get("result") == "interrupted")
        if "release" in found:
            row["release"] = found["release"]
    if host.name in versions:
        row["access_point_revision"] = versions[host.name].get("revision")
        row["agent_seen_at"] = _iso(versions[host.name].get("seen_at"))  # pull mode: its agent's last call
    return row


_COLUMNS = ("host", "roles", "branch", "revision", "last deploy", "result", "note")


def _iso(at) -> str | None:
    """A Unix time from the access point, as every other time of `status --json`: ``2026-11-26T08:27:21Z``."""
    if not isinstance(at, (int, float)) or isinstance(at, bool):
        return at
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _iso_times(d: dict) -> dict:
    return {k: _iso(v) if k.endswith("_at") else v for k, v in d.items()}


def _plain(rows: list[dict], versions: dict) -> tuple[list[str], list[list[str]]]:
    """Every column, whole values (ISO times, 10-digit revisions with their subject): for grep and awk."""
    columns = [*_COLUMNS, *(["access point"] if versions else [])]
    return columns, [[str(c) for c in _cells(r)] + ([(r.get("access_point_revision") or "-")[:10]] if versions
                                                     else []) for r in rows]


def _terminal(rows: list[dict], versions: dict, width: int) -> tuple[list[str], list[list[str]]]:
    """The table for a terminal ``width`` wide. Host, branch, revision and time are never cut (a 7-digit
    revision, a minute in UTC); the commit subject appears from 120 columns, the roles from 110, and the
    access point's revision only where it differs from the host's: at 80 columns nothing is left as `2026-1…`."""
    differs = bool(versions) and any(r.get("access_point_revision") != r.get("revision") for r in rows)
    columns = ["host", *(["roles"] if width >= 110 else []), "branch", "revision", "last deploy", "result", "note",
               *(["access point"] if differs else [])]
    cells = []
    for r in rows:
        host, roles, branch, _, last, result, note = _cells(r)
        revision = (r.get("revision") or ("?" if not r["reachable"] else "-"))[:7]
        if width >= 120 and r.get("subject"):
            revision += f" {r['subject']}"
        if "release" in r:
            revision += f" (current: {r['release'] or 'none'})"
        cells.append([host, *([roles] if width >= 110 else []), branch, revision, _minute(last), result, note,
                      *([(r.get("access_point_revision") or "-")[:7]] if differs else [])])
    return columns, cells


def _minute(stamp: str) -> str:
    """``2026-11-26T08:27:21Z`` -> ``2026-11-26 08:27Z``: the time of a deploy, in 17 characters."""
    return f"{stamp[:10]} {stamp[11:16]}Z" if len(stamp) >= 16 and stamp[10:11] == "T" else stamp


def _style(r: dict) -> str | None:
    """A row's colour at a terminal: red when the host cannot be vouched for or its last deploy failed."""
    if not r["reachable"] or r.get("incomplete") or (r.get("last_result") not in (None, "ok")):
        return "red"
    return "yellow" if r.get("drift") else None


def _cells(r: dict) -> list:
    if not r["reachable"]:
        return [r["host"], ",".join(r["roles"]), r["branch"], "?", "", "unreachable", r["error"]]
    rev = f"{(r['revision'] or '-')[:10]} {r['subject'] or ''}".strip()
    if "release" in r:
        rev += f" (current: {r['release'] or 'none'})"
    result = r["last_result"] or "-"
    if r["last_step"] and result != "ok":
        result += f" at {r['last_step']}"
    notes = []
    if r["drift"]:
        notes.append("DRIFT")
    if r["interrupted"]:
        notes.append(f"interrupted at {r['last_step']}")
    state = r["incomplete"]
    if state:  # the host's own record: a deploy started there and never wrote its log line
        result = f"incomplete at {state.get('step') or 'start'}"
        notes.append(f"{state.get('kind', 'deploy')} {state.get('run', '?')} by {state.get('user', '?')}, "
                     f"started {state.get('started', '?')}, never finished")
    return [r["host"], ",".join(r["roles"]), r["branch"], rev, r["last_deploy"] or "-", result,
            ", ".join(notes)]
