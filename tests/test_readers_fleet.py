"""`pampa pending`, `history` and `releases` on the real fleet: each answer checked against the hosts' own
files and the origin repository, never against pampa's own bookkeeping alone."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest
from conftest import doc_shows, head
from releasefleet import WEB

pytestmark = pytest.mark.fleet

MIGRATION = "db/migrations/090_add_visit_browser.rb"
BROWSER = "Sequel.migration do\n  change do\n    add_column :visits, :browser, String\n  end\nend\n"


def git(cwd, *args) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Pampa Demo", "GIT_AUTHOR_EMAIL": "demo@pampa.local",
           "GIT_COMMITTER_NAME": "Pampa Demo", "GIT_COMMITTER_EMAIL": "demo@pampa.local"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def branch_commit(fleet, branch: str, message: str, files: dict[str, str]) -> str:
    """A commit on ``branch`` (from origin's main), pushed; origin's main and the work tree stay as they were."""
    work = fleet.work
    git(work, "checkout", "-q", "-B", branch, "main")
    try:
        for name, text in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", message)
        git(work, "push", "-q", "-f", "origin", branch)
        return git(work, "rev-parse", "HEAD")
    finally:
        git(work, "checkout", "-q", "main")
        git(work, "reset", "-q", "--hard", "origin/main")


def with_gem(lock: str, name: str, version: str) -> str:
    """Gemfile.lock with one more resolved gem (under GEM specs) and dependency."""
    lock = re.sub(r"^(  specs:\n)", rf"\1    {name} ({version})\n", lock, count=1, flags=re.M)
    return re.sub(r"^(DEPENDENCIES\n)", rf"\1  {name}\n", lock, count=1, flags=re.M)


def reset_host(fleet, name: str, revision: str) -> None:
    git(fleet.code(name), "reset", "-q", "--hard", revision)


# -- pending ---------------------------------------------------------------------------------------------
def test_pending_previews_a_new_migration_and_a_changed_gemfile_lock_exactly(project, fleet):
    project.stage("production")
    base = fleet.commit("Release before the preview", {"NOTES.txt": "what ships next\n"})
    assert project.pampa("deploy", "production").returncode == 0
    lock = (fleet.work / "Gemfile.lock").read_text()
    preview = branch_commit(fleet, "preview", "Record each visit's browser, with pampa_preview",
                            {MIGRATION: BROWSER, "Gemfile.lock": with_gem(lock, "pampa_preview", "0.2.0")})
    older = git(fleet.origin, "rev-parse", f"{base}~1")
    first = fleet.revisions()[-1]
    try:
        reset_host(fleet, "newton-2", older)  # one host a release behind the others
        for name in ("euler-1", "copernico-1"):  # their sequences never move their code: one revision
            reset_host(fleet, name, first)
        text = project.pampa("pending", "production", "--branch", "preview")
        found = json.loads(project.pampa("pending", "production", "--branch", "preview", "--json").stdout)
        on_hosts = {h.name: head(fleet, h.name) for h in fleet.hosts}  # what the hosts run, read from their disks
    finally:
        reset_host(fleet, "newton-2", base)

    assert text.returncode == 0, text.stdout + text.stderr
    groups = {tuple(g["hosts"]): g for g in found["groups"]}
    assert set(groups) == {("kepler-1", "kepler-2", "newton-1"), ("newton-2",), ("euler-1", "copernico-1")}
    for hosts, g in groups.items():
        assert {on_hosts[h] for h in hosts} == {g["revision"]}  # grouped by what each host really runs
    ahead = groups[("kepler-1", "kepler-2", "newton-1")]
    assert (ahead["state"], ahead["target"], ahead["behind"], ahead["ahead"]) == ("behind", preview, 1, 0)
    assert [(c["revision"], c["author"], c["subject"]) for c in ahead["commits"]] == [
        (preview, "Pampa Demo", "Record each visit's browser, with pampa_preview")]
    assert ahead["migrations"] == [MIGRATION] and ahead["migrations_run_on"] == ["kepler-1", "kepler-2", "newton-1"]
    assert ahead["gemfile_lock"] == {"added": {"pampa_preview": "0.2.0"}, "removed": {}, "updated": {},
                                     "bundler": None, "truncated": False}
    assert (ahead["files_changed"], ahead["insertions"], ahead["deletions"]) == (2, 7, 0)
    behind = groups[("newton-2",)]
    assert [c["revision"] for c in behind["commits"]] == [preview, base] and behind["files_changed"] == 3
    assert behind["migrations"] == [MIGRATION]
    static = groups[("euler-1", "copernico-1")]
    assert static["state"] == "not_updated" and static["revision"] == first
    assert found["complete"] and found["unreachable"] == []
    doc_shows("operations.md", "output: pending", text.stdout)


def test_pending_names_an_unreachable_host_and_a_revision_the_repository_lacks(project, fleet):
    project.stage()
    assert project.pampa("deploy", "test", "--roles", "kepler,newton").returncode == 0
    local = git(fleet.code("newton-1"), "-c", "user.name=ops", "-c", "user.email=ops@x", "commit", "-q",
                "--allow-empty", "-m", "hotfixed on the host")
    local = head(fleet, "newton-1")
    fleet.stop_host("newton-2")
    try:
        result = project.pampa("pending", "test", "--roles", "kepler,newton")
        found = json.loads(project.pampa("pending", "test", "--roles", "kepler,newton", "--json").stdout)
    finally:
        fleet.start_host("newton-2")
        reset_host(fleet, "newton-1", fleet.revisions()[0])
    assert result.returncode == 1
    assert "newton-2: unreachable (not read):" in result.stdout
    assert f"newton-1: {local[:12]} is not in the repository" in result.stdout
    assert result.stderr.strip().splitlines() == [
        "pampa: error: pending test: cannot say what a deploy brings to newton-2, newton-1"]
    assert [u["host"] for u in found["unreachable"]] == ["newton-2"] and not found["complete"]
    assert any(g["hosts"] == ["newton-1"] and g["state"] == "unknown" for g in found["groups"])


def test_deploy_preview_changes_nothing(project, fleet):
    project.stage()
    assert project.pampa("deploy", "test").returncode == 0
    before = {h.name: head(fleet, h.name) for h in fleet.hosts}
    new = fleet.commit("A release only previewed")
    result = project.pampa("deploy", "test", "--preview")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"-> {new[:12]} (main): 1 commit" in result.stdout and "preview only: nothing was deployed" in result.stdout
    assert {h.name: head(fleet, h.name) for h in fleet.hosts} == before
    bad = project.pampa("deploy", "test", "--preview", "--branch", "no-such-branch")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "branch no-such-branch is not in" in bad.stderr


# -- history ----------------------------------------------------------------------------------------------
def revlog(fleet, host) -> list[dict]:
    path = fleet.code(host).parent / f"{fleet.app}.revisions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_history_merges_the_hosts_logs_newest_first(project, fleet):
    project.stage("production")
    assert project.pampa("deploy", "production", "-m", "release 41").returncode == 0
    fleet.commit("A release newton-2 cannot take")
    project.edit("production", lambda d: d.update(steps={"disk_check": {
        "run": "test $PAMPA_HOST != newton-2", "roles": ["newton"], "after": "git_reset"}}))
    assert project.pampa("deploy", "production", "-m", "release 42").returncode == 1
    assert project.pampa("run", "production", "restart_puma", "--roles", "euler").returncode == 0

    text = project.pampa("history", "production", "-n", "3")
    found = json.loads(project.pampa("history", "production", "-n", "3", "--json").stdout)

    assert text.returncode == 0, text.stdout + text.stderr
    newest, failed, ok = found["deploys"]
    # Each run as the hosts' own logs have it: same run id, result and step on each host.
    for entry in (newest, failed, ok):
        for host, line in entry["hosts"].items():
            on_host = next(e for e in revlog(fleet, host) if e["run"] == entry["run"])
            assert (line["result"], line["step"], line["revision"]) == (on_host["result"], on_host["step"],
                                                                       on_host["after"])
    assert newest["kind"] == "run" and set(newest["hosts"]) == {"euler-1"}
    assert failed["kind"] == "deploy" and failed["message"] == "release 42" and failed["result"] == "failed"
    assert failed["hosts"]["newton-2"] == {"result": "failed", "step": "disk_check",
                                           "revision": head(fleet, "newton-2"), "roles": ["newton"]}
    assert failed["roles"]["newton"] == {"ok": 1, "failed": 1} and failed["roles"]["kepler"] == {"ok": 2}
    assert ok["message"] == "release 41" and ok["result"] == "ok" and len(ok["hosts"]) == 6
    assert ok["duration"] is not None and ok["started"] <= ok["ended"]
    lines = text.stdout.splitlines()
    assert "failed: newton-2 failed at disk_check" in lines[3] and "release 42" in lines[3]
    doc_shows("operations.md", "output: history", text.stdout)

    one = json.loads(project.pampa("history", "production", "--host", "newton-2", "-n", "1", "--json").stdout)
    assert [d["run"] for d in one["deploys"]] == [failed["run"]] and set(one["deploys"][0]["hosts"]) == {"newton-2"}
    assert json.loads(project.pampa("history", "production", "--since", "1h", "--json").stdout)["deploys"][0]["run"] \
        == newest["run"]


def test_history_names_a_host_it_could_not_read(project, fleet):
    project.stage()
    assert project.pampa("deploy", "test", "-m", "seen everywhere").returncode == 0
    fleet.stop_host("euler-1")
    try:
        result = project.pampa("history", "test", "-n", "1")
    finally:
        fleet.start_host("euler-1")
    assert result.returncode == 1
    assert "euler-1: not read (" in result.stdout and "its deploys may be missing above" in result.stdout
    assert "(5 of 6 hosts read)" in result.stdout
    assert result.stderr.strip() == "pampa: error: history of test: not read: euler-1"


def test_history_shows_a_run_that_never_finished_as_incomplete(project, fleet):
    project.stage()
    assert project.pampa("deploy", "test").returncode == 0
    record = {"run": "dead0000beef", "stage": "test", "kind": "deploy", "branch": "main", "user": "ghost",
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "step": "migrate"}
    state = fleet.code("kepler-2").parent / f"{fleet.app}.deploying.json"
    state.write_text(json.dumps(record) + "\n")
    try:
        found = json.loads(project.pampa("history", "test", "--json").stdout)
    finally:
        state.write_text("")
    dead = next(d for d in found["deploys"] if d["run"] == "dead0000beef")
    assert dead["result"] == "incomplete" and dead["hosts"]["kepler-2"]["step"] == "migrate"
    assert dead["user"] == "ghost" and dead["duration"] is None


def test_history_lists_pull_requests_from_the_access_point(project, fleet, access_point):
    from pampa_deployer.accesspoint.client import AccessPointClient
    project.stage(access_point={"url": access_point, "api_key": "ap-test-key"})
    client = AccessPointClient(access_point, "ap-test-key")
    made = client.create_request("test", "main", [{"node": "newton-1", "roles": ["newton"], "gated": False,
                                                   "opens_gate": False}], "ana", message="from the agents")
    found = json.loads(project.pampa("history", "test", "--json").stdout)
    request = next(d for d in found["deploys"] if d["run"] == f"request-{made['id']}-{int(made['created_at'])}")
    assert request["kind"] == "request" and request["message"] == "from the agents" and request["user"] == "ana"
    assert request["hosts"] == {"newton-1": {"result": "waiting", "step": None, "revision": None,
                                             "roles": ["newton"]}}
    text = project.pampa("history", "test")
    assert f"request {made['id']}" in text.stdout and "from the agents" in text.stdout


# -- releases ---------------------------------------------------------------------------------------------
#: A release root of these tests' own (the releases fleet tests keep theirs under ~/rel): what is on disk
#: there is what these tests did.
ROOT = "rel-readers"


def root(fleet, name: str):
    return fleet.home(name) / ROOT / fleet.app


def current(fleet, name: str) -> str:
    return os.readlink(root(fleet, name) / "current")


def releases(fleet, name: str) -> list[str]:
    return sorted(os.listdir(root(fleet, name) / "releases"))


def releases_stage(project, name="test", **extra):
    settings = dict(
        path=f"~/{ROOT}/{{app}}", strategy="releases", shared_files=["db/app.sqlite3"], checks={"web": WEB},
        sequences={"euler": ["git_fetch", "git_reset", "bundle", "restart_puma", "report_version"],
                   "copernico": ["git_fetch", "git_reset", "bundle", "restart_processes", "report_version"]})
    settings.update(extra)
    return project.stage(name, **settings)


def test_releases_lists_what_is_on_disk_and_prune_removes_what_keep_would(project, fleet):
    for host in fleet.hosts:  # a fresh root: the listing is of this test's releases only
        shutil.rmtree(root(fleet, host.name), ignore_errors=True)
    releases_stage(project, "production", keep_releases=5)
    for n in range(3):
        fleet.commit(f"Release {n} in releases/")
        assert project.pampa("deploy", "production").returncode == 0
    project.edit("production", lambda d: d.update(steps={"slow_fail": {"run": "false", "roles": ["kepler", "newton"],
                                                                       "after": "migrate"}}))
    fleet.commit("A release whose deploy fails before the switch")
    assert project.pampa("deploy", "production").returncode == 1
    project.edit("production", lambda d: d.pop("steps"))

    found = json.loads(project.pampa("releases", "production", "--json").stdout)
    text = project.pampa("releases", "production")
    assert text.returncode == 0, text.stdout + text.stderr
    for host in ("kepler-1", "newton-1", "euler-1"):
        listed = found["hosts"][host]
        on_disk = sorted(releases(fleet, host), reverse=True)
        assert [r["name"] for r in listed["releases"]] == on_disk[:len(listed["releases"])]
        assert listed["current"] == os.path.basename(current(fleet, host))
        for r in listed["releases"]:
            folder = root(fleet, host) / "releases" / r["name"]
            assert r["live"] == (folder / ".pampa-live").exists()
            assert r["revision"] == (folder / "REVISION").read_text().strip()
    kepler = found["hosts"]["kepler-1"]
    assert not kepler["releases"][0]["live"] and not kepler["releases"][0]["current"]  # the failed build
    assert kepler["releases"][1]["current"] and kepler["releases"][2]["previous"]
    assert "never live: the last deploy built it and stopped before the switch" in text.stdout
    assert "previous: the rollback target" in text.stdout

    project.edit("production", lambda d: d.update(keep_releases=2))
    pruned = project.pampa("releases", "production", "--prune")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    built, live, previous, oldest = (r["name"] for r in kepler["releases"])
    for host in ("kepler-1", "newton-1"):  # the newest two, and the rollback target however old
        assert releases(fleet, host) == sorted([built, live, previous]), host
        assert f"{host}: pruned {oldest}" in pruned.stdout
    assert os.path.basename(current(fleet, "kepler-1")) == kepler["current"]  # never the live release
    doc_shows("operations.md", "output: releases", pruned.stdout)


def test_releases_prune_waits_for_no_lock_and_bad_input_is_one_line(project, fleet):
    releases_stage(project)
    assert project.pampa("deploy", "test").returncode == 0
    before = releases(fleet, "kepler-1")
    assert project.pampa("lock", "acquire", "test", "-m", "disk work").returncode == 0
    try:
        refused = project.pampa("releases", "test", "--prune")
    finally:
        assert project.pampa("unlock", "test", "-m", "done").returncode == 0
    assert refused.returncode == 3 and "stage test is locked on kepler-1" in refused.stderr
    assert releases(fleet, "kepler-1") == before
    project.stage("inplace")
    wrong = project.pampa("releases", "inplace")
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1
    assert "stage inplace has strategy in_place" in wrong.stderr


# -- the deploy message, everywhere ---------------------------------------------------------------------
def test_the_deploy_message_is_in_the_webhooks_report_hooks_history_and_access_point(project, fleet, access_point,
                                                                                     tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from pampa_deployer.accesspoint.client import AccessPointClient
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    project.stage(notify={"webhooks": [f"http://127.0.0.1:{server.server_port}/hook"]},
                  access_point={"url": access_point, "api_key": "ap-test-key"})
    hooks = project.stages / "hooks"
    hooks.mkdir()
    (hooks / "post-deploy").write_text(f"#!/bin/sh\nprintf '%s' \"$PAMPA_MESSAGE\" > {tmp_path / 'said'}\n")
    (hooks / "post-deploy").chmod(0o755)
    try:
        result = project.pampa("deploy", "test", "--roles", "kepler,newton", "-m", "hotfix 142",
                               "--report", "r.json")
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [p["message"] for p in received] == ["hotfix 142", "hotfix 142"]
    assert received[0]["text"].endswith("(4 hosts): hotfix 142") and "by root (hotfix 142): ok in" in received[1]["text"]
    assert json.loads((project.root / "r.json").read_text())["message"] == "hotfix 142"
    assert (tmp_path / "said").read_text() == "hotfix 142"
    request = AccessPointClient(access_point, "ap-test-key").deploys("test")[0]
    assert request["message"] == "hotfix 142"
    for host in ("kepler-1", "newton-2"):  # on the hosts themselves
        assert revlog(fleet, host)[-1]["message"] == "hotfix 142"
    newest = json.loads(project.pampa("history", "test", "-n", "1", "--json").stdout)["deploys"][0]
    assert newest["message"] == "hotfix 142" and set(newest["hosts"]) == {"kepler-1", "kepler-2", "newton-1",
                                                                          "newton-2"}
