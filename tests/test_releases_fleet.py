"""The releases strategy on the real fleet: layout, atomic switch, interruption, pruning, rollback."""
from __future__ import annotations

import os
import signal
import stat

import pytest
from conftest import SECRET
from releasefleet import ROOT, WEB, current, releases, root, serving

pytestmark = pytest.mark.fleet

BUILDERS = ["kepler-1", "kepler-2", "newton-1", "newton-2"]


def releases_stage(project, **extra):
    settings = dict(
        path=f"~/{ROOT}/{{app}}", strategy="releases", shared_files=["db/app.sqlite3"], checks={"web": WEB},
        sequences={"euler": ["git_fetch", "git_reset", "bundle", "restart_puma", "report_version"],
                   "copernico": ["git_fetch", "git_reset", "bundle", "restart_processes", "report_version"]})
    settings.update(extra)
    return project.stage(**settings)


def wait_for_line(proc, text: str, seen: list[str]) -> None:
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"never saw {text!r}: {''.join(seen)}")


def test_releases_deploy_builds_links_and_switches(project, fleet):
    releases_stage(project)
    first = fleet.commit("First release in releases/")
    assert project.pampa("deploy", "test").returncode == 0
    second = fleet.commit("Second release in releases/")

    result = project.pampa("deploy", "test", "--report", "r.json")

    assert result.returncode == 0, result.stdout + result.stderr
    for host in [h.name for h in fleet.hosts]:
        base = root(fleet, host)
        assert (base / "repo.git" / "HEAD").exists()  # the bare mirror
        live = base / current(fleet, host)
        assert current(fleet, host).startswith("releases/") and current(fleet, host).endswith(second[:7])
        assert (live / "REVISION").read_text() == second + "\n"
        assert (live / ".git").read_text().startswith(f"gitdir: /root/{ROOT}/{fleet.app}/repo.git/worktrees/")
        assert os.readlink(live / "db" / "app.sqlite3") == f"/root/{ROOT}/{fleet.app}/shared/db/app.sqlite3"
        if host in BUILDERS:  # secrets live in shared/, 0600, linked into the release
            secret = base / "shared" / "config.rb"
            assert secret.read_text() == f"DB_PASSWORD = '{SECRET}'\n"
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
            assert os.readlink(live / "config.rb") == f"/root/{ROOT}/{fleet.app}/shared/config.rb"
        previous = [r for r in releases(fleet, host) if r.endswith(first[:7])]
        assert len(previous) == 1 and (base / "releases" / previous[0] / ".pampa-live").exists()
    assert f"revision={second}" in serving(fleet, "kepler-1")  # restarts acted on current
    assert f"revision={second}" in serving(fleet, "euler-1")
    assert "switch_release" in result.stdout


def test_interrupted_releases_deploy_leaves_current_serving(project, fleet):
    releases_stage(project)
    running = fleet.commit("Release that keeps running")
    assert project.pampa("deploy", "test").returncode == 0
    project.edit("test", lambda d: d.update(steps={"slow": {"run": "sleep 4", "roles": ["kepler", "newton"],
                                                            "after": "migrate"}}))
    before = {h: current(fleet, h) for h in BUILDERS}
    fleet.commit("Release interrupted before its switch")

    proc = project.popen("deploy", "test")
    seen: list[str] = []
    wait_for_line(proc, "kepler-1 slow start", seen)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)

    assert proc.returncode == 130, "".join(seen) + out + err
    for host in BUILDERS:
        assert current(fleet, host) == before[host], host  # never switched
        assert len(releases(fleet, host)) >= 2  # the unfinished release was built beside it
    assert f"revision={running}" in serving(fleet, "kepler-1")
    assert f"revision={running}" in serving(fleet, "euler-1")  # gated: not touched at all


def test_pruning_keeps_exactly_n_releases_never_current_or_previous(project, fleet):
    releases_stage(project, keep_releases=3)
    revisions = []
    for n in range(4):
        revisions.append(fleet.commit(f"Release {n} for pruning"))
        result = project.pampa("deploy", "test", "--hosts", "kepler-1")
        assert result.returncode == 0, result.stdout + result.stderr

    kept = releases(fleet, "kepler-1")
    assert len(kept) == 3
    assert current(fleet, "kepler-1") == f"releases/{kept[-1]}" and kept[-1].endswith(revisions[-1][:7])
    assert kept[-2].endswith(revisions[-2][:7])  # previous: what a rollback returns to
    worktrees = os.listdir(root(fleet, "kepler-1") / "repo.git" / "worktrees")
    assert sorted(worktrees) == kept  # pruned releases' worktree records are gone too


def test_rollback_is_one_switch_and_serves_the_previous_revision(project, fleet):
    import json
    releases_stage(project)
    old = fleet.commit("Release A, rolled back to")
    assert project.pampa("deploy", "test").returncode == 0
    new = fleet.commit("Release B, rolled back from")
    assert project.pampa("deploy", "test").returncode == 0
    before = {h.name: releases(fleet, h.name) for h in fleet.hosts}
    old_release = {h.name: next(r for r in reversed(before[h.name]) if r.endswith(old[:7])) for h in fleet.hosts}

    dry = project.pampa("rollback", "test", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"= {old} ]" in dry.stdout and "bundle install" not in dry.stdout
    assert current(fleet, "kepler-1").endswith(new[:7])  # the dry run changed nothing

    result = project.pampa("rollback", "test", "--report", "r.json")

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((project.root / "r.json").read_text())
    assert report["revision"] == old
    for host in report["hosts"]:
        name = host["name"]
        assert current(fleet, name) == f"releases/{old_release[name]}", name
        assert releases(fleet, name) == before[name]  # nothing built, nothing pruned: one switch
        assert [s["name"] for s in host["steps"]][0] == "switch_release"
        assert "bundle" not in [s["name"] for s in host["steps"]]
    assert f"revision={old}" in serving(fleet, "kepler-1")
    assert f"revision={old}" in serving(fleet, "euler-1")
    status = json.loads(project.pampa("status", "test", "--json").stdout)
    for row in status["hosts"]:
        assert row["release"] == old_release[row["host"]] and row["revision"] == old
        assert row["last_result"] == "ok"


def test_rollback_refuses_when_a_host_has_no_intact_release_of_the_target(project, fleet):
    releases_stage(project)
    assert project.pampa("deploy", "test").returncode == 0
    before = {h.name: current(fleet, h.name) for h in fleet.hosts}
    result = project.pampa("rollback", "test", "--to", fleet.revisions()[-1])  # never deployed as a release
    assert result.returncode == 4, result.stdout + result.stderr
    assert "no intact release of" in result.stderr and "Nothing was changed" in result.stderr
    assert {h.name: current(fleet, h.name) for h in fleet.hosts} == before
