"""``pampa check``: will a deploy succeed? One read-only probe per host, one line per problem with its fix."""
from __future__ import annotations

import json

from ..commands import readiness
from ..engine.backends.pool import each_host, open_pool
from ..errors import ConnectError, Refused
from ..inventory import load_stage
from ..plan import build_plan
from ..readiness import HostReadiness, Problem, judge, not_started, probe_for
from ..render.words import count, plural
from .parser import csv


def declare(cmd) -> None:
    p = cmd("check", "will a deploy succeed? repository and branch from each host, code path, sudo, disk, "
                     "secret folders, commands; one line per problem with its fix",
            "pampa check production --json   # exit 0 ready, 4 a host is not ready")
    p.add_argument("stage")
    p.add_argument("--hosts", type=csv, help="only these hosts (names or shell globs), comma-separated")
    p.add_argument("--roles", type=csv, help="only hosts of these roles, comma-separated")
    p.add_argument("--branch", help="check this branch instead of the stage's")
    p.add_argument("--json", action="store_true", help="print every host's problems and facts as JSON")
    p.add_argument("--accept-new-host-keys", action="store_true",
                   help="trust and save unknown host keys (changed keys are always refused)")
    p.set_defaults(handler=check)


def check(args) -> int:
    stage = load_stage(args.stage, args.stages, overrides={"branch": args.branch} if args.branch else None)
    plan = build_plan(stage, args.roles, args.hosts)
    min_free = stage.check.min_free_mb
    plans = {hp.host.name: hp for hp in plan.hosts}

    def probe(host, backend):
        hp = plans[host.name]
        result = backend.run(probe_for(stage, hp))
        found = readiness.parse(result.stdout)
        if "probe" not in found:
            return not_started(host.name, result)
        return judge(stage, hp, found, min_free)

    with open_pool(stage, accept_new=args.accept_new_host_keys) as pool:
        found = each_host(pool, [hp.host for hp in plan.hosts], probe)
    results = []
    for name, v in found.items():
        if isinstance(v, ConnectError):
            v = HostReadiness(name, [Problem("connect", v.message, "fix the connection settings and retry")])
        results.append(v)
    bad = [r for r in results if r.problems]
    if args.json:
        print(json.dumps({"stage": stage.name, "ready": not bad, "hosts": [r.as_json() for r in results]}, indent=2))
    else:
        for r in results:
            if not r.problems:
                pumas = "".join(f", puma {u}: {said}" for u, said in r.facts.get("puma", {}).items())
                print(f"{r.host}: ready (branch {plan.branch} at {r.facts.get('branch_head', '?')}, "
                      f"{r.facts.get('free_mb', '?')} MB free{pumas})")
            for p in r.problems:
                print(p.line(r.host) if p.check != "connect" else f"{r.host}: {_unprefixed(p.message, r.host)}")
        problems = sum(len(r.problems) for r in results)
        print(f"check {stage.name}: {len(results) - len(bad)} of {count(len(results), 'host')} ready"
              + (f", {count(problems, 'problem')}" if problems else ""), flush=True)
    if bad:
        raise Refused(f"check {stage.name}: {len(bad)} of {count(len(results), 'host')} "
                      f"{plural(len(bad), 'is')} not ready: " + ", ".join(r.host for r in bad[:10]))
    return 0


def _unprefixed(message: str, host: str) -> str:
    """A connect error's text without a leading ``HOST: `` (the line names the host once already)."""
    return message[len(host) + 2:] if message.startswith(f"{host}: ") else message
