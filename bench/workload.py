"""The reference sequence, built by pampa's own planner so every tool runs the very same command lines.

Sequence: git fetch, git reset, a secret upload, a migration, bundler, two restarts, a version report.
- light: cheap stand-ins for each command, so orchestration dominates;
- app: the real demo Ruby app (git, Sequel on SQLite, bundler, puma and a worker); each run deploys a
  release that changes only code;
- app-change: the same, but each release adds a gem (a git gem: Bundler installs it) and a migration.
  Each host keeps its gems in its own GEM_HOME (~/.gem/bench), and Bundler's mirror of rubygems.org is
  an empty local index, so `bundle install` resolves offline.
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
from pampa_deployer.steps.actions import ReportVersion, Restart, Run, Upload

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
    # The reference order (migrate, then bundle) stays as it was measured since the start. The first host
    # is a kepler with the same sequence: pampa's gate opens when it has finished (its report says when),
    # and no role waits for it, so every tool still runs every host at once.
    common = {"roles": {"bench": {"sequence": SEQUENCE}, "kepler": {"sequence": SEQUENCE}}, "parallel": parallel,
              "bundler": {"before_migrate": workload == "app-change"}}  # a new gem is installed before migrating
    if workload == "light":
        data = fleet.stage_data(
            path="~/bench-app", env={}, units={"puma": [], "workers": []},  # a folder of its own (no ~)
            secrets=[{"local": "secrets/config.rb", "remote": "~/bench/config.rb"}],
            steps={name: {"run": cmd} for name, cmd in LIGHT_STEPS.items()}, **common)
    else:  # migrate and bundle are pampa's built-in steps (`bundle exec sequel -m db/migrations $DATABASE_URL`)
        data = fleet.stage_data(
            units={"restart": "cd {path} && bin/restart {unit} $(cat ~/address)", "puma": ["puma"],
                   "workers": ["worker"]},
            secrets=[{"local": "secrets/config.rb", "remote": "config.rb"}], **common)
        if workload == "app-change":
            data["env"] = {**data["env"], "GEM_HOME": "/root/.gem/bench"}
    # Replace (not merge) the fleet's hosts: exactly the N hosts every peer deploys to.
    data["hosts"] = {h.name: {"address": h.address, "port": h.port, "roles": ["kepler" if i == 0 else "bench"]}
                     for i, h in enumerate(hosts)}
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
    """The steps as plain data for the peer scripts: the first host's planned commands, verbatim (bundle
    and migrate as typed, without the condition pampa wraps them in: the full sequence)."""
    stage = load_stage("bench", project / "stages")
    plan = build_plan(stage)
    assert len(plan.hosts) == len(hosts), "pampa must deploy exactly the hosts the peers deploy"
    steps = []
    for step in plan.hosts[0].steps:
        for action in step.actions:
            if isinstance(action, Run):  # as typed: a peer runs bundle and migrate every time, as pampa did
                steps.append([step.name, "run", (action.typed or action.command).line()])
            elif isinstance(action, Restart):  # the drain, or puma's phased restart and its wait
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
    if workload == "app-change":
        return _release_with_gem_and_migration(fleet, hosts)
    return fleet.commit("bench release")


def offline_bundler(fleet: Fleet, homes) -> Path:
    """Bundler's mirror of rubygems.org in each home's ~/.bundle/config: an empty local index (this machine
    has no network; the gems the app needs are the machine's, and new ones come from git)."""
    import subprocess
    index = fleet.root / "gem-index"
    if not (index / "specs.4.8.gz").exists():
        (index / "gems").mkdir(parents=True, exist_ok=True)
        subprocess.run(["gem", "generate_index", "-d", str(index)], check=True, capture_output=True)
    for home in homes:
        (home / ".bundle").mkdir(parents=True, exist_ok=True)
        (home / ".bundle" / "config").write_text(f'---\nBUNDLE_MIRROR__HTTPS://RUBYGEMS__ORG/: "file://{index}"\n')
    return index


def _release_with_gem_and_migration(fleet: Fleet, hosts) -> str:
    """Commit a release adding a git gem (``bench_gem_N``) to the Gemfile and its lock, and a migration."""
    import subprocess
    offline_bundler(fleet, [fleet.home(h.name) for h in hosts] + [fleet.root / "lock-home"])
    migrations = fleet.work / "db" / "migrations"
    n = len(list(migrations.glob("*.rb"))) + 1
    gem = fleet.root / "gems" / f"bench_gem_{n}"
    (gem / "lib").mkdir(parents=True, exist_ok=True)
    (gem / "lib" / f"bench_gem_{n}.rb").write_text(f"module BenchGem{n}\nend\n")
    (gem / f"bench_gem_{n}.gemspec").write_text(
        f'Gem::Specification.new do |s|\n  s.name = "bench_gem_{n}"\n  s.version = "0.1.0"\n  s.summary = "b"\n'
        f'  s.authors = ["bench"]\n  s.files = ["lib/bench_gem_{n}.rb"]\nend\n')
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "gem"]):
        subprocess.run(["git", *args], cwd=gem, check=True, capture_output=True)
    with open(fleet.work / "Gemfile", "a") as f:
        f.write(f'gem "bench_gem_{n}", git: "{gem}", branch: "main"\n')
    (migrations / f"{n:03d}_bench_{n}.rb").write_text(
        f"Sequel.migration do\n  change do\n    add_column :visits, :bench_{n}, String\n  end\nend\n")
    env = {"HOME": str(fleet.root / "lock-home"), "GEM_HOME": str(fleet.root / "lock-home" / "gems"),
           "PATH": "/usr/local/bin:/usr/bin:/bin"}
    subprocess.run(["bundle", "lock"], cwd=fleet.work, env=env, check=True, capture_output=True, timeout=300)
    return fleet.commit(f"bench release: bench_gem_{n} and migration {n}")


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
        wanted = len(list((code / "db" / "migrations").glob("*.rb")))
        if not db.exists() or sqlite3.connect(db).execute("SELECT version FROM schema_info").fetchone()[0] != wanted:
            problems.append(f"{h.name}: migrations not applied")
        if workload == "app-change":  # the release's new gem is installed in the host's own GEM_HOME
            newest = sorted((code / "db" / "migrations").glob("*_bench_*.rb"))[-1:]
            name = f"bench_gem_{int(newest[0].name.split('_')[0])}" if newest else None
            if name and not list((home / ".gem" / "bench" / "bundler" / "gems").glob(f"{name}-*")):
                problems.append(f"{h.name}: gem {name} not installed")
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
