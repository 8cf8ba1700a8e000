"""The releases strategy as pure builders: the layout's exact commands, the plan, validation."""
from __future__ import annotations

import re

import pytest

from pampa_deployer.errors import ConfigErrors
from pampa_deployer.inventory import stage_from_mapping
from pampa_deployer.plan import build_plan

STAMP = "20261126142400"


def stage(**extra):
    data = {"app": "shop", "repo": "git@example.com:shop.git", "strategy": "releases",
            "units": {"restart": "cd {path} && bin/restart {unit}", "puma": ["puma"]},
            "hosts": {"k1": {"address": "10.0.0.1", "roles": ["kepler"]},
                      "e1": {"address": "10.0.0.2", "roles": ["euler"]}}}
    data.update(extra)
    return stage_from_mapping(data, environ={})


def lines(plan, host):
    hp = next(h for h in plan.hosts if h.host.name == host)
    # A step that may skip its work (bundle, migrate) is read as typed, without its condition.
    return {s.name: [(getattr(a, "typed", None) or a.command).line() if hasattr(a, "command") else a.display()
                     for a in s.actions] for s in hp.steps}


def test_deploy_builds_a_release_from_the_mirror_and_switches_after_migrate():
    plan = build_plan(stage(shared_dirs=["log"], shared_files=["db/app.sqlite3"]), stamp=STAMP)
    k1 = lines(plan, "k1")
    assert list(k1) == ["git_fetch", "git_reset", "secrets", "bundle", "migrate", "switch_release",
                        "restart_puma", "restart_processes", "report_version", "open_gate"]
    assert k1["git_fetch"] == [
        "mkdir -p ~/code/shop/releases ~/code/shop/shared && cd ~/code/shop && "
        "if [ ! -d repo.git ]; then git clone -q --mirror git@example.com:shop.git repo.git; fi",
        "cd ~/code/shop && git --git-dir=repo.git remote set-url origin git@example.com:shop.git && "
        "git --git-dir=repo.git remote update --prune"]
    assert k1["git_reset"] == [
        "cd ~/code/shop && rev=$(git --git-dir=repo.git rev-parse --verify --quiet 'refs/heads/main^{commit}') && "
        f"name={STAMP}-$(printf '%s' \"$rev\" | cut -c1-7) && "
        "dir=releases/$name && n=1 && while [ -e \"$dir\" ]; do n=$((n+1)); dir=releases/$name-$n; done && "
        "git --git-dir=repo.git worktree prune && "
        "git --git-dir=repo.git worktree add -q --detach \"$dir\" \"$rev\" && "
        "printf '%s\\n' \"$rev\" > \"$dir/REVISION\" && "
        "mkdir -p shared/log && rm -rf \"$dir\"/log && ln -s \"$PWD/shared/\"log \"$dir\"/log && "
        "mkdir -p shared/db && mkdir -p \"$dir\"/db && rm -rf \"$dir\"/db/app.sqlite3 && "
        "ln -s \"$PWD/shared/\"db/app.sqlite3 \"$dir\"/db/app.sqlite3 && "
        "ln -sfn \"$dir\" release && echo \"built $dir at $rev\""]
    assert k1["bundle"] == ["cd ~/code/shop/release && bundle install"]
    assert k1["migrate"] == ["cd ~/code/shop/release && bundle exec sequel -m db/migrations $DATABASE_URL"]
    assert k1["switch_release"][0] == (
        "cd ~/code/shop && target=$(readlink release) && [ -d \"$target\" ] && touch \"$target/.pampa-live\" && "
        "ln -sfn \"$target\" current.pampa-new && mv -T current.pampa-new current && echo \"current -> $target\"")
    assert k1["switch_release"][1].startswith("cd ~/code/shop && { cur=$(basename \"$(readlink current)\")")
    assert "tail -n +6" in k1["switch_release"][1]  # keep_releases: 5
    assert k1["restart_puma"] == ["cd ~/code/shop/current && bin/restart puma"]
    assert k1["report_version"][0].startswith("cd ~/code/shop/current && git rev-parse HEAD;")
    # euler builds nothing by the seed: it bundles and restarts what current holds.
    assert lines(plan, "e1")["bundle"] == ["cd ~/code/shop/current && bundle install"]
    assert any("strategy releases: builds ~/code/shop/releases/20261126142400-<rev>" in n for n in plan.notes)


def test_secrets_go_to_shared_and_are_linked_into_each_release(tmp_path):
    (tmp_path / "config.rb").write_text("X = 1\n")
    st = stage_from_mapping({"app": "shop", "repo": "r", "strategy": "releases", "shared_dirs": [],
                             "secrets": [{"local": "config.rb", "remote": "config/app.rb"}],
                             "hosts": {"k1": {"roles": ["kepler"]}}}, root=tmp_path, environ={})
    k1 = lines(build_plan(st, stamp=STAMP), "k1")
    assert k1["secrets"][0] == "mkdir -p ~/code/shop/shared/config"
    assert k1["secrets"][1].startswith("upload config.rb -> ~/code/shop/shared/config/app.rb (mode 0600")
    assert "mkdir -p shared/config && mkdir -p \"$dir\"/config && rm -rf \"$dir\"/config/app.rb && " \
           "ln -s \"$PWD/shared/\"config/app.rb \"$dir\"/config/app.rb" in k1["git_reset"][0]


def test_rollback_is_one_switch_without_bundler():
    plan = build_plan(stage(), kind="rollback", revision="a" * 40, stamp=STAMP)
    k1 = lines(plan, "k1")
    assert list(k1) == ["switch_release", "restart_puma", "restart_processes", "report_version", "open_gate"]
    assert k1["switch_release"] == [
        "cd ~/code/shop && { t=; for r in $(ls -1 releases 2>/dev/null | sort -r); do if [ -e \"releases/$r/.pampa-live\" ] "
        f"&& [ \"$(cat \"releases/$r/REVISION\" 2>/dev/null)\" = {'a' * 40} ]; then t=releases/$r; break; fi; done; "
        f"if [ -z \"$t\" ]; then echo \"no release of {'a' * 12} on this host\" >&2; false; else "
        "ln -sfn \"$t\" current.pampa-new && mv -T current.pampa-new current && echo \"current -> $t\"; fi; }"]
    assert "bundle" not in lines(plan, "e1")


def test_in_place_stays_the_default():
    plan = build_plan(stage(strategy=None), stamp=STAMP)
    k1 = lines(plan, "k1")
    assert "switch_release" not in k1
    assert k1["git_reset"] == ["cd ~/code/shop && git reset --hard origin/main"]
    assert k1["restart_puma"] == ["cd ~/code/shop && bin/restart puma"]


@pytest.mark.parametrize("extra, message", [
    ({"strategy": "release"}, "strategy: unknown strategy 'release' (did you mean 'releases'?)"),
    ({"keep_releases": 1}, "keep_releases: expected a number of 2 or more (the current release and the previous "
                           "one, for rollback), got 1"),
])
def test_bad_strategy_settings_are_one_clear_line(extra, message):
    with pytest.raises(ConfigErrors, match=re.escape(message)):
        stage(**extra)
