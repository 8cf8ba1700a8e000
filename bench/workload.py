"""The reference sequence, built by pampa's own planner so every tool runs the very same command lines.

Sequence: git fetch, git reset, a secret upload, a migration, bundler, two restarts, a version report.
- light: cheap stand-ins for each command, so orchestration dominates;
- app: the real demo Ruby app (git, Sequel on SQLite, bundler, puma and a worker).
Each host reads its own address from ~/address (written at fleet creation), so one command line
serves every host.
"""
from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

from pampa_deployer.fleet import Fleet
from pampa_deployer.inventory import load_stage
from pampa_deployer.plan import build_plan
from pampa_deployer.steps.actions import ReportVersion, Run, Upload

SEQUENCE = ["git_fetch", "git_reset", "secrets", "migrate", "bundle", "restart_puma", "restart_workers",
            "report_version"]
SECRET = "BENCH_SECRET = 'b3nch-s3cret'\n"

LIGHT_STEPS = {
    "git_fetch": "mkdir -p ~/bench && echo git_fetch > ~/bench/steps",
    "git_reset": "echo git_reset >> ~/bench/steps",
    "migrate": "echo migrate >> ~/bench/steps",
    "bundle": "echo bundle >> ~/bench/steps",
    "restart_puma": "echo restart_puma >> ~/bench/steps",
    "restart_workers": "echo restart_workers >> ~/bench/steps",
    "report_version": "echo report_version >> ~/bench/steps",
}


def stage_data(fleet: Fleet, hosts, workload: str, parallel: int) -> dict:
    # The reference order (migrate, then bundle) stays as it was measured since the start.
    common = {"roles": {"bench": {"sequence": SEQUENCE}}, "parallel": parallel, "bundler": {"before_migrate": False}}
    if workload == "light":
        data = fleet.stage_data(
            path="~/bench-app", env={}, units={"puma": [], "workers": []},  # a folder of its own (no ~)
            secrets=[{"local": "secrets/config.rb", "remote": "~/bench/config.rb"}],
            steps={name: {"run": cmd} for name, cmd in LIGHT_STEPS.items()}, **common)
    else:
        data = fleet.stage_data(
            units={"restart": "cd {path} && bin/restart {unit} $(cat ~/address)", "puma": ["puma"],
                   "workers": ["worker"]},
            secrets=[{"local": "secrets/config.rb", "remote": "config.rb"}],
            steps={"migrate": {"run": "bundle exec sequel -m db/migrations $DATABASE_URL"}}, **common)
    # Replace (not merge) the fleet's hosts: exactly the N hosts every peer deploys to.
    data["hosts"] = {h.name: {"address": h.address, "port": h.port, "roles": ["bench"]} for h in hosts}
    return data


def write_stage(fleet: Fleet, hosts, workload: str, parallel: int, project: Path) -> Path:
    stages = project / "stages"
    (stages / "secrets").mkdir(parents=True, exist_ok=True)
    (stages / "secrets" / "config.rb").write_text(SECRET)
    (stages / "secrets" / "config.rb").chmod(0o600)
    import yaml
    (stages / "bench.yml").write_text(yaml.safe_dump(stage_data(fleet, hosts, workload, parallel), sort_keys=False))
    return stages


def spec(fleet: Fleet, hosts, workload: str, project: Path) -> dict:
    """The steps as plain data for the peer scripts: the first host's planned commands, verbatim."""
    stage = load_stage("bench", project / "stages")
    plan = build_plan(stage)
    assert len(plan.hosts) == len(hosts), "pampa must deploy exactly the hosts the peers deploy"
    steps = []
    for step in plan.hosts[0].steps:
        for action in step.actions:
            if isinstance(action, Run):
                steps.append([step.name, "run", action.command.line()])
            elif isinstance(action, ReportVersion):
                steps.append([step.name, "run", action.revision.line()])
            elif isinstance(action, Upload):
                steps.append([step.name, "put", str(project / "stages" / action.source), action.remote,
                              action.mode])
    return {"hosts": [[h.name, h.address, h.port] for h in hosts], "user": "root", "key": str(fleet.key),
            "known_hosts": str(fleet.known_hosts), "homes": {h.name: str(fleet.home(h.name)) for h in hosts},
            "steps": steps}


def reset(fleet: Fleet, hosts, workload: str) -> str | None:
    """Make the next run do real work: clear the light marker, or push a new app revision."""
    if workload == "light":
        import shutil
        for h in hosts:
            shutil.rmtree(fleet.home(h.name) / "bench", ignore_errors=True)
            (fleet.home(h.name) / "bench-app").mkdir(exist_ok=True)  # the code path the commands run in
        return None
    return fleet.commit("bench release")


def verify(fleet: Fleet, hosts, workload: str, revision: str | None) -> list[str]:
    """What is wrong on the hosts after a run (empty: every host really deployed)."""
    problems = []
    for h in hosts:
        home = fleet.home(h.name)
        if workload == "light":
            steps_file = home / "bench" / "steps"
            got = steps_file.read_text().split() if steps_file.exists() else []
            if got != [s for s in SEQUENCE if s != "secrets"]:
                problems.append(f"{h.name}: steps {got}")
            secret = home / "bench" / "config.rb"
            if not secret.exists() or secret.read_text() != SECRET or stat.S_IMODE(secret.stat().st_mode) != 0o600:
                problems.append(f"{h.name}: secret file missing or wrong")
            continue
        code = fleet.code(h.name)
        import subprocess
        head = subprocess.run(["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        if head != revision:
            problems.append(f"{h.name}: HEAD {head[:10]} != {str(revision)[:10]}")
        if not (code / "config.rb").exists():
            problems.append(f"{h.name}: no config.rb")
        db = code / "db" / "app.sqlite3"
        if not db.exists() or sqlite3.connect(db).execute("SELECT version FROM schema_info").fetchone()[0] < 2:
            problems.append(f"{h.name}: migrations not applied")
        # puma must answer with the new revision. Waiting for it also lets every puma finish booting
        # before the next tool is timed, so no tool pays for the previous one's background work.
        if not _serves(h.address, revision):
            problems.append(f"{h.name}: puma does not serve {str(revision)[:10]}")
    return problems


def _serves(address: str, revision: str | None, timeout: float = 60.0) -> bool:
    import time
    import urllib.request
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = urllib.request.urlopen(f"http://{address}:9292/", timeout=2).read().decode()
            if f"revision={revision}" in body:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def dump(obj, path: Path) -> Path:
    path.write_text(json.dumps(obj, indent=1))
    return path
