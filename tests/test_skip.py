"""Skipping work a release does not need (issue 24): the conditions of bundle and migrate as exact
strings, and run for real in bash and dash against a real git checkout, a real SQLite database and a
revision log written by pampa's own command. Every case that cannot prove "nothing to do" runs the work.
(On the fleet: tests/test_skip_fleet.py.)"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from pampa_deployer.commands import revlog, skip
from pampa_deployer.engine.backends.local import LocalBackend
from pampa_deployer.inventory import stage_from_mapping
from pampa_deployer.plan import build_plan

CODE = "~/code/shop"
MIGRATE = skip.unless_migrations_current("echo RAN", CODE)
BUNDLE = skip.unless_gems_installed("echo RAN", CODE)


def test_conditions_exact():
    last_ok = ("r=$(awk '/\"kind\": \"(deploy|rollback)\"/ { l = $0 } END { if (l ~ /\"result\": \"ok\"/ && "
               "substr(l, 1, 11) == \"{\\\"after\\\": \\\"\") { r = substr(l, 12); sub(/\".*/, \"\", r); "
               "if (r ~ /^[0-9a-f]+$/) print r } }' ~/code/shop.revisions.jsonl 2>/dev/null) && [ -n \"$r\" ]")
    assert skip.last_ok(CODE) == last_ok
    assert skip.last_ok("code/shop").endswith(" ~/code/shop.revisions.jsonl 2>/dev/null) && [ -n \"$r\" ]")
    assert BUNDLE == (f"if {last_ok} && bundle check >/dev/null 2>&1; then echo 'pampa-skip: gems already "
                      "installed'; else echo RAN; fi")
    assert MIGRATE.startswith(f"if {last_ok} && git diff --quiet \"$r\" HEAD -- db/migrations 2>/dev/null && "
                              "case ${DATABASE_URL-} in sqlite:*) ")
    assert MIGRATE.endswith("then echo \"pampa-skip: no new migrations: db/migrations unchanged since "
                            "${r%\"${r#???????}\"}, database at $v\"; else echo RAN; fi")
    assert skip.offers(MIGRATE) and skip.offers(BUNDLE) and not skip.offers("bundle install")


def _stage(**settings):
    data = {"app": "shop", "repo": "git@example.com:shop.git", "path": CODE, "env": {"DATABASE_URL": "sqlite://x"},
            "hosts": {"k1": {"address": "10.0.0.1", "roles": ["kepler"]}}, **settings}
    return stage_from_mapping(data)


def _steps(plan) -> dict:
    return {s.name: s for s in plan.hosts[0].steps}


def test_the_plan_shows_the_command_as_typed_and_when_it_is_skipped():
    steps = _steps(build_plan(_stage()))
    bundle, migrate = steps["bundle"].actions[0], steps["migrate"].actions[0]
    assert bundle.display() == ("export DATABASE_URL=sqlite://x && cd ~/code/shop && bundle install  # skipped if "
                                "the last deploy ended ok and `bundle check` finds every gem installed")
    assert migrate.display() == ("export DATABASE_URL=sqlite://x && cd ~/code/shop && bundle exec sequel -m "
                                 "db/migrations $DATABASE_URL  # skipped if the last deploy ended ok, db/migrations "
                                 "did not change since, and the database's own schema version is current")
    assert bundle.command.line() == "export DATABASE_URL=sqlite://x && cd ~/code/shop && " + \
        skip.unless_gems_installed("bundle install", CODE)
    assert [c.line() for c in bundle.commands()] == ["export DATABASE_URL=sqlite://x && cd ~/code/shop && "
                                                      "bundle install"]  # what `pampa check` looks for


@pytest.mark.parametrize("how", ["no_skip", "always", "run", "update"])
def test_no_skip_always_run_and_update_do_the_work_unconditionally(how):
    settings = {"steps": {"bundle": {"always": True}, "migrate": {"always": True}}} if how == "always" else \
        {"bundler": {"update": True}} if how == "update" else {}
    plan = build_plan(_stage(**settings), skip_unchanged=how != "no_skip",
                      kind="run" if how == "run" else "deploy")
    steps = _steps(plan)
    for name in ("bundle", "migrate"):
        if how == "update" and name == "migrate":
            continue
        action = steps[name].actions[0]
        assert action.typed is None and not skip.offers(action.command.script), (how, name)
    assert "bundle update" in steps["bundle"].actions[0].command.line() or how != "update"


def test_always_on_a_step_that_never_skips_is_refused(tmp_path, monkeypatch, capsys):
    from pampa_deployer.cli import main
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "p.yml").write_text("app: a\nrepo: r\nsteps: {restart_puma: {always: true}}\n"
                                                "hosts: {k: {roles: [kepler]}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "p"]) == 2
    assert "steps.restart_puma.always: only bundle and migrate skip work (the others always run); remove it" \
        in capsys.readouterr().err


# -- for real, in bash and dash -------------------------------------------------------------------------------
def _git(code: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=code, env=env, check=True, capture_output=True, text=True).stdout.strip()


class Host:
    """A home with a checkout at ~/code/shop (migrations 001 and 002), its SQLite database and revision log."""

    def __init__(self, home: Path):
        self.home, self.code = home, home / "code" / "shop"
        (self.code / "db" / "migrations").mkdir(parents=True)
        _git(self.code, "init", "-q", "-b", "main")
        for n in (1, 2):
            (self.code / "db" / "migrations" / f"00{n}_step.rb").write_text(f"# migration {n}\n")
        self.first = self.commit("two migrations")
        self.db(version=2)

    def commit(self, message: str, files: dict[str, str] | None = None) -> str:
        for rel, text in (files or {}).items():
            (self.code / rel).write_text(text)
        _git(self.code, "add", "-A")
        _git(self.code, "commit", "-q", "--allow-empty", "-m", message)
        return _git(self.code, "rev-parse", "HEAD")

    def db(self, version: int | None = None, applied: list[str] | None = None) -> None:
        path = self.code / "db" / "app.sqlite3"
        path.unlink(missing_ok=True)
        with sqlite3.connect(path) as conn:
            if version is not None:
                conn.execute("CREATE TABLE schema_info (version integer NOT NULL DEFAULT 0)")
                conn.execute("INSERT INTO schema_info VALUES (?)", (version,))
            if applied is not None:
                conn.execute("CREATE TABLE schema_migrations (filename text PRIMARY KEY)")
                conn.executemany("INSERT INTO schema_migrations VALUES (?)", [(f,) for f in applied])

    def logged(self, result: str = "ok", kind: str = "deploy") -> None:
        """The revision-log line pampa writes at the end of a run (its own command, run in bash)."""
        be = LocalBackend("local", home=str(self.home))
        assert be.run(revlog.append_command(revlog.base(CODE), {"kind": kind, "result": result,
                                                                  "message": 'a "result": "ok" lookalike'})).ok

    def run(self, script: str, shell: str, url: str | None = "sqlite://db/app.sqlite3", path: str | None = None):
        env = {"HOME": str(self.home), "PATH": path or os.environ["PATH"]}
        if url is not None:
            env["DATABASE_URL"] = url
        done = subprocess.run([shutil.which(shell), "-c", script], cwd=self.code, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


SHELLS = ["bash", "dash"]


@pytest.mark.parametrize("shell", SHELLS)
def test_migrations_skip_only_when_unchanged_since_the_last_ok_run_and_the_database_is_current(tmp_path, shell):
    host = Host(tmp_path)
    assert host.run(MIGRATE, shell) == "RAN"  # no revision log yet: a first deploy migrates
    host.logged("ok")
    assert host.run(MIGRATE, shell) == (f"pampa-skip: no new migrations: db/migrations unchanged since "
                                        f"{host.first[:7]}, database at version 2")
    host.commit("code only", {"app.rb": "puts 1\n"})  # a release without migrations still skips
    assert host.run(MIGRATE, shell).startswith("pampa-skip: no new migrations")
    host.db(version=1)  # the database is behind (restored, or migrated with --skip migrate)
    assert host.run(MIGRATE, shell) == "RAN"
    host.db(version=2)
    host.commit("a migration", {"db/migrations/003_more.rb": "# 3\n"})  # a release that adds a migration
    assert host.run(MIGRATE, shell) == "RAN"
    host.db(version=3)  # (the same release, migrated but the run then failed or was interrupted)
    host.logged("failed")
    assert host.run(MIGRATE, shell) == "RAN"  # the last run did not end ok: everything runs
    host.logged("ok")
    assert host.run(MIGRATE, shell).endswith("database at version 3")
    host.logged("ok", kind="run")  # `pampa run` of another step does not count as a deploy
    assert host.run(MIGRATE, shell).endswith("database at version 3")
    host.logged("interrupted", kind="rollback")
    assert host.run(MIGRATE, shell) == "RAN"


@pytest.mark.parametrize("shell", SHELLS)
def test_migrations_run_whenever_the_database_cannot_be_read(tmp_path, shell):
    host = Host(tmp_path)
    host.logged("ok")
    assert host.run(MIGRATE, shell).startswith("pampa-skip: ")
    assert host.run(MIGRATE, shell, url=None) == "RAN"  # no DATABASE_URL
    assert host.run(MIGRATE, shell, url="mysql2://db/shop") == "RAN"  # no client pampa reads it with
    assert host.run(MIGRATE, shell, url="sqlite://db/missing.sqlite3") == "RAN"
    assert host.run(MIGRATE, shell, url=f"sqlite://{host.code}/db/app.sqlite3").startswith("pampa-skip: ")
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("awk", "git", "cat", "printf"):  # everything but sqlite3
        if shutil.which(tool):
            (bare / tool).symlink_to(shutil.which(tool))
    assert host.run(MIGRATE, shell, path=str(bare)) == "RAN"
    (bare / "sqlite3").symlink_to(shutil.which("sqlite3"))
    assert host.run(MIGRATE, shell, path=str(bare)).startswith("pampa-skip: ")  # sqlite3 was what it lacked
    host.db(version=None)  # no schema_info at all
    assert host.run(MIGRATE, shell) == "RAN"
    (host.code / "db" / "app.sqlite3").write_text("not a database")
    assert host.run(MIGRATE, shell) == "RAN"


@pytest.mark.parametrize("shell", SHELLS)
def test_migrations_with_timestamps_skip_only_when_every_file_is_applied(tmp_path, shell):
    host = Host(tmp_path)
    for n in (1, 2):
        (host.code / "db" / "migrations" / f"00{n}_step.rb").unlink()
    names = ["20260101000000_create.rb", "20260201000000_add.rb"]
    host.first = host.commit("timestamped", {f"db/migrations/{n}": "# m\n" for n in names})
    host.logged("ok")
    host.db(applied=names[:1])
    assert host.run(MIGRATE, shell) == "RAN"
    host.db(applied=names)
    assert host.run(MIGRATE, shell).endswith("database at 2 migrations applied")
    host.db(applied=names + ["20250101000000_gone.rb"])  # applied but no longer a file: Sequel must say so
    assert host.run(MIGRATE, shell) == "RAN"


@pytest.mark.parametrize("shell", SHELLS)
def test_migrations_run_when_the_last_ok_revision_is_not_in_the_checkout(tmp_path, shell):
    host = Host(tmp_path)
    host.logged("ok")
    _git(host.code, "checkout", "-q", "--orphan", "other")
    _git(host.code, "branch", "-D", "main")
    _git(host.code, "reflog", "expire", "--expire=now", "--all")
    _git(host.code, "gc", "-q", "--prune=now")
    host.commit("history rewritten")
    assert host.run(MIGRATE, shell) == "RAN"


@pytest.mark.parametrize("shell", SHELLS)
def test_bundle_skips_only_when_the_last_run_ended_ok_and_bundle_check_passes(tmp_path, shell):
    host = Host(tmp_path)
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    fake = bin_dir / "bundle"  # a stand-in for Bundler: `bundle check` passes when ~/gems-ok exists
    fake.write_text("#!/bin/sh\n[ \"$1\" = check ] && [ -e \"$HOME/gems-ok\" ]\n")
    fake.chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    (tmp_path / "gems-ok").touch()
    assert host.run(BUNDLE, shell, path=path) == "RAN"  # no revision log: a first deploy
    host.logged("ok")
    assert host.run(BUNDLE, shell, path=path) == "pampa-skip: gems already installed"
    (tmp_path / "gems-ok").unlink()  # a gem of the new Gemfile.lock is missing
    assert host.run(BUNDLE, shell, path=path) == "RAN"
    (tmp_path / "gems-ok").touch()
    host.logged("failed")
    assert host.run(BUNDLE, shell, path=path) == "RAN"


def test_no_skip_on_the_command_line(tmp_path, monkeypatch, capsys):
    """`pampa plan --no-skip` shows the plan `pampa deploy --no-skip` runs; deploy and rollback take it."""
    from pampa_deployer.cli import _parse, build_parser, main
    from pampa_deployer.cli.run import request_from
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "p.yml").write_text("app: a\nrepo: r\npath: ~/code/a\nhosts: {k: {roles: [kepler]}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "p"]) == 0
    assert "cd ~/code/a && bundle install  # skipped if" in capsys.readouterr().out
    assert main(["plan", "p", "--no-skip"]) == 0
    out = capsys.readouterr().out
    assert "cd ~/code/a && bundle install\n" in out and "# skipped" not in out
    stage = stage_from_mapping({"app": "a", "hosts": {"k": {"roles": ["kepler"]}}})
    for argv, expected in ((["deploy", "p", "--no-skip"], True), (["rollback", "p", "--no-skip"], True),
                           (["deploy", "p"], False)):
        assert request_from(_parse(build_parser(), argv), stage).no_skip is expected
