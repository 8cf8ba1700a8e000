"""``pampa releases STAGE [--prune]``: each host's releases (strategy ``releases``), grouped when they agree;
``--prune`` removes what ``keep_releases`` would, under the stage lock, and shows what is left."""
from __future__ import annotations

import json

from ..commands.releases import Listing
from ..engine.backends.pool import open_pool
from ..engine.releases import Pruned, list_releases, prune
from ..errors import ConfigError, ConnectError, NotObserved
from ..inventory import load_stage
from ..plan import build_plan
from ..render import releases as shown
from ..steps.releases import IN_PLACE, layout_of
from . import types
from .parser import add_selection


def declare(cmd) -> None:
    p = cmd("releases", "each host's releases on disk (strategy releases): current, rollback target, the rest",
            "pampa releases production --prune")
    p.add_argument("stage")
    add_selection(p)
    p.add_argument("--prune", action="store_true",
                   help="remove what keep_releases would (never current nor the rollback target), under the lock")
    p.add_argument("--message", "-m", help="--prune: note recorded in the lock while it prunes")
    p.add_argument("--lock-wait", type=types.non_negative, default=0.0, metavar="SECONDS",
                   help="--prune: wait this long for a held lock instead of failing at once")
    p.add_argument("--no-lock", action="store_true", help="--prune: do not take the stage lock (dangerous)")
    p.add_argument("--json", action="store_true", help="print the releases as JSON")
    p.set_defaults(handler=releases)


def releases(args) -> int:
    stage = load_stage(args.stage, args.stages)
    if layout_of(stage.settings, "", "") is None:
        raise ConfigError(f"stage {stage.name} has strategy {stage.setting('strategy') or IN_PLACE}: one checkout "
                          f"per host, no releases (set `strategy: releases` in {stage.file}); `pampa history "
                          f"{stage.name}` shows its deploys and `pampa status {stage.name}` what each host runs")
    plan = build_plan(stage, args.roles, args.hosts)
    hosts = [hp.host for hp in plan.hosts]
    keep = next(hp.layout.keep for hp in plan.hosts)  # keep_releases, as the deploy's prune reads it
    pruned: dict = {}
    with open_pool(stage) as pool:
        found = list_releases(stage, hosts, pool)
        if args.prune:
            pruned = prune(stage, hosts, pool, found, args.message, lock=not args.no_lock, lock_wait=args.lock_wait)
            found = list_releases(stage, hosts, pool)
    order = [h.name for h in stage.hosts if h.name in found]
    listings = {n: found[n] for n in order if isinstance(found[n], Listing)}
    unreachable = {n: found[n].message for n in order if isinstance(found[n], ConnectError)}
    unreachable.update({n: p.message for n, p in pruned.items() if isinstance(p, ConnectError) and n not in unreachable})
    failed = {n: p.failed for n, p in pruned.items() if isinstance(p, Pruned) and p.failed}
    layouts = {hp.host.name: hp.layout for hp in plan.hosts}
    if args.json:
        print(json.dumps({"stage": stage.name, "keep_releases": keep,
                          "hosts": {n: shown.to_dict(listing, keep) for n, listing in listings.items()},
                          "groups": [names for names, _ in shown.group(listings)],
                          "pruned": {n: list(p.removed) for n, p in pruned.items() if isinstance(p, Pruned)},
                          "prune_failed": failed,
                          "unreachable": [{"host": h, "error": e} for h, e in unreachable.items()]}, indent=2))
    else:
        print(f"releases of {stage.name} (keep_releases {keep}), newest first")
        for name in [n for n in order if n in pruned]:
            p = pruned[name]
            if isinstance(p, Pruned) and (p.removed or p.skipped or p.failed):
                print(f"{name}: " + "; ".join(filter(None, [
                    f"pruned {', '.join(p.removed)}" if p.removed else None, p.skipped,
                    f"prune FAILED ({p.failed})" if p.failed else None])))
        if args.prune and not any(isinstance(p, Pruned) and p.removed for p in pruned.values()):
            print("prune: nothing to remove")
        for names, listing in shown.group(listings):
            first = layouts[names[0]]
            print("\n".join(shown.block(names, listing, keep, first.root, first.builds)))
        for host, why in unreachable.items():
            print(f"{host}: unreachable (not read): {why}")
    if unreachable or failed:
        raise NotObserved(f"releases of {stage.name}: " + "; ".join(filter(None, [
            f"not read: {', '.join(unreachable)}" if unreachable else None,
            f"prune failed on {', '.join(failed)}" if failed else None])))
    return 0
