"""``pampa check``: will a deploy succeed? One read-only probe per host, one line per problem with its fix."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..commands import readiness
from ..engine.backends.pool import each_host, open_pool
from ..errors import ConnectError, Refused
from ..inventory import load_stage
from ..plan import build_plan
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


@dataclass
class Problem:
    check: str
    message: str
    fix: str

    def line(self, host: str) -> str:
        return f"{host}: {self.message}; {self.fix}"


@dataclass
class HostReadiness:
    host: str
    problems: list[Problem] = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"host": self.host, "ready": not self.problems, "facts": self.facts,
                "problems": [{"check": p.check, "message": p.message, "fix": p.fix, "line": p.line(self.host)}
                             for p in self.problems]}


def judge(stage, hp, found: dict[str, str], min_free_mb: int) -> HostReadiness:
    """Turn a host's probe output into problems, each with the fix an operator applies."""
    host = hp.host
    out = HostReadiness(host.name)
    file = stage.file
    repo = stage.redactor.mask(str(stage.setting("repo")))
    git = found.get("git", "missing")
    if git.startswith("ok"):
        out.facts["branch_head"] = git[3:]
    elif git == "no-branch":
        out.problems.append(Problem("git", f"branch '{host.branch}' does not exist in {repo}",
                                    f"push it, or fix `branch` in {file} (or --branch)"))
    elif git == "not-installed":
        out.problems.append(Problem("git", "git is not installed", "install git on the host"))
    else:
        why = git.split(":", 1)[1] if ":" in git else git
        out.problems.append(Problem("git", f"cannot reach the repository {repo} from the host ({why.strip()})",
                                    f"check `repo` in {file} and that the host's key may read it"))
    _folder(out, "path", found.get("path", ""), f"code path {host.path}",
            f"fix `path` in {file} or the folder's owner and permissions")
    if found.get("checkout") == "not-a-checkout":
        out.problems.append(Problem("path", f"code path {host.path} exists, is not empty and is not a git checkout",
                                    "move its content away (git clone needs an empty folder) or fix `path`"))
    disk = found.get("disk", "")
    free_kb, _, where = disk.partition(":")
    if free_kb.isdigit():
        out.facts["free_mb"] = int(free_kb) // 1024
        if int(free_kb) // 1024 < min_free_mb:
            out.problems.append(Problem("disk", f"only {int(free_kb) // 1024} MB free on {where} (the code "
                                                f"path's filesystem), below check.min_free_mb={min_free_mb}",
                                        "free some space, or lower check.min_free_mb"))
    else:
        out.problems.append(Problem("disk", "could not read the free disk space (df)", "check that df works"))
    for i, folder in enumerate(readiness.secret_folders(hp, stage.secret_files)):
        _folder(out, "secrets", found.get(f"secret:{i}", ""), f"secret files' folder {folder}",
                "create it, fix the secret's `remote`, or its parent's permissions")
    sudo = found.get("sudo")
    if sudo is not None and sudo != "ok":
        what = readiness.sudo_commands(hp)[0]
        why = "sudo is not installed" if sudo == "not-installed" else \
            f"sudo needs a password ({sudo.partition(':')[2].strip() or 'sudo -n failed'})"
        out.problems.append(Problem("sudo", f"{why}, so `{what}` would stop the deploy",
                                    f"allow it without a password (NOPASSWD in sudoers for {host.user or 'the user'}) "
                                    "or change units.restart"))
    for key, value in found.items():
        if key.startswith("cmd:") and value != "ok":
            out.problems.append(Problem("commands", f"command '{key[4:]}' is not installed (a deploy step runs it)",
                                        "install it, or load it with the stage's `prefix` (e.g. rvm)"))
    return out


def not_started(host: str, result) -> HostReadiness:
    """The probe never started: nothing else was observed, and a deploy step would not start either."""
    said = (result.stderr.strip().splitlines() or ["no output"])[-1][:200]
    return HostReadiness(host, [Problem(
        "probe", f"the probe could not start (exit code {result.exit_code}: {said}), and neither could a deploy "
                 "step: each runs the same way, after the prefix, in a process group of its own",
        "fix the stage's `prefix`; if setsid failed (login shells other than bash use `setsid -w`), install "
        "util-linux (BusyBox's setsid has no -w)")])


def _folder(out: HostReadiness, check: str, value: str, what: str, fix: str) -> None:
    if value in ("ok", "creatable"):
        return
    state, _, where = value.partition(":")
    why = {"not-writable": f"{what} is not writable",
           "blocked": f"{what} cannot be created: {where} is not a writable folder"}.get(state, f"{what}: not checked")
    out.problems.append(Problem(check, why, fix))


def check(args) -> int:
    stage = load_stage(args.stage, args.stages, overrides={"branch": args.branch} if args.branch else None)
    plan = build_plan(stage, args.roles, args.hosts)
    min_free = int(stage.setting("check.min_free_mb") or 0)
    plans = {hp.host.name: hp for hp in plan.hosts}

    def probe(host, backend):
        hp = plans[host.name]
        command = readiness.probe_command(hp, str(stage.setting("repo")), stage.secret_files, stage.redactor)
        result = backend.run(command)
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
                print(f"{r.host}: ready (branch {plan.branch} at {r.facts.get('branch_head', '?')}, "
                      f"{r.facts.get('free_mb', '?')} MB free)")
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
