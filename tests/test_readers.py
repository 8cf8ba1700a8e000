"""The read-only fleet commands of issue 23 without a fleet: parsing what hosts and the repository print
(untrusted: bounded, validated, made printable), merging revision logs into runs, the releases listing,
and `pampa pending`'s git work in a real local mirror of a real repository (no root needed)."""
from __future__ import annotations

import json
import os
import subprocess
import time
from types import SimpleNamespace

import pytest

from pampa_deployer.cli import main
from pampa_deployer.cli.types import history_count, since
from pampa_deployer.commands import gemlock, history, pending, releases
from pampa_deployer.commands.untrusted import printable
from pampa_deployer.engine.history import merge
from pampa_deployer.engine.pending import Mirror

A, B, C = "a" * 40, "b" * 40, "c" * 40


# -- untrusted text -------------------------------------------------------------------------------
def test_printable_shows_control_characters_instead_of_acting_on_them():
    assert printable("Tidy \x1b[31mred\x1b[0m up") == "Tidy \\x1b[31mred\\x1b[0m up"
    assert printable("one\nforged line\r") == "one\\x0aforged line\\x0d"
    assert printable("evil \u202egnp.exe") == "evil \\u202egnp.exe"  # a bidi override is shown, not obeyed
    assert printable("Zoë Müller, 日本") == "Zoë Müller, 日本"
    assert printable("x" * 10_000, 50) == "x" * 47 + "..."
    assert printable(None) == ""


# -- Gemfile.lock ---------------------------------------------------------------------------------
LOCK_DIFF = """diff --git a/Gemfile.lock b/Gemfile.lock
--- a/Gemfile.lock
+++ b/Gemfile.lock
@@ -7 +7 @@ GEM
-    rack (2.2.6)
+    rack (2.2.8)
@@ -9,0 +10,2 @@ GEM
+    sinatra (3.1.0)
+      rack (~> 2.2)
@@ -12 +13,0 @@
-    json (2.6.1)
@@ -20,2 +20,2 @@
-    nokogiri (1.15.0-x86_64-linux)
+    nokogiri (1.16.0-x86_64-linux)
@@ -30 +30 @@ DEPENDENCIES
-  rack (~> 2.2)
+  rack (~> 2.3)
@@ -40 +40 @@ BUNDLED WITH
-   2.4.1
+   2.5.3
""".splitlines()


def test_gemfile_lock_diff_names_added_removed_and_updated_gems():
    change = gemlock.parse_diff(LOCK_DIFF)
    assert change.updated == {"rack": ("2.2.6", "2.2.8"), "nokogiri": ("1.15.0-x86_64-linux", "1.16.0-x86_64-linux")}
    assert change.added == {"sinatra": "3.1.0"}  # its dependency line (six spaces) is not a gem of its own
    assert change.removed == {"json": "2.6.1"}
    assert change.bundler == ("2.4.1", "2.5.3")
    assert change.describe() == ("updated nokogiri 1.15.0-x86_64-linux -> 1.16.0-x86_64-linux, rack 2.2.6 -> 2.2.8; "
                                 "added sinatra 3.1.0; removed json 2.6.1; bundler 2.4.1 -> 2.5.3")
    moved = gemlock.parse_diff(["-    puma (6.4.0)", "+    puma (6.4.0)", "-  puma", "+  puma (>= 6)"])
    assert (moved.updated, moved.added, moved.removed) == ({}, {}, {})
    assert moved.describe().startswith("changed, no gem version changes")
    hostile = gemlock.parse_diff(["+    \x1b[2Jevil (1.0)", "+    ok (1.0\x1b)"])
    assert hostile.added == {}  # names and versions that are not a lockfile's are not gems


# -- pending: parsing -----------------------------------------------------------------------------
def test_a_hosts_revision_is_a_full_commit_id_or_nothing():
    assert pending.parse_revision(f"{A}\n") == A
    assert pending.parse_revision("") is None
    assert pending.parse_revision("--upload-pack=touch /tmp/x\n") is None
    assert pending.parse_revision(A[:12]) is None
    assert pending.parse_revision("rvm says hi\n" + B) == B  # the last line is the answer


def test_compare_output_is_parsed_and_bounded():
    commits = [f"{A}\x1fAna \x1b]0;pwned\x07\x1f1764160000\x1fAdd \x1b[2Jvisits", "garbage line",
               f"{B}\x1fBo\x1fnot-a-date\x1fbroken"]
    text = "\n".join([f"target {C}", "counts 1 2", "--pampa-commits--", *commits, "--pampa-migrations--",
                      "A\tdb/migrations/003_add_browser.rb", "D\tdb/migrations/001_old.rb", "M\tdb/migrations/002.rb",
                      "--pampa-stat--", " 5 files changed, 40 insertions(+), 3 deletions(-)",
                      "--pampa-lock--", "-    rack (2.2.6)", "+    rack (2.2.8)"])
    c = pending.parse_compare(text)
    assert (c.target, c.known, c.ahead, c.behind) == (C, True, 1, 2)
    assert [x.revision for x in c.commits] == [A]  # lines without the expected form are dropped
    assert c.commits[0].author == "Ana \\x1b]0;pwned\\x07" and c.commits[0].subject == "Add \\x1b[2Jvisits"
    assert c.migrations == ("db/migrations/003_add_browser.rb",) and c.migrations_removed == ("db/migrations/001_old.rb",)
    assert (c.files_changed, c.insertions, c.deletions) == (5, 40, 3)
    assert c.lock.updated == {"rack": ("2.2.6", "2.2.8")}
    assert pending.parse_compare("no-branch\n").target is None
    assert pending.parse_compare(f"target {C}\nunknown\n").known is False
    assert pending.parse_compare(f"target {C}\ncounts 0 0\n--pampa-lock--\n").lock is None  # unchanged
    many = "\n".join([f"target {C}", "counts 0 300", "--pampa-migrations--"]
                     + [f"A\tdb/migrations/{i:03}.rb" for i in range(pending.MAX_FILES + 1)])
    cut = pending.parse_compare(many)
    assert len(cut.migrations) == pending.MAX_FILES and cut.cut == ("migrations",)


# -- pending: the git work, in a real mirror of a real repository --------------------------------------
def _git(cwd, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "Ana Lima", "GIT_AUTHOR_EMAIL": "ana@example.com",
           "GIT_COMMITTER_NAME": "Ana Lima", "GIT_COMMITTER_EMAIL": "ana@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def _commit(work, message, files):
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", message)
    return _git(work, "rev-parse", "HEAD")


LOCK = "GEM\n  remote: https://rubygems.org/\n  specs:\n    rack ({rack})\n    sequel (5.63.0)\n\nBUNDLED WITH\n   2.3.15\n"


def test_mirror_previews_commits_migrations_and_gems_exactly(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    _git(work, "init", "-q", "-b", "main")
    first = _commit(work, "First", {"Gemfile.lock": LOCK.format(rack="2.2.6"), "db/migrations/001_a.rb": "1"})
    second = _commit(work, "Add the browser", {"db/migrations/002_browser.rb": "2", "app.rb": "x"})
    third = _commit(work, "Update rack", {"Gemfile.lock": LOCK.format(rack="2.2.8")})
    mirror = Mirror(tmp_path / "repos", str(work))
    mirror.fetch()
    c = mirror.compare("main", first)
    assert (c.target, c.behind, c.ahead) == (third, 2, 0)
    assert [(x.revision, x.author, x.subject) for x in c.commits] == [(third, "Ana Lima", "Update rack"),
                                                                     (second, "Ana Lima", "Add the browser")]
    assert c.migrations == ("db/migrations/002_browser.rb",)
    assert c.lock.updated == {"rack": ("2.2.6", "2.2.8")} and not c.lock.added and not c.lock.removed
    assert (c.files_changed, c.insertions, c.deletions) == (3, 3, 1)
    assert mirror.compare("main", third).behind == 0  # up to date
    ahead = _commit(work, "Local only", {"x": "1"})
    _git(work, "reset", "-q", "--hard", third)
    assert mirror.compare("main", ahead).known is False  # never pushed: the repository does not have it
    assert mirror.compare("nope", first).target is None
    assert mirror.compare("main", None).behind == 3  # no checkout yet: everything is new
    later = _commit(work, "Later", {"y": "1"})
    mirror.fetch()  # incremental: the same mirror learns the new commit
    assert mirror.compare("main", third).commits[0].revision == later


def test_mirror_fetch_failure_is_one_line_naming_the_repository(tmp_path):
    from pampa_deployer.errors import NotObserved
    mirror = Mirror(tmp_path / "repos", str(tmp_path / "no-such-repo.git"))
    with pytest.raises(NotObserved) as e:
        mirror.fetch()
    assert str(tmp_path / "no-such-repo.git") in e.value.message and "\n" not in e.value.message


# -- history ----------------------------------------------------------------------------------------
def _line(run, result="ok", time_="2026-11-26T14:35:05Z", started="2026-11-26T14:35:00Z", step=None, after=A,
          **extra):
    entry = {"time": time_, "started": started, "stage": "production", "kind": "deploy", "branch": "main",
             "before": B, "after": after, "user": "ana", "result": result, "step": step, "run": run,
             "message": "hotfix 142", **extra}
    return json.dumps(entry)


def test_history_parse_validates_every_field_and_counts_bad_lines():
    text = "\n".join([
        _line("r1"), "not json", json.dumps(["a list"]), json.dumps({"time": "yesterday"}),
        json.dumps({"time": "2026-11-26T14:00:00Z", "kind": "format-disk", "result": "\x1b[2J", "after": "--x",
                    "user": "eve\x1b]0;t\x07", "message": "a" * 2000, "run": 7}),
        "--pampa-state--", json.dumps({"run": "r2", "stage": "production", "kind": "deploy", "step": "migrate",
                                       "started": "2026-11-26T15:00:00Z", "user": "bo"})])
    entries, state, bad = history.parse(text)
    assert bad == 3 and len(entries) == 2
    assert entries[0]["message"] == "hotfix 142" and entries[0]["after"] == A
    odd = entries[1]
    assert (odd["kind"], odd["result"], odd["after"], odd["run"]) == ("?", "?", None, None)
    assert odd["user"] == "eve\\x1b]0;t\\x07" and len(odd["message"]) == 500
    assert state["run"] == "r2" and state["step"] == "migrate"
    assert history.parse("--pampa-state--\n{broken")[1]["step"] is None  # unreadable, but a run is on


def test_history_merges_one_run_from_every_host_and_says_where_it_failed():
    found = {
        "kepler-1": (history.parse(_line("r1") + "\n" + _line("r2", time_="2026-11-26T15:00:09Z",
                                                              started="2026-11-26T15:00:00Z"))[0], None, 0),
        "newton-1": (history.parse(_line("r1", started="2026-11-26T14:34:58Z", time_="2026-11-26T14:35:07Z"))[0],
                     None, 0),
        "newton-2": (history.parse(_line("r1", result="failed", step="migrate", after=B))[0],
                     history.record({"run": "r2", "stage": "production", "kind": "deploy", "step": "bundle",
                                     "started": "2026-11-26T15:00:01Z"}), 0),
        "other": (history.parse(_line("x9", stage="staging"))[0], None, 0),
    }
    roles = {"kepler-1": ("kepler",), "newton-1": ("newton",), "newton-2": ("newton",), "other": ("newton",)}
    newest, older = merge("production", found, roles)  # the staging run on a shared path is not this stage's
    assert newest.run == "r2" and newest.result == "incomplete" and newest.duration is None
    assert newest.hosts["newton-2"].step == "bundle"
    assert older.run == "r1" and older.result == "failed" and older.revision == A  # what the ok hosts run
    assert older.duration == 9.0  # first start to last end over the hosts
    assert dict(older.by_role()["newton"]) == {"ok": 1, "failed": 1}
    from pampa_deployer.render import history as shown
    row = shown.row(older)
    assert row[5] == "failed: newton-2 failed at migrate" and row[6] == "ok: kepler 1/1, newton 1/2"
    assert row[7] == "9s" and row[8] == "hotfix 142"


def test_history_options_are_checked_in_one_line():
    now = time.time()
    assert since("12h", now) == now - 12 * 3600 and since("7d", now) == now - 7 * 86400
    assert since("2026-11-26") == since("2026-11-26T00:00:00Z") == since("2026-11-26 00:00")
    assert history_count("5") == 5
    for bad in ("yesterday", "12x", ""):
        with pytest.raises(Exception, match="expected a UTC date or time"):
            since(bad)
    for bad in ("0", "1001", "ten"):
        with pytest.raises(Exception, match="expected a number of deploys from 1 to 1000"):
            history_count(bad)


@pytest.mark.parametrize("argv,words", [
    (["history", "p", "-n", "0"], "pampa history: argument -n: expected a number of deploys from 1 to 1000, got '0'"),
    (["history", "p", "--since", "last week"], "argument --since: expected a UTC date or time"),
    (["history", "p", "--host", "nope"], "--hosts: no host 'nope' in stage p"),
    (["releases", "p"], "stage p has strategy in_place: one checkout per host, no releases"),
    (["pending", "p", "--roles", "kepplr"], "--roles: unknown role 'kepplr'"),
])
def test_bad_input_to_the_readers_is_one_line_exit_2(tmp_path, monkeypatch, capsys, argv, words):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "p.yml").write_text("app: a\nrepo: /nowhere\nhosts: {k: {address: 127.0.0.1, "
                                               "roles: [kepler]}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# -- releases ---------------------------------------------------------------------------------------
def test_releases_listing_is_parsed_and_names_are_checked():
    text = "\n".join(["current 20261126143505-7eb023f", "previous 20261126143012-3f2a9c1",
                      "built 20261126143505-7eb023f",
                      f"release 20261126143505-7eb023f live {A}", f"release 20261126143012-3f2a9c1 live {B}",
                      "release 20261126142801-48ef682 - not-a-revision",
                      "release ../../etc - x", "release \x1b[2J - y"])
    listing = releases.parse_listing(text)
    assert listing.current == "20261126143505-7eb023f" and listing.previous == "20261126143012-3f2a9c1"
    assert [r.name for r in listing.releases] == ["20261126143505-7eb023f", "20261126143012-3f2a9c1",
                                                  "20261126142801-48ef682"]
    assert listing.releases[2].revision is None and not listing.releases[2].live
    assert listing.releases[0].built_at == since("2026-11-26T14:35:05Z")
    assert releases.parse_listing("no-root\n").exists is False
    from pampa_deployer.render import releases as shown
    assert shown.to_prune(listing, 2) == {"20261126142801-48ef682"}
    assert shown.to_prune(listing, 1) == {"20261126142801-48ef682"}  # never current nor the rollback target
    assert shown.flag(listing, listing.releases[1], 5) == "previous: the rollback target"


def test_history_joins_a_nodes_own_line_to_its_pull_request(monkeypatch):
    """A pull-mode agent's run id is request-ID: its line and the access point's request are one entry; a node
    that was not read shows the access point's view of it; an odd answer is one line, not a crash."""
    from pampa_deployer.engine import history as engine

    class Client:
        url = "http://ap"

        def __init__(self, answer=None):
            self.answer = answer

        def deploys(self, stage):
            return [{"id": 7, "mode": "pull"}, {"id": 6, "mode": "push"}]

        def deploy(self, deploy_id):
            if self.answer is not None:
                return self.answer
            return {"id": 7, "mode": "pull", "kind": "deploy", "state": "FAILED", "branch": "main",
                    "requested_by": "ana", "message": "from \x1b[2Jthe agents", "created_at": 1764160000.0,
                    "ended_at": 1764160060.0, "revision": None,
                    "nodes": [{"node": "n1", "roles": ["newton"], "state": "ok", "step": None, "stalled": None},
                              {"node": "n2", "roles": "newton", "state": "running", "step": "bundle",
                               "stalled": "no report for 75s"}]}

    found = {"n1": (history.parse(_line("request-7-1764160000", message="from the agents"))[0], None, 0),
             "n2": (history.parse(_line("request-7", message="an older database's request 7",
                                        time_="2026-11-20T10:00:09Z", started="2026-11-20T10:00:00Z"))[0], None, 0)}
    deploys = merge("production", found, {"n1": ("newton",)})
    monkeypatch.setattr(engine.AccessPointClient, "from_stage", classmethod(lambda cls, stage: Client()))
    assert engine.add_requests(deploys, SimpleNamespace(name="production"), {"n1", "n2"}, 20) is None
    d, older = deploys
    assert older.run == "request-7" and older.kind == "deploy"  # same id, another request: not joined
    assert d.run == "request-7-1764160000" and d.kind == "request" and d.request["state"] == "FAILED"
    assert d.hosts["n1"].after == A  # the node's own line, not the access point's view of it
    assert d.hosts["n2"].result == "stalled" and d.hosts["n2"].roles == ("newton",)
    assert d.result == "stalled"
    monkeypatch.setattr(engine.AccessPointClient, "from_stage", classmethod(lambda cls, stage: Client(["odd"])))
    assert "an answer that is not a deploy request" in engine.add_requests([], SimpleNamespace(name="production"), {"n1"}, 20)
