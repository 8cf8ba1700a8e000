"""What ``pampa check`` concludes about a host: the facts its plan implies, the probe to send, the judgement.

The probe itself is a pure builder (``commands/readiness.py``) that takes plain data; this module
walks the host's plan for that data (which folders secrets go to, which restart commands use sudo,
which programs the steps call) and turns the probe's answer into problems, each with its fix.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from .commands import readiness
from .commands.command import Command
from .plan import HostPlan
from .steps.actions import Restart
from .steps.secrets import remote_path


def sudo_commands(hp: HostPlan) -> list[str]:
    """The scripts of the host's restart steps that call sudo (they must not prompt for a password)."""
    return [c.script for s in hp.steps if s.name.startswith("restart") for a in s.actions for c in a.commands()
            if "sudo" in c.script.split()]


def secret_folders(hp: HostPlan, secret_files) -> list[str]:
    folders: list[str] = []
    for f in secret_files:
        folder = posixpath.dirname(remote_path(hp.host.path, f.remote)) or hp.host.path
        if folder not in folders:
            folders.append(folder)
    return folders


def service_probes(hp: HostPlan) -> list[str]:
    """The read-only probes of the host's services that need one (a puma restarted hot or phased)."""
    return [a.probe for s in hp.steps for a in s.actions if isinstance(a, Restart) and a.probe]


def probe_for(stage, hp: HostPlan) -> Command:
    """The host's readiness probe, from what its plan says it will need."""
    commands = (c for step in hp.steps for action in step.actions for c in action.commands())
    return readiness.probe_command(hp.host, str(stage.setting("repo")), secret_folders(hp, stage.secret_files),
                                   bool(sudo_commands(hp)), readiness.programs_used(commands), stage.redactor,
                                   service_probes(hp))


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
    if found.get("checkout") == "not-a-checkout" and hp.layout is None:  # a releases root is no checkout
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
    for i, folder in enumerate(secret_folders(hp, stage.secret_files)):
        _folder(out, "secrets", found.get(f"secret:{i}", ""), f"secret files' folder {folder}",
                "create it, fix the secret's `remote`, or its parent's permissions")
    sudo = found.get("sudo")
    if sudo is not None and sudo != "ok":
        what = sudo_commands(hp)[0]
        why = "sudo is not installed" if sudo == "not-installed" else \
            f"sudo needs a password ({sudo.partition(':')[2].strip() or 'sudo -n failed'})"
        out.problems.append(Problem("sudo", f"{why}, so `{what}` would stop the deploy",
                                    f"allow it without a password (NOPASSWD in sudoers for {host.user or 'the user'}) "
                                    "or change units.restart"))
    for key, value in found.items():
        if key.startswith("cmd:") and value != "ok":
            out.problems.append(Problem("commands", f"command '{key[4:]}' is not installed (a deploy step runs it)",
                                        "install it, or load it with the stage's `prefix` (e.g. rvm)"))
    _puma(out, stage, hp, found)
    return out


def _puma(out: HostReadiness, stage, hp, found: dict[str, str]) -> None:
    """What the puma probes said: can a hot or phased restart do its work on this host?"""
    mode = stage.setting("units.puma_restart") or "full"
    live = hp.layout.current if hp.layout is not None else hp.host.path
    docs = "(docs/operations.md, Zero-downtime restarts)"
    for key, value in found.items():
        if not key.startswith("puma:"):
            continue
        unit, _, aspect = key[len("puma:"):].partition(".")
        state, _, detail = value.partition(":")
        if not aspect and state == "cluster":
            out.facts.setdefault("puma", {})[unit] = f"{mode}, {detail} workers"
        elif not aspect and state == "not-running":
            out.facts.setdefault("puma", {})[unit] = "not running (a deploy starts it)"
        elif not aspect and state == "single":
            out.problems.append(Problem("puma", f"puma ({unit}) runs in single mode: a {mode} restart needs cluster "
                                        "mode", f"set workers (2 or more) in config/puma.rb {docs}, or set "
                                        "units.puma_restart: full"))
        elif not aspect and state == "no-control":
            out.problems.append(Problem("puma", f"puma ({unit}) answers on no control app ({detail.strip()}), so a "
                                        f"{mode} restart could not tell when it is done",
                                        f"add state_path and activate_control_app to config/puma.rb {docs}, check "
                                        "units.puma_state, or set units.puma_restart: full"))
        elif aspect == "moved":
            pumas = out.facts.setdefault("puma", {})
            pumas[unit] = (pumas.get(unit, "running") + f"; runs from {value}, outside the stage's code: the next "
                           "deploy restarts it fully, once")
        elif aspect == "directory":
            out.problems.append(Problem("puma", f"{live}/config/puma.rb sets no directory, so a {mode} restart of "
                                        f"puma ({unit}) re-enters the folder it was started in, not the new "
                                        "release", f"add `directory \"{live}\"` to config/puma.rb {docs}"))
        elif aspect == "prune_bundler":
            out.problems.append(Problem("puma", f"{live}/config/puma.rb has no prune_bundler, so the workers of a "
                                        f"{mode} restart of puma ({unit}) keep the gems of the release puma "
                                        "started in", f"add prune_bundler to config/puma.rb {docs}"))
        elif aspect == "config":
            out.facts.setdefault("puma_config", {})[unit] = f"no {live}/config/puma.rb: not checked"


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
