"""Skipping work a release does not need, on real hosts (issue 24): real Bundler, real Sequel on SQLite.

It never skips wrongly: a release that adds a gem runs bundler, a release that adds a migration
migrates, a host whose last deploy failed mid-way runs everything; `--no-skip` and
`steps.NAME.always` turn the checks off. A fleet of its own (two hosts on the test subnet's .71 and
.72): its origin gets migrations and gems the session fleet's other tests do not expect.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from conftest import FLEET_SUBNET, Project, _can_run_fleet, doc_shows, head, migrations

from pampa_deployer.fleet import Fleet

pytestmark = pytest.mark.fleet

HOSTS = ("kepler-1", "newton-1")
GEMS_OK = "gems already installed"


@pytest.fixture(scope="module")
def skipfleet(tmp_path_factory):
    why = _can_run_fleet()
    if why:
        pytest.fail(f"cannot start the test fleet: {why}") if os.environ.get("CI") else pytest.skip(why)
    fleet = Fleet(tmp_path_factory.mktemp("skipfleet"), [("kepler-1", ("kepler",)), ("newton-1", ("newton",))],
                  subnet=FLEET_SUBNET, first=71, port=2222)
    fleet.create()
    fleet.start()
    yield fleet
    fleet.stop()


#: On the hosts' PATH before Bundler: `bundle install` offline (--local: the test machine has no network,
#: and a gem missing from the host would make Bundler ask rubygems.org); `bundle check` is Bundler's own.
OFFLINE_BUNDLE = f"""#!/bin/sh
if [ "$1" = install ]; then shift; exec {shutil.which("bundle")} install --local "$@"; fi
exec {shutil.which("bundle")} "$@"
"""


@pytest.fixture
def project(tmp_path, skipfleet):
    project = Project(tmp_path, skipfleet)
    for host in HOSTS:
        wrapper = skipfleet.home(host) / "bin" / "bundle"
        wrapper.parent.mkdir(exist_ok=True)
        wrapper.write_text(OFFLINE_BUNDLE)
        wrapper.chmod(0o755)
    # Gems go to each host's own GEM_HOME (its home folder): the machine's gems are not touched.
    project.stage(env={"GEM_HOME": "/root/.gem/pampa", "PATH": f"/root/bin:{os.environ['PATH']}"})
    return project


def deploy(project, *args: str, ok: bool = True) -> tuple[str, dict]:
    """``pampa deploy test ARGS``: its output and {host: {step: skipped reason or None}} from the report."""
    result = project.pampa("deploy", "test", *args, "--report", "r.json")
    assert (result.returncode == 0) == ok, result.stdout + result.stderr
    report = json.loads((project.root / "r.json").read_text())
    return result.stdout, {h["name"]: {s["name"]: s["skipped"] for s in h["steps"]} for h in report["hosts"]}


def known_state(project) -> None:
    """Every host deployed fully and ok: the starting point of each test."""
    _, steps = deploy(project, "--no-skip")
    assert all(s["bundle"] is None and s["migrate"] is None for s in steps.values())


def test_a_code_only_release_skips_bundle_and_migrate_and_says_so(project, skipfleet):
    known_state(project)
    before = head(skipfleet, "kepler-1")
    new = skipfleet.commit("Code only", {"app_note.txt": "a code change\n"})

    out, steps = deploy(project)

    for host in HOSTS:
        assert steps[host]["bundle"] == GEMS_OK
        assert steps[host]["migrate"] == f"no new migrations: db/migrations unchanged since {before[:7]}, " \
                                         "database at version 2"
        assert f"{host} bundle skipped: {GEMS_OK} (" in out
        assert f"{host} migrate skipped: no new migrations: db/migrations unchanged since" in out
        assert head(skipfleet, host) == new and migrations(skipfleet, host) == ["2"]
        assert steps[host]["restart_puma" if host == "kepler-1" else "restart_workers"] is None  # the rest ran
    doc_shows("sequences.md", "skip-output", out)
    run = max((project.root / ".pampa" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    assert f"[bundle] skipped: {GEMS_OK}" in (run / "hosts" / "newton-1.log").read_text()

    # Per run and per step, the checks can be turned off.
    _, steps = deploy(project, "--no-skip")
    assert all(s["bundle"] is None and s["migrate"] is None for s in steps.values())
    project.edit("test", lambda d: d.update(steps={"migrate": {"always": True}}))
    _, steps = deploy(project)
    assert all(s["bundle"] == GEMS_OK and s["migrate"] is None for s in steps.values())


def test_a_release_adding_a_migration_migrates(project, skipfleet):
    known_state(project)
    n = len(list((skipfleet.work / "db" / "migrations").glob("*.rb"))) + 1
    skipfleet.commit("A migration", {f"db/migrations/{n:03d}_add_visit_note.rb":
                                     f"Sequel.migration do\n  change do\n    add_column :visits, :note{n}, String\n"
                                     "  end\nend\n"})

    _, steps = deploy(project)

    for host in HOSTS:
        assert steps[host]["migrate"] is None and steps[host]["bundle"] == GEMS_OK
        assert migrations(skipfleet, host) == [str(n)]
    _, steps = deploy(project)  # and once it is applied, the next release skips it again
    assert all(s["migrate"].endswith(f"database at version {n}") for s in steps.values())


def _gem_repo(fleet, name: str) -> str:
    """A tiny gem in a git repository every host can read (bundler installs it offline)."""
    repo = fleet.root / "gems" / name
    (repo / "lib").mkdir(parents=True)
    (repo / "lib" / f"{name}.rb").write_text(f"module {name.title().replace('_', '')}\nend\n")
    (repo / f"{name}.gemspec").write_text(
        f'Gem::Specification.new do |s|\n  s.name = "{name}"\n  s.version = "0.1.0"\n  s.summary = "t"\n'
        f'  s.authors = ["Pampa"]\n  s.files = ["lib/{name}.rb"]\nend\n')
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", name]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return str(repo)


def test_a_release_adding_a_gem_runs_bundler(project, skipfleet, tmp_path):
    known_state(project)
    name = f"pampa_skip_{len(list((skipfleet.root / 'gems').glob('*'))) if (skipfleet.root / 'gems').exists() else 0}"
    gemfile = (skipfleet.work / "Gemfile").read_text()
    (skipfleet.work / "Gemfile").write_text(gemfile + f'gem "{name}", git: "{_gem_repo(skipfleet, name)}", '
                                            'branch: "main"\n')
    subprocess.run(["bundle", "install", "--local", "--quiet"], cwd=skipfleet.work, check=True, timeout=120,
                   env={**os.environ, "GEM_HOME": str(tmp_path / "gems")}, capture_output=True)
    skipfleet.commit(f"Use the {name} gem")

    out, steps = deploy(project)

    for host in HOSTS:
        assert steps[host]["bundle"] is None, out  # `bundle check` found the new gem missing
        assert f"{host} bundle ok" in out
        check = subprocess.run(["bundle", "check"], cwd=skipfleet.code(host), capture_output=True, text=True,
                               env={**os.environ, "GEM_HOME": str(skipfleet.home(host) / ".gem" / "pampa"),
                                    "HOME": str(skipfleet.home(host))})
        assert check.returncode == 0, check.stdout + check.stderr  # and it is installed now
    _, steps = deploy(project)
    assert all(s["bundle"] == GEMS_OK for s in steps.values())


def test_a_host_whose_last_deploy_failed_mid_way_runs_everything(project, skipfleet):
    known_state(project)
    project.edit("test", lambda d: d.update(steps={"boom": {"run": "exit 3", "roles": ["newton"],
                                                            "after": "migrate"}}))
    skipfleet.commit("A release newton-1 fails")
    out, steps = deploy(project, ok=False)
    assert "RESULT newton-1 [newton] failed at boom exit 3" in out
    project.edit("test", lambda d: d.pop("steps"))
    skipfleet.commit("The fix")

    _, steps = deploy(project)

    assert steps["newton-1"]["bundle"] is None and steps["newton-1"]["migrate"] is None  # everything ran
    assert steps["kepler-1"]["bundle"] == GEMS_OK and steps["kepler-1"]["migrate"].startswith("no new migrations")
