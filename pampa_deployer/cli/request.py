"""``pampa request``: the developer's step in pull mode. Register a deploy request; with --wait, follow it.

Following shows the same live view (or CI lines), summary, JSON/JUnit reports and exit codes
as ``pampa deploy``: the hosts are nodes reporting in through the access point.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from .. import provenance
from ..accesspoint import wire
from ..accesspoint.client import AccessPointClient
from ..engine import events as ev
from ..engine import stop as stopping
from ..engine.follow import Follower, pull_request
from ..engine.rollback import history_target
from ..errors import AccessPointError, ConfigError, Refused, UsageError
from ..inventory import load_stage
from ..plan import build_plan
from ..printable import printable
from ..render.plain import PlainRenderer
from ..render.report import ReportWriter
from ..render.rundir import RunDirectory
from ..render.summary import SummaryPrinter
from ..sequences import GATE_ROLE
from . import output


def declare(cmd) -> None:
    p = cmd("request", "pull mode: register a deploy request at the access point; nodes' agents deploy it",
            "pampa request production --branch hotfix -m 'fix login' --wait")
    p.add_argument("stage")
    p.add_argument("--branch", help="deploy this branch instead of the stage's")
    p.add_argument("--message", "-m", help="why; shown to every node and in the request (with --cancel: why it "
                   "was cancelled)")
    p.add_argument("--wait", action="store_true", help="follow the request to the end, like `pampa deploy`")
    p.add_argument("--follow", type=int, metavar="ID", help="follow an existing request instead of creating one")
    p.add_argument("--cancel", type=int, metavar="ID",
                   help="cancel a request: waiting nodes never start it, running nodes stop at their next step "
                        "(with --wait: then follow it to the end)")
    p.add_argument("--rollback", action="store_true",
                   help="request a rollback: every node goes back to one revision (the previous one, or --to)")
    p.add_argument("--to", metavar="REV", help="with --rollback: the revision to go back to")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop following after this long (exit 1)")
    p.add_argument("--report", metavar="FILE.json", help="write the JSON report here too")
    p.add_argument("--junit", metavar="FILE.xml", help="write a JUnit XML report, one test case per node")
    p.add_argument("-v", "--verbose", action="store_true", help="stream every output line the nodes send")
    p.set_defaults(dry_run=False, handler=request)


def client_for(stage) -> AccessPointClient:
    client = AccessPointClient.from_stage(stage)
    if client is None:
        raise ConfigError(f"{stage.file}: access_point.url: pull mode needs an access point; set access_point.url "
                          "and access_point.api_key (docs/pull-mode.md)")
    return client


def nodes_of(plan) -> list[dict]:
    """What the access point needs to keep the gate: each node, its roles, gated or opening the gate."""
    return [{"node": hp.host.name, "roles": list(hp.roles), "gated": hp.gated, "opens_gate": hp.opens_gate}
            for hp in plan.hosts]


def rollback_target(client, stage, to: str | None) -> str:
    """The one revision every node of a pull-mode rollback goes back to: ``--to``, or the access point's history.

    Nobody reaches every node from here, so the previous revision is the one before what the
    keplers report now, in the stage's pull requests that opened their gate (engine/rollback.py).
    """
    if to:
        return to
    keplers = {wire.text(n.get("revision"), 64) for n in client.nodes(stage.name)
               if GATE_ROLE in wire.text(n.get("roles")).split(",")}
    current = keplers.pop() if len(keplers) == 1 else None
    history = [{"mode": d.get("mode"), "kind": wire.text(d.get("kind"), 16), "state": wire.text(d.get("state"), 32),
                "revision": wire.text(d.get("revision"), 64) or None, "allowed_at": wire.moment(d.get("allowed_at"))}
               for d in client.deploys(stage.name)]
    target = history_target(history, current)
    if target is None:
        now = f" before {current[:12]}" if current else ""
        raise Refused(f"rollback: the access point knows no revision of stage {stage.name}{now} (its history is "
                      "the pull requests whose keplers succeeded); give one with --to REV. Nothing was requested")
    return target


def request(args) -> int:
    overrides = {"branch": args.branch} if args.branch else None
    stage = load_stage(args.stage, args.stages, overrides=overrides)
    client = client_for(stage)
    ci = output.is_ci(args)
    console = output.console(args)

    def say(line: str, style: str | None = None) -> None:
        print(printable(line), flush=True) if ci else console.print(printable(line), style=style)

    if args.cancel is not None:
        if args.follow is not None or args.rollback or args.to:
            raise UsageError("request: --cancel ID goes alone (with --wait to follow the request to its end)")
        before = existing(client, stage, args.cancel, "--cancel")
        deploy = cancel(client, before, args.message)
        say(f"request {deploy['id']} {deploy['state'] or 'CANCELLED'}: {cancelled_what(before)}")
        if not args.wait:
            return 0
    elif args.follow is not None:
        deploy = existing(client, stage, args.follow, "--follow")
    else:
        if args.to and not args.rollback:
            raise UsageError("request: --to REV goes with --rollback (`pampa request STAGE --rollback --to REV`)")
        plan = build_plan(stage)
        target = rollback_target(client, stage, args.to) if args.rollback else None
        deploy = pull_request(client.create_request(stage.name, plan.branch, nodes_of(plan), provenance.who(),
                                                    args.message, "rollback" if args.rollback else "deploy", target))
        what = f"to {target}" if target else f"branch {deploy['branch']}"
        say(f"{'rollback' if target else 'deploy'} request {deploy['id']} registered at {client.url}: "
            f"stage {stage.name}, {what}, {len(deploy['nodes'])} nodes")
        if not args.wait:
            say("follow it: " + output.again(args, f"request {stage.name} --follow {deploy['id']}")
                + f"  (cancel it: --cancel {deploy['id']})", style="dim")
            return 0
    return follow(args, stage, client, deploy, ci, console)


def existing(client, stage, deploy_id: int, option: str) -> dict:
    """Pull request ``deploy_id`` of this stage (``wire.request_view``), or one clear line (exit 2)."""
    deploy = pull_request(client.deploy(deploy_id))
    if deploy["mode"] != "pull" or deploy["stage"] != stage.name:
        raise ConfigError(f"{option}: deploy {deploy_id} is not a pull request of stage {stage.name}")
    return deploy


def cancel(client, deploy: dict, reason: str | None) -> dict:
    """Cancel ``deploy`` at the access point; the request as it answers (CANCELLED)."""
    try:
        answer = client.cancel(deploy["id"], provenance.who(), reason)
    except AccessPointError as e:
        if e.status in (404, 405):  # the request exists (read above): the access point has no cancel
            raise AccessPointError(f"{e.message} (this access point cannot cancel requests: upgrade it; "
                                   "docs/pull-mode.md, Cancelling)", e.status) from None
        raise
    try:
        return pull_request(answer)
    except AccessPointError:  # an answer without the request in it: read it again
        return pull_request(client.deploy(deploy["id"]))


def cancelled_what(deploy: dict) -> str:
    """What cancelling means for the nodes as they were just before: how many will never start, how many
    stop at their next step."""
    states = [n["state"] for n in deploy["nodes"]]
    running, waiting = states.count("running"), states.count("waiting")
    return (f"{waiting} waiting node(s) will not start it; {running} running node(s) stop at their next step "
            f"(follow it: --follow {deploy['id']})")


def follow(args, stage, client, deploy: dict, ci: bool, console) -> int:
    """The same subscribers as ``pampa deploy``: live view or plain lines, run directory, summary, reports."""
    stop = stopping.StopSignal()
    bus = ev.EventBus()
    view = None
    if ci:
        bus.subscribe(PlainRenderer(sys.stdout, verbose=args.verbose))
    else:
        from ..render.live import LiveView
        view = LiveView(console, verbose=args.verbose)
        bus.subscribe(view)
    rundir = RunDirectory(Path(".pampa") / "runs", stage.name, "request")
    bus.subscribe(rundir)
    bus.subscribe(SummaryPrinter(console, plain=ci, rundir=rundir))
    if args.report or args.junit:
        bus.subscribe(ReportWriter(Path(args.report) if args.report else None,
                                   Path(args.junit) if args.junit else None))

    def notify(message: str) -> None:
        bus.emit(ev.Notice(message=message.split(";")[0] + "; stopped following (the request goes on)",
                           level="warning"))

    restore = stopping.install(stop, 0.0, notify)
    follower = Follower(client, deploy, bus, stop, timeout=args.timeout)
    try:
        with (view if view is not None else contextlib.nullcontext()):
            follower.run()
    finally:
        restore()
        rundir.close()
    if follower.failure is not None:
        raise follower.failure
    return 0
