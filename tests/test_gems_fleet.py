"""A release that adds a gem its own migration uses: bundle must run before migrate (on the real fleet)."""
from __future__ import annotations

import os
import subprocess

import pytest
from conftest import head, migrations

pytestmark = pytest.mark.fleet

MIGRATION = "db/migrations/003_add_visit_slug.rb"
USES_GEM = ('require "pampa_slug"\n\nSequel.migration do\n  change do\n'
            '    add_column :visits, PampaSlug.column("Visit Slug"), String\n  end\nend\n')
#: Same schema change, without the gem: what the migration looks like once the gem is dropped again.
PLAIN = "Sequel.migration do\n  change do\n    add_column :visits, :visit_slug, String\n  end\nend\n"


def _gem_repo(fleet) -> str:
    """A tiny gem in a git repository every host can read (bundler installs it offline)."""
    repo = fleet.root / "gems" / "pampa_slug"
    if not (repo / ".git").exists():
        (repo / "lib").mkdir(parents=True)
        (repo / "lib" / "pampa_slug.rb").write_text(
            'module PampaSlug\n  def self.column(text) = text.downcase.gsub(/[^a-z0-9]+/, "_").to_sym\nend\n')
        (repo / "pampa_slug.gemspec").write_text(
            'Gem::Specification.new do |s|\n  s.name = "pampa_slug"\n  s.version = "0.1.0"\n'
            '  s.summary = "Column names"\n  s.authors = ["Pampa"]\n  s.files = ["lib/pampa_slug.rb"]\nend\n')
        for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                     ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "pampa_slug"]):
            subprocess.run(["git", *args], cwd=repo, check=True)
    return str(repo)


def _lock(fleet, gem_home) -> str:
    """Gemfile.lock for the work tree, resolved offline (as a developer's `bundle install` would)."""
    subprocess.run(["bundle", "install", "--local", "--quiet"], cwd=fleet.work, check=True, timeout=120,
                   env={**os.environ, "GEM_HOME": str(gem_home)}, capture_output=True)
    return (fleet.work / "Gemfile.lock").read_text()


def test_release_adding_a_gem_its_migration_uses(project, fleet, tmp_path):
    gemfile = (fleet.work / "Gemfile").read_text()
    # Each host installs gems into its own home (GEM_HOME), offline (--local): no shared system gems touched.
    project.stage(env={"DATABASE_URL": "sqlite://db/app.sqlite3", "GEM_HOME": "/root/.gem/pampa"},
                  steps={"bundle": {"run": "bundle install --local"}})
    assert project.pampa("deploy", "test", "--roles", "kepler,newton").returncode == 0
    (fleet.work / "Gemfile").write_text(gemfile + f'gem "pampa_slug", git: "{_gem_repo(fleet)}", branch: "main"\n')
    (fleet.work / MIGRATION).write_text(USES_GEM)
    release = fleet.commit("Visit slugs, with the pampa_slug gem",
                           {"Gemfile.lock": _lock(fleet, tmp_path / "gems")})
    try:
        # The seed's literal order: `bundle exec sequel` refuses to run before the new gem is installed.
        project.edit("test", lambda d: d.update(bundler={"before_migrate": False}))
        seed = project.pampa("deploy", "test", "--hosts", "newton-1")
        assert seed.returncode == 1
        assert "RESULT newton-1 [newton] failed at migrate" in seed.stdout
        run = max((project.root / ".pampa" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
        assert "is not yet checked out. Run `bundle install` first" in (run / "hosts" / "newton-1.log").read_text()
        assert migrations(fleet, "newton-1") == ["2"]

        # The default order installs the gem first, then migrates with it, on every host that migrates.
        project.edit("test", lambda d: d.pop("bundler"))
        result = project.pampa("deploy", "test", "--roles", "kepler,newton")
        assert result.returncode == 0, result.stdout + result.stderr
        for host in ("kepler-1", "kepler-2", "newton-1", "newton-2"):
            assert head(fleet, host) == release
            assert migrations(fleet, host) == ["3"], host
    finally:
        # Leave the origin as other tests expect: no git gem in the Gemfile (their hosts bundle online-less).
        (fleet.work / "Gemfile").write_text(gemfile)
        (fleet.work / MIGRATION).write_text(PLAIN)
        fleet.commit("Drop pampa_slug again", {"Gemfile.lock": _lock(fleet, tmp_path / "gems")})
    assert project.pampa("deploy", "test", "--roles", "kepler,newton").returncode == 0
