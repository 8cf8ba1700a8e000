"""``pampa pending STAGE`` (and ``pampa deploy STAGE --preview``): what a deploy would bring to each host.

Read-only: each host is asked for the revision it runs; the rest is git work in the operator's mirror
of the repository (engine/pending.py). It exits 1 when it could not say it for every host.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..engine.backends.pool import open_pool
from ..engine.pending import mirror_for, preview
from ..errors import ConfigError, NotObserved
from ..inventory import load_stage
from ..plan import build_plan
from ..render import pending as shown
from .parser import add_selection


def declare(cmd) -> None:
    p = cmd("pending", "what a deploy would bring to each host: commits, migrations, gems, files (read-only)",
            "pampa pending production --roles newton")
    p.add_argument("stage")
    add_selection(p)
    p.add_argument("--branch", help="compare with this branch instead of the stage's")
    p.add_argument("--json", action="store_true", help="print the preview as JSON")
    p.set_defaults(handler=pending)


def pending(args) -> int:
    """Print the preview; returns 0, or raises (exit 1) when a host or a revision could not be seen."""
    stage = load_stage(args.stage, args.stages, overrides={"branch": args.branch} if args.branch else None)
    plan = build_plan(stage, args.roles, args.hosts)
    mirror = mirror_for(stage, Path(".pampa") / "repos")
    with open_pool(stage) as pool:
        found = preview(plan, pool, mirror)
    if found.missing_branches:
        names = ", ".join(found.missing_branches)
        raise ConfigError(f"pending {stage.name}: branch {names} is not in {found.repository} (fetched just now); "
                          "push it, or fix `branch` in the stage (or --branch)")
    if getattr(args, "json", False):
        print(json.dumps(shown.to_dict(found), indent=2))
    else:
        for line in shown.lines(found):
            print(line, flush=False)
    if getattr(args, "preview", False):
        print(f"preview only: nothing was deployed; `pampa deploy {stage.name}` without --preview deploys")
    if not found.complete:
        unseen = list(found.unreachable) + [h for g in found.groups if g.state == "unknown" for h in g.hosts]
        raise NotObserved(f"pending {stage.name}: cannot say what a deploy brings to {', '.join(unseen)}")
    return 0
