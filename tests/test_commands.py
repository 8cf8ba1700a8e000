"""Pure unit tests of command building: quoting, templates, masking, steps, sequences, the plan."""
from __future__ import annotations

import shlex

import pytest

from pampa_deployer.errors import ConfigError
from pampa_deployer.inventory import stage_from_mapping
from pampa_deployer.plan import build_plan
from pampa_deployer.redact import MASK, Redactor, secret_fragments
from pampa_deployer.sequences import DEFAULT_SEQUENCES
from pampa_deployer.shell import quote, render
from pampa_deployer.steps.actions import Command


def stage(**extra):
    data = {"app": "shop", "repo": "git@example.com:shop.git",
            "hosts": {"k1": {"address": "10.0.0.1", "roles": ["kepler"]},
                      "e1": {"address": "10.0.0.2", "roles": ["euler"]},
                      "n1": {"address": "10.0.0.3", "roles": ["newton"]},
                      "c1": {"address": "10.0.0.4", "roles": ["copernico"]},
                      "both": {"address": "10.0.0.5", "roles": ["newton", "copernico"]}}}
    data.update(extra)
    return stage_from_mapping(data, environ={})


def steps_of(plan, host):
    return [s.name for s in next(h for h in plan.hosts if h.host.name == host).steps]


def test_quote_keeps_tilde_and_quotes_everything_else():
    assert quote("~/code/my app") == "~/'code/my app'"
    assert quote("a;rm -rf /") == "'a;rm -rf /'"
    assert shlex.split(quote("it's")) == ["it's"]
    assert render("git reset --hard {ref}", {"ref": "origin/x; reboot"}) == "git reset --hard 'origin/x; reboot'"
    assert render("echo {v!u}", {"v": "$HOME"}) == "echo $HOME"


def test_command_line_and_masking():
    red = Redactor().with_values("hunter2-secret")
    cmd = Command("psql -c 'select 1'", cwd="~/code/shop", prefix="source /etc/profile.d/rvm.sh",
                  env=(("DB_PASS", "hunter2-secret"),), redactor=red)
    assert cmd.line() == ("source /etc/profile.d/rvm.sh && export DB_PASS=hunter2-secret && cd ~/code/shop && "
                          "psql -c 'select 1'")
    assert "hunter2-secret" not in cmd.display() and f"DB_PASS={MASK}" in cmd.display()
    assert cmd.body() == cmd.line().split(" && ", 1)[1]


def test_secret_file_fragments_cover_single_values():
    found = secret_fragments("# comment\nSTRIPE_KEY = 'sk_live_abcdef'\npassword: s3cr3tvalue\n")
    assert "sk_live_abcdef" in found and "s3cr3tvalue" in found
    assert Redactor().with_values(*found).mask("token sk_live_abcdef!") == f"token {MASK}!"


def test_the_four_sequences_and_the_gate():
    plan = build_plan(stage())
    assert steps_of(plan, "k1") == list(DEFAULT_SEQUENCES["kepler"])
    assert steps_of(plan, "e1") == ["bundle", "restart_puma", "report_version"]
    assert steps_of(plan, "n1") == list(DEFAULT_SEQUENCES["newton"])
    assert steps_of(plan, "c1") == ["bundle", "restart_processes", "report_version"]
    gated = {h.host.name for h in plan.hosts if h.gated}
    assert gated == {"e1", "c1", "both"}  # a gated role on a non-kepler host makes it wait
    assert plan.gate_hosts == ("k1",)
    assert [h.host.name for h in plan.hosts][0] == "k1"  # keplers are scheduled first


def test_several_roles_run_the_union_once_in_order():
    plan = build_plan(stage())
    assert steps_of(plan, "both") == ["git_fetch", "git_reset", "secrets", "bundle", "migrate",
                                      "restart_processes", "restart_workers", "report_version"]


def test_overrides_custom_steps_and_disabled_steps():
    plan = build_plan(stage(units={"puma": ["{app}_web"], "restart": "sudo systemctl restart {unit}"},
                            steps={"migrate": {"enabled": False},
                                   "warm": {"run": "bin/warm {name}", "roles": ["kepler"], "after": "restart_puma"}},
                            bundler={"update": True}))
    k1 = next(h for h in plan.hosts if h.host.name == "k1")
    names = [s.name for s in k1.steps]
    assert "migrate" not in names and names.index("warm") == names.index("restart_puma") + 1
    text = {s.name: [a.display() for a in s.actions] for s in k1.steps}
    assert text["restart_puma"] == ["sudo systemctl restart shop_web"]
    assert text["warm"] == ["cd ~/code/shop && bin/warm k1"]
    assert text["bundle"] == ["cd ~/code/shop && bundle update"]


def test_roles_and_hosts_narrow_the_plan():
    plan = build_plan(stage(), roles=["euler"])
    assert [h.host.name for h in plan.hosts] == ["e1"] and not plan.hosts[0].gated
    assert "no kepler host in this run" in plan.notes[0]
    assert [h.host.name for h in build_plan(stage(), hosts=["n*"]).hosts] == ["n1"]
    with pytest.raises(ConfigError, match="--hosts: no host 'n9'"):
        build_plan(stage(), hosts=["n9"])
    with pytest.raises(ConfigError, match="--roles: unknown role 'newtn'.*did you mean 'newton'"):
        build_plan(stage(), roles=["newtn"])


def test_rollback_plan_resets_to_one_revision_and_never_migrates():
    plan = build_plan(stage(), kind="rollback", revision="a" * 40)
    k1 = next(h for h in plan.hosts if h.host.name == "k1")
    names = [s.name for s in k1.steps]
    assert names == ["git_reset", "bundle", "restart_puma", "restart_processes", "report_version", "open_gate"]
    assert k1.steps[0].actions[0].display() == f"cd ~/code/shop && git reset --hard {'a' * 40}"
    assert "database migrations are not reverted" in plan.notes[0]


def test_git_fetch_sets_origin_to_the_stages_repo_then_fetches():
    plan = build_plan(stage(repo="git@example.com:new home/shop.git"))
    clone, fetch = next(h for h in plan.hosts if h.host.name == "k1").steps[0].actions
    assert clone.command.line() == ("if [ ! -d ~/code/shop/.git ]; then git clone --no-checkout "
                                    "'git@example.com:new home/shop.git' ~/code/shop; fi")
    assert fetch.command.line() == (
        "cd ~/code/shop && { old=$(git remote get-url origin 2>/dev/null); "
        "[ \"$old\" = 'git@example.com:new home/shop.git' ] || "
        "{ { git remote set-url origin 'git@example.com:new home/shop.git' 2>/dev/null || "
        "git remote add origin 'git@example.com:new home/shop.git'; } && "
        "echo \"pampa-note: origin changed from ${old:-(none)} to \"'git@example.com:new home/shop.git'; }; } "
        "&& git fetch origin")


def test_every_step_has_a_timeout_longer_for_migrate_and_bundle():
    def timeouts(plan, host):
        hp = next(h for h in plan.hosts if h.host.name == host)
        return {s.name: {a.command.timeout for a in s.actions if hasattr(a, "command")} for s in hp.steps}

    default = timeouts(build_plan(stage()), "k1")
    assert default["git_fetch"] == {600} and default["migrate"] == {3600} and default["bundle"] == {1800}
    custom = timeouts(build_plan(stage(step_timeout=60, steps={"bundle": {"timeout": 90},
                                                                "warm": {"run": "true", "roles": ["kepler"]}})), "k1")
    assert custom["git_fetch"] == {60} and custom["migrate"] == {3600} and custom["bundle"] == {90}
    assert custom["warm"] == {60}
    assert timeouts(build_plan(stage(step_timeout=7200)), "k1")["migrate"] == {7200}


def test_remote_commands_run_in_their_own_process_group_and_can_be_stopped():
    from pampa_deployer.commands import procgroup
    # A channel per command: sshd made its shell a group leader; the body runs in a subshell (a fork).
    assert procgroup.on_channel("cd ~/app && sleep 9", "t1") == (
        'echo $$ > "${TMPDIR:-/tmp}"/pampa-t1.pgid || exit; ( cd ~/app && sleep 9\n); '
        '__pampa_rc=$?; rm -f "${TMPDIR:-/tmp}"/pampa-t1.pgid; exit $__pampa_rc')
    # The shell session: job control under bash (no process started for the group), setsid elsewhere.
    assert procgroup.session_setup("s1", "HI") == (
        "trap 'rm -f \"${TMPDIR:-/tmp}\"/pampa-s1.* \"${TMPDIR:-/tmp}\"/pampa-s1-*.pgid' EXIT; "
        "case ${BASH_VERSION-} in ?*) set -m; echo 'HI bash';; *) echo 'HI sh';; esac")
    assert procgroup.in_group("cd ~/app && sleep 9", "s1", "bash") == (
        '( echo $BASHPID > "${TMPDIR:-/tmp}"/pampa-s1.pgid || exit\ncd ~/app && sleep 9\n) </dev/null')
    assert procgroup.in_group("cd ~/app && sleep 9", "s1", "sh") == (
        '( exec setsid -w "${SHELL:-/bin/sh}" -c \'echo $$ > "${TMPDIR:-/tmp}"/pampa-s1.pgid || exit\n'
        'cd ~/app && sleep 9\' ) </dev/null')
    assert procgroup.in_group("sleep 9", "s1", None) == (  # the shell not known yet: chosen on the host
        'if [ -n "${BASH_VERSION-}" ]; then ( echo $BASHPID > "${TMPDIR:-/tmp}"/pampa-s1.pgid || exit\nsleep 9\n) '
        '</dev/null\nelse ( exec setsid -w "${SHELL:-/bin/sh}" -c \'echo $$ > "${TMPDIR:-/tmp}"/pampa-s1.pgid || '
        'exit\nsleep 9\' ) </dev/null\nfi')
    assert procgroup.emptied("s1") == 'printf \'\' > "${TMPDIR:-/tmp}"/pampa-s1.pgid'
    assert procgroup.kill_command("t1", 2) == (
        'f="${TMPDIR:-/tmp}"/pampa-t1.pgid; pg=$(cat "$f" 2>/dev/null); '
        'if [ -z "$pg" ] || ! kill -TERM -"$pg" 2>/dev/null; then rm -f "$f"; echo PAMPA-STOP-NONE; exit 0; fi; '
        'n=0; while kill -0 -"$pg" 2>/dev/null && [ $n -lt 20 ]; do sleep 0.1; n=$((n+1)); done; '
        'if kill -KILL -"$pg" 2>/dev/null; then echo PAMPA-STOP-KILL; else echo PAMPA-STOP-TERM; fi; rm -f "$f"')


# -- the read-only fleet commands of issue 23: pending, history, releases (exact strings) ---------------
def test_pending_commands_exact():
    from pampa_deployer.commands import pending
    assert pending.fetch("/p/.pampa/repos/ab.git", "git@example.com:my shop.git").line() == (
        "export GIT_TERMINAL_PROMPT=0 && export GIT_SSH_COMMAND=\"${GIT_SSH_COMMAND:-ssh -o BatchMode=yes}\" && "
        "{ [ -d /p/.pampa/repos/ab.git ] || git init -q --bare /p/.pampa/repos/ab.git; } && "
        "git --git-dir=/p/.pampa/repos/ab.git fetch -q --prune --no-tags -- 'git@example.com:my shop.git' "
        "'+refs/heads/*:refs/heads/*'")
    rev = "a" * 40
    git = "git --git-dir=/p/m.git"
    head = ("export GIT_CONFIG_NOSYSTEM=1 && export GIT_CONFIG_GLOBAL=/dev/null && export LC_ALL=C && "
            f"t=$({git} rev-parse --verify -q 'refs/heads/my branch^{{commit}}'); if [ -z \"$t\" ]; then echo no-branch; "
            "else echo \"target $t\"; ")
    assert pending.compare("/p/m.git", "my branch", rev).line() == head + (
        f"if {git} cat-file -e '{rev}^{{commit}}' 2>/dev/null; then "
        f"echo \"counts $({git} rev-list --left-right --count {rev}...\"$t\")\"; "
        f"echo --pampa-commits--; {git} log --no-color --no-decorate --max-count=50 "
        f"--format=%H%x1f%an%x1f%at%x1f%s {rev}..\"$t\"; "
        f"echo --pampa-migrations--; {git} diff --no-color --no-renames --name-status {rev} \"$t\" -- db/migrations "
        "| head -n 201; "
        f"echo --pampa-stat--; {git} diff --no-color --shortstat {rev} \"$t\"; "
        f"echo --pampa-lock--; {git} diff --no-color --no-renames --unified=0 {rev} \"$t\" -- Gemfile.lock | "
        "head -n 2001; else echo unknown; fi; fi")
    assert pending.compare("/p/m.git", "main", None).line().endswith(
        f"echo \"counts 0 $({git} rev-list --count \"$t\")\"; fi")
    with pytest.raises(ValueError):  # what a host printed never reaches a local command line unchecked
        pending.compare("/p/m.git", "main", "--output=/etc/passwd")


def test_history_and_releases_commands_exact():
    from pampa_deployer.commands import history, releases
    assert history.read("~/code/shop.revisions.jsonl", "~/code/shop.deploying.json", 20).line() == (
        "tail -n 20 ~/code/shop.revisions.jsonl 2>/dev/null | cut -c 1-16384; echo --pampa-state--; "
        "head -c 16384 ~/code/shop.deploying.json 2>/dev/null || true")
    assert releases.listing("~/rel/my shop").line() == (
        "if cd ~/'rel/my shop' 2>/dev/null; then cur=$(basename \"$(readlink current)\" 2>/dev/null); "
        + releases.PREVIOUS + "; echo \"current $cur\"; echo \"previous $prev\"; "
        "echo \"built $(basename \"$(readlink release)\" 2>/dev/null)\"; "
        "for r in $(ls -1 releases 2>/dev/null | sort -r | head -n 200); do "
        "if [ -e \"releases/$r/.pampa-live\" ]; then l=live; else l=-; fi; "
        "printf 'release %s %s %s\\n' \"$r\" \"$l\" \"$(head -c 64 \"releases/$r/REVISION\" 2>/dev/null)\"; "
        "done; else echo no-root; fi")
    # --prune runs the very script a deploy's switch runs after it
    from pampa_deployer.steps.releases import prune_script
    assert releases.prune("~/rel/shop", 5).line() == "cd ~/rel/shop && " + prune_script(5)
