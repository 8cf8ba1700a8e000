"""Restarts (issue 21): the drain and the hot and phased puma restarts as exact strings, the step builders,
`pampa check`'s judgement of puma, and what the docs show (tests/test_restarts_local.py runs the scripts)."""
from __future__ import annotations

import subprocess

import pytest

from pampa_deployer.commands import puma
from pampa_deployer.commands.service import ALIVE, Service, describe_drain, drain
from pampa_deployer.errors import ConfigErrors
from pampa_deployer.inventory import stage_from_mapping
from pampa_deployer.plan import build_plan
from pampa_deployer.steps.actions import Restart, Run

PID = Service("worker", "cd ~/code/shop && bin/restart worker", pid_file="~/run/worker.pid")
UNIT = Service("shop_worker", "sudo systemctl restart shop_worker", stop="sudo systemctl stop shop_worker",
               reload="sudo systemctl reload shop_worker")


def stage(units: dict, **extra):
    data = {"app": "shop", "repo": "git@example.com:shop.git",
            "hosts": {"k1": {"address": "10.0.0.1", "roles": ["kepler"]},
                      "n1": {"address": "10.0.0.3", "roles": ["newton"]}},
            "units": units, **extra}
    return stage_from_mapping(data, environ={})


def step_actions(plan, host: str, step: str) -> tuple:
    hp = next(h for h in plan.hosts if h.host.name == host)
    return next(s for s in hp.steps if s.name == step).actions


# -- exact strings --------------------------------------------------------------------------------------------
def test_drain_of_a_pid_file_service_exact():
    assert drain(PID, 30) == (
        "{ " + ALIVE + "; pampa_drain() { if pid=$(cat ~/run/worker.pid 2>/dev/null); pampa_alive \"$pid\"; then "
        "t0=$(date +%s%3N); if ! kill -TERM \"$pid\"; then pampa_alive \"$pid\" && return 1; fi; end=$((t0 + 30000)); "
        "while pampa_alive \"$pid\" && [ $(date +%s%3N) -lt \"$end\" ]; do sleep 0.1; done; "
        "if pampa_alive \"$pid\"; then kill -KILL -- \"-$pid\" 2>/dev/null || kill -KILL \"$pid\"; i=0; "
        "while pampa_alive \"$pid\" && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; "
        "if pampa_alive \"$pid\"; then echo worker\": pid $pid still runs after KILL\" >&2; return 1; fi; "
        "echo \"pampa-note: \"worker\": still running 30s after TERM: killed (KILL)\"; "
        "else ms=$(($(date +%s%3N) - t0)); echo worker\": stopped $((ms / 1000)).$((ms % 1000 / 100))s after TERM\"; "
        "fi; else echo worker\": was not running\"; fi; cd ~/code/shop && bin/restart worker; }; pampa_drain; }")
    assert ALIVE == ("pampa_alive() { case \"$1\" in ''|*[!0-9]*) return 1;; esac; [ -r \"/proc/$1/status\" ] && "
                     "! grep -q '^State:[[:space:]]*Z' \"/proc/$1/status\"; }")


def test_drain_of_a_systemd_unit_exact():
    assert drain(UNIT, 30) == (
        "{ pampa_drain() { if systemctl is-active --quiet shop_worker; then t0=$(date +%s%3N); "
        "sudo systemctl stop shop_worker || return 1; ms=$(($(date +%s%3N) - t0)); "
        "if [ \"$(systemctl show --property=Result --value shop_worker)\" = timeout ]; then "
        "echo \"pampa-note: \"shop_worker\": did not stop within its TimeoutStopSec after TERM: systemd killed it "
        "(KILL) after $((ms / 1000)).$((ms % 1000 / 100))s\"; "
        "else echo shop_worker\": stopped $((ms / 1000)).$((ms % 1000 / 100))s after TERM\"; fi; "
        "else echo shop_worker\": was not running\"; fi; sudo systemctl restart shop_worker; }; pampa_drain; }")
    assert describe_drain(UNIT, 30) == ("drain shop_worker: sudo systemctl stop shop_worker (systemd: TERM, KILL after "
                                        "the unit's TimeoutStopSec); then sudo systemctl restart shop_worker")
    assert describe_drain(PID, 12.5) == ("drain worker: TERM to the pid in ~/run/worker.pid, KILL after 12.5s; "
                                         "then cd ~/code/shop && bin/restart worker")


def test_values_reaching_the_shell_are_quoted():
    odd = Service("my unit;reboot", "true", pid_file="~/run/a b.pid")
    script = drain(odd, 1)
    assert "cat ~/'run/a b.pid'" in script and "echo 'my unit;reboot'\": was not running\"" in script
    restart = puma.restart(odd, "phased", "/srv/x y/puma.state", "~/code/x y", 10)
    assert "[ -r '/srv/x y/puma.state' ]" in restart and "readlink -f ~/'code/x y'" in restart
    with pytest.raises(ValueError):
        puma.restart(odd, "full", "s", "l", 1)


def test_puma_stats_come_from_the_control_app_the_state_file_names():
    assert puma.stats_function("~/run/puma.state") == (
        "pampa_stats() { [ -r ~/run/puma.state ] || { echo \"no puma state file \"~/run/puma.state; return 1; }; "
        "u=$(sed -n 's/^control_url: *//p' ~/run/puma.state); k=$(sed -n 's/^control_auth_token: *//p' "
        "~/run/puma.state); case \"$u\" in unix://*) set -- --unix-socket \"${u#unix://}\"; a=http://puma;; "
        "tcp://*) set --; a=\"http://${u#tcp://}\";; ssl://*) set -- -k; a=\"https://${u#ssl://}\";; "
        "*) echo \"the puma state file \"~/run/puma.state\" names no control app (control_url)\"; return 1;; esac; "
        "printf 'url = \"%s/stats?token=%s\"\\n' \"$a\" \"$k\" | curl -sS -m 5 \"$@\" -K - 2>&1; }")
    assert puma.look_function() == (
        "pampa_look() { s=$(pampa_stats); case \"$s\" in '{'*) ;; *) e=$(printf '%s' \"${s:-no answer}\" | "
        "tail -n 1); return 1;; esac; set -- $(printf '%s' \"$s\" | tr '{},[]' '\\n\\n\\n\\n\\n' | awk '"
        + puma.SUMMARY_AWK + "'); c=$1 n=$2 b=$3 old=$4 ph=$5; shift 5; list=\" $* \"; }")


def test_puma_stats_summary_reads_cluster_and_single_mode():
    cluster = ('{"started_at":"2026-12-02T12:40:45Z","workers":2,"phase":3,"booted_workers":1,"old_workers":1,'
               '"worker_status":[{"started_at":"x","pid":10902,"index":0,"phase":3,"booted":true,"last_checkin":"x",'
               '"last_status":{"backlog":0,"running":1}},{"started_at":"x","pid":10906,"index":1,"phase":2,'
               '"booted":false,"last_checkin":"x","last_status":{}}]}')
    single = '{"started_at":"x","backlog":0,"running":1,"pool_capacity":4,"max_threads":4}'

    def summary(js):
        return subprocess.run(["sh", "-c", f"printf '%s' \"$1\" | tr '{{}},[]' '\\n\\n\\n\\n\\n' | awk "
                                     f"'{puma.SUMMARY_AWK}'", "sh", js],
                              capture_output=True, text=True, check=True).stdout.split()

    assert summary(cluster) == ["1", "2", "1", "1", "3", "10902:1", "10906:0"]
    assert summary(single) == ["0", "0", "0", "0", "-1"]


def test_the_phased_restart_of_a_pid_file_puma_exact():
    svc = Service("puma", "cd ~/code/shop && bin/restart puma", pid_file="~/run/puma.pid")
    script = puma.restart(svc, "phased", "~/run/puma.state", "~/code/shop", 120, "~/code/shop", 30)
    assert script == (
        "{ " + ALIVE + "; " + puma.stats_function("~/run/puma.state") + "; " + puma.look_function()
        + "; pampa_restart() { "
        'moved=; if pid=$(cat ~/run/puma.pid 2>/dev/null); pampa_alive "$pid"; then r=$(sed -n '
        '\'s/^running_from: *//p\' ~/run/puma.state 2>/dev/null | tr -d \'"\'); root=$(readlink -f '
        '~/code/shop 2>/dev/null); case "$r" in \'\'|"$root"|"$root"/*) ;; *) moved=$r;; esac; fi; if [ -n '
        '"$moved" ]; then echo "pampa-note: "puma": ran from $moved, outside this stage\'s code $root: '
        'restarted fully, as a phased restart would have kept the old code"; '
        + drain(svc, 30) +
        " || return 1; before=' '; ph0=-1; elif pid=$(cat ~/run/puma.pid 2>/dev/null); pampa_alive "
        '"$pid"; then pampa_look || { echo puma": cannot tell when a phased restart is done: puma\'s '
        'control app does not answer ($e); add state_path and activate_control_app to config/puma.rb '
        '(docs/operations.md, Zero-downtime restarts), or set units.puma_restart: full" >&2; return 1; '
        '}; [ "$c" = 1 ] || { echo puma": puma runs in single mode (no workers): a phased restart needs '
        'cluster mode (workers 2 in config/puma.rb), or set units.puma_restart: full" >&2; return 1; }; '
        'before=\' \'; for x in $list; do before="$before${x%:*} "; done; ph0=$ph; kill -USR1 "$pid" || '
        'return 1; echo puma": phased restart asked ""(USR1 to pid $pid)""; waiting up to 120s for every '
        'worker to boot on the new code"; else echo puma": not running: starting it"; before=\' \'; '
        'ph0=-1; cd ~/code/shop && bin/restart puma || return 1; fi; want=$(readlink -f ~/code/shop '
        "2>/dev/null); end=$(($(date +%s) + 120)); last=; died=0; young=' '; while :; do if pampa_look; "
        'then stale=0; fresh=\' \'; for x in $list; do p=${x%:*}; case "$before" in *" $p "*) '
        'stale=$((stale+1));; *) fresh="$fresh$p ";; esac; done; for p in $young; do case "$fresh" in *" '
        '$p "*) ;; *) died=$((died+1));; esac; done; young=\' \'; for x in $list; do case "$x" in *:0) '
        'case "$before" in *" ${x%:*} "*) ;; *) young="$young${x%:*} ";; esac;; esac; done; m="$b of $n '
        'workers booted, $stale of them from before the restart"; [ "$m" = "$last" ] || { echo puma": '
        '$m"; last=$m; }; if [ "$n" -gt 0 ] && [ "$b" = "$n" ] && [ "$stale" = 0 ] && [ "$old" = 0 ]; '
        'then break; fi; [ "$c" = 1 ] || { echo puma": puma runs in single mode (no workers): a phased '
        'restart needs cluster mode (workers 2 in config/puma.rb), or set units.puma_restart: full" >&2; '
        'return 1; }; [ "$died" -lt 3 ] || { echo puma": the phased restart failed: $died new workers '
        "exited before they booted, so the new code does not boot (see puma's log); the workers from "
        'before keep serving" >&2; return 1; }; else m="puma\'s control app does not answer: $e"; [ "$m" '
        '= "$last" ] || { echo puma": $m"; last=$m; }; fi; [ "$(date +%s)" -lt "$end" ] || { echo puma": '
        'the phased restart did not complete within 120s: $last" >&2; return 1; }; sleep 0.5; done; for '
        'p in $fresh; do d=$(readlink "/proc/$p/cwd" 2>/dev/null) || continue; case "$d" in '
        '"$want"|"$want"/*) ;; *) echo puma": the new workers run in $d, not in the live code '
        '"~/code/shop" ($want): puma restarts into the folder it was started from; set directory to '
        '"~/code/shop" in config/puma.rb" >&2; return 1;; esac; done; [ "$ph0" -lt 0 ] || [ "$ph" -gt '
        '"$ph0" ] || echo "pampa-note: "puma": puma restarted every worker at once instead of one at a '
        'time (preload_app, or a reload that sends USR2): requests waited while they booted"; echo '
        'puma": phased restart done: $n workers on the new code"; }; pampa_restart; }'
    )


def test_the_hot_restart_of_a_systemd_unit_asks_systemctl_reload():
    script = puma.restart(UNIT, "hot", "/srv/shop/tmp/pids/puma.state", "/srv/shop", 30.2)
    assert "if systemctl is-active --quiet shop_worker; then pampa_look ||" in script
    assert ("sudo systemctl reload shop_worker || return 1; echo shop_worker\": hot restart asked "
            "\"\"(\"'sudo systemctl reload shop_worker'\")\"\"; waiting up to 31s") in script
    assert "else echo shop_worker\": not running: starting it\"; before=' '; ph0=-1; sudo systemctl restart" in script
    assert "one at a time" not in script  # the phased-only note: a hot restart replaces every worker at once anyway
    assert "as a hot restart would have kept the old code\"; " + drain(UNIT, 30) + " || return 1" in script
    assert puma.describe(UNIT, "hot", "/srv/x.state", 30) == (
        "hot restart shop_worker: sudo systemctl reload shop_worker (its ExecReload sends USR2), or when not "
        "running sudo systemctl restart shop_worker; then wait up to 30s until puma's control app (/srv/x.state) "
        "lists every worker booted on the new code")


# -- the step builders -----------------------------------------------------------------------------------------
def test_full_is_the_default_and_keeps_the_plain_restart_command():
    plan = build_plan(stage({"restart": "sudo systemctl restart {unit}"}))
    (action,) = step_actions(plan, "k1", "restart_puma")
    assert isinstance(action, Run) and action.command.script == "sudo systemctl restart shop_app"
    assert action.command.timeout == 600  # the step's timeout, as for any command


def test_pid_file_and_stop_make_every_restart_a_drain():
    plan = build_plan(stage({"pid_file": "~/run/{unit}.pid", "stop_timeout": 5, "workers": ["{app}_worker"],
                             "restart": "cd {path} && bin/restart {unit}"}))
    (worker,) = step_actions(plan, "n1", "restart_workers")
    assert isinstance(worker, Restart) and worker.unit == "shop_worker"
    assert worker.command.script == drain(Service("shop_worker", "cd ~/code/shop && bin/restart shop_worker",
                                                  pid_file="~/run/shop_worker.pid"), 5)
    assert worker.display() == ("drain shop_worker: TERM to the pid in ~/run/shop_worker.pid, KILL after 5s; "
                                "then cd ~/code/shop && bin/restart shop_worker")
    assert worker.command.timeout == 600 and worker.command.cwd is None
    systemd = build_plan(stage({"stop": "sudo systemctl stop {unit}"}))
    procs = step_actions(systemd, "k1", "restart_processes")
    assert [a.unit for a in procs] == ["shop_dispatcher", "shop_jobs", "shop_planner"]
    assert [c.script for c in procs[0].commands()] == ["sudo systemctl restart shop_dispatcher",
                                                      "sudo systemctl stop shop_dispatcher"]


def test_phased_puma_waits_on_the_state_file_and_the_live_code():
    plan = build_plan(stage({"puma_restart": "phased", "pid_file": "~/run/{unit}.pid", "puma": ["puma"],
                             "puma_state": "~/run/{unit}.state", "restart_timeout": 45,
                             "restart": "cd {path} && bin/restart {unit}"}, strategy="releases"))
    (action,) = step_actions(plan, "k1", "restart_puma")
    svc = Service("puma", "cd ~/code/shop/current && bin/restart puma", pid_file="~/run/puma.pid")
    assert action.command.script == puma.restart(svc, "phased", "~/run/puma.state", "~/code/shop/current", 45,
                                                 "~/code/shop", 30)
    assert action.display().startswith("phased restart puma: USR1 to the pid in ~/run/puma.pid, or when not "
                                       "running cd ~/code/shop/current && bin/restart puma; then wait up to 45s")
    assert [c.script for c in action.commands()] == ["curl", "awk", "cd ~/code/shop/current && bin/restart puma"]
    default = build_plan(stage({"puma_restart": "hot"}))
    (hot,) = step_actions(default, "k1", "restart_puma")
    assert "[ -r ~/code/shop/tmp/pids/puma.state ]" in hot.command.script  # the default state file
    assert "sudo systemctl reload shop_app || return 1" in hot.command.script


def test_a_wrong_mode_or_template_is_one_line_naming_the_key():
    with pytest.raises(ConfigErrors) as e:
        stage({"puma_restart": "phase"})
    assert str(e.value) == ("command-line: units.puma_restart: unknown puma_restart 'phase' (did you mean 'phased'?); "
                            "use one of: full, hot, phased")
    with pytest.raises(ConfigErrors) as e:
        stage({"stop_timeout": 0})
    assert "units.stop_timeout: expected a positive number, got 0" in str(e.value)
    from pampa_deployer.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        build_plan(stage({"pid_file": "~/run/{unitt}.pid"}))
    assert "units.pid_file: unknown variable {unitt}" in str(e.value)


# -- pampa check: can this host's puma do a hot or phased restart? ------------------------------------------------
def test_check_probes_a_hot_or_phased_puma_and_nothing_else():
    from pampa_deployer.readiness import probe_for
    units = {"puma_restart": "phased", "pid_file": "~/run/{unit}.pid", "puma": ["puma"],
             "puma_state": "~/run/{unit}.state", "restart": "cd {path} && bin/restart {unit}"}
    s = stage(units, strategy="releases")
    hp = next(h for h in build_plan(s).hosts if h.host.name == "k1")
    svc = Service("puma", "cd ~/code/shop/current && bin/restart puma", pid_file="~/run/puma.pid")
    probe = puma.probe(svc, "~/run/puma.state", "~/code/shop", "~/code/shop/current", True)
    assert probe_for(s, hp).script.endswith(" ; " + probe)
    assert probe.endswith(
        "if pid=$(cat ~/run/puma.pid 2>/dev/null); pampa_alive \"$pid\"; then if pampa_look; then if [ \"$c\" = 1 ]; "
        "then echo puma:puma=cluster:$n; else echo puma:puma=single; fi; else echo puma:puma=no-control:\"$e\"; fi; "
        "r=$(sed -n 's/^running_from: *//p' ~/run/puma.state 2>/dev/null | tr -d '\"'); "
        "root=$(readlink -f ~/code/shop 2>/dev/null); case \"$r\" in ''|\"$root\"|\"$root\"/*) ;; "
        "*) echo puma:puma.moved=\"$r\";; esac; else echo puma:puma=not-running; fi; "
        "if [ ! -f ~/code/shop/current/config/puma.rb ]; then echo puma:puma.config=missing; else "
        "grep -Eq '^[[:space:]]*directory[[:space:]]' ~/code/shop/current/config/puma.rb || "
        "echo puma:puma.directory=missing; [ ! -e ~/code/shop/current/Gemfile ] || "
        "grep -Eq '^[[:space:]]*prune_bundler' ~/code/shop/current/config/puma.rb || "
        "echo puma:puma.prune_bundler=missing; fi )")
    assert "config/puma.rb" not in puma.probe(svc, "~/run/puma.state", "~/code/shop", "~/code/shop", False)
    full = stage({"pid_file": "~/run/{unit}.pid"})  # a full restart needs nothing of puma
    assert "pampa_look" not in probe_for(full, next(h for h in build_plan(full).hosts if h.host.name == "k1")).script


def test_check_says_what_keeps_a_puma_from_a_hot_or_phased_restart():
    from pampa_deployer.readiness import judge
    units = {"puma_restart": "phased", "pid_file": "~/run/{unit}.pid", "puma": ["puma"]}
    s = stage(units, strategy="releases")
    hp = next(h for h in build_plan(s).hosts if h.host.name == "k1")
    base = {"probe": "started", "git": "ok:0123456789ab", "path": "ok", "disk": "99999999:/"}

    def said(**found):
        result = judge(s, hp, {**base, **{k.replace("_", ":", 1).replace("__", "."): v for k, v in found.items()}}, 1)
        return [p.line("k1") for p in result.problems], result.facts

    assert said(puma_puma="cluster:2") == ([], {"branch_head": "0123456789ab", "free_mb": 97656,
                                                "puma": {"puma": "phased, 2 workers"}})
    assert said(puma_puma="not-running")[1]["puma"] == {"puma": "not running (a deploy starts it)"}
    assert said(puma_puma="single")[0] == [
        "k1: puma (puma) runs in single mode: a phased restart needs cluster mode; set workers (2 or more) in "
        "config/puma.rb (docs/operations.md, Zero-downtime restarts), or set units.puma_restart: full"]
    assert said(puma_puma="no-control:curl: (7) Couldn't connect to server")[0] == [
        "k1: puma (puma) answers on no control app (curl: (7) Couldn't connect to server), so a phased restart "
        "could not tell when it is done; add state_path and activate_control_app to config/puma.rb "
        "(docs/operations.md, Zero-downtime restarts), check units.puma_state, or set units.puma_restart: full"]
    assert said(puma_puma="not-running", puma_puma__directory="missing", puma_puma__prune_bundler="missing")[0] == [
        "k1: ~/code/shop/current/config/puma.rb sets no directory, so a phased restart of puma (puma) re-enters the "
        "folder it was started in, not the new release; add `directory \"~/code/shop/current\"` to config/puma.rb "
        "(docs/operations.md, Zero-downtime restarts)",
        "k1: ~/code/shop/current/config/puma.rb has no prune_bundler, so the workers of a phased restart of puma "
        "(puma) keep the gems of the release puma started in; add prune_bundler to config/puma.rb "
        "(docs/operations.md, Zero-downtime restarts)"]
    assert said(puma_puma="cluster:2", puma_puma__config="missing")[1]["puma_config"] == {
        "puma": "no ~/code/shop/current/config/puma.rb: not checked"}
    moved = said(puma_puma="cluster:2", puma_puma__moved="/home/d/old")
    assert moved[0] == [] and moved[1]["puma"] == {"puma": "phased, 2 workers; runs from /home/d/old, outside the "
                                                           "stage's code: the next deploy restarts it fully, once"}


# -- what docs/operations.md (Zero-downtime restarts) shows ----------------------------------------------------
def _doc(marker: str) -> str:
    from conftest import doc_block
    return doc_block("operations.md", marker)


def test_the_documented_puma_rb_is_what_the_demo_app_runs():
    """Every directive of the docs' config/puma.rb is in the demo app's, which the fleet tests deploy."""
    from pampa_deployer.fleet import APP_SOURCE
    demo = {line.split()[0] for line in (APP_SOURCE / "config" / "puma.rb").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    documented = {line.split()[0] for line in _doc("puma.rb").splitlines() if line.strip()}
    assert documented == {"workers", "directory", "prune_bundler", "pidfile", "state_path", "activate_control_app",
                          "queue_requests"}
    assert documented <= demo
    assert "queue_requests false" in (APP_SOURCE / "config" / "puma.rb").read_text()


def test_the_documented_systemd_units_send_what_the_stage_asks_for():
    import yaml
    unit = _doc("unit: phased")
    assert "ExecReload=/bin/kill -USR1 $MAINPID" in unit and "TimeoutStopSec=30" in unit
    assert "ListenStream=0.0.0.0:3000" in _doc("unit: socket")
    units = {**yaml.safe_load(_doc("units: systemd"))["units"], "puma": ["mysaas_app"], "workers": ["mysaas_worker"]}
    plan = build_plan(stage(units))
    (puma_restart,) = step_actions(plan, "k1", "restart_puma")
    assert puma_restart.display().startswith("phased restart mysaas_app: sudo systemctl reload mysaas_app (its "
                                             "ExecReload sends USR1), or when not running sudo systemctl restart")
    (worker,) = step_actions(plan, "n1", "restart_workers")
    assert worker.display() == ("drain mysaas_worker: sudo systemctl stop mysaas_worker (systemd: TERM, KILL after "
                                "the unit's TimeoutStopSec); then sudo systemctl restart mysaas_worker")
    scripts = yaml.safe_load(_doc("units: pid files"))["units"]
    (worker,) = step_actions(build_plan(stage({**scripts, "workers": ["worker"]})), "n1", "restart_workers")
    assert worker.display() == ("drain worker: TERM to the pid in ~/run/worker.pid, KILL after 60s; then "
                                "cd ~/code/shop && bin/restart worker")


def test_the_documented_check_lines_are_what_check_says():
    from conftest import DOCS

    from pampa_deployer.readiness import judge
    shown = [line for line in (DOCS / "operations.md").read_text().splitlines() if line.startswith("euler-2: ")]
    s = stage_from_mapping({"app": "mysaas", "repo": "git@example.com:mysaas.git", "strategy": "releases",
                            "units": {"puma": ["mysaas_app"], "puma_restart": "phased"},
                            "hosts": {"euler-2": {"address": "10.0.1.2", "roles": ["euler"]}}}, environ={})
    hp = build_plan(s).hosts[0]
    found = {"probe": "started", "git": "ok:0123456789ab", "path": "ok", "disk": "99999999:/",
             "puma:mysaas_app": "single", "puma:mysaas_app.directory": "missing"}
    assert [p.line("euler-2") for p in judge(s, hp, found, 1).problems] == shown


def test_the_demo_deploys_with_phased_restarts_and_drains():
    from pampa_deployer.cli.demo import demo_fleet, demo_stage
    units = demo_stage(demo_fleet())["units"]
    assert (units["puma_restart"], units["pid_file"], units["puma_state"]) == \
        ("phased", "~/run/{unit}.pid", "~/run/{unit}.state")


def test_a_restart_gets_at_least_the_time_it_may_wait_unless_the_step_says_otherwise():
    units = {"puma_restart": "phased", "restart_timeout": 900, "stop_timeout": 700, "workers": ["w"],
             "pid_file": "~/run/{unit}.pid"}
    plan = build_plan(stage(units))
    assert step_actions(plan, "k1", "restart_puma")[0].command.timeout == 900 + 700 + 60
    assert step_actions(plan, "n1", "restart_workers")[0].command.timeout == 700 + 60
    assert step_actions(build_plan(stage({"pid_file": "~/run/{unit}.pid"})), "n1",
                        "restart_workers")[0].command.timeout == 600  # the step's default is more
    own = build_plan(stage(units, steps={"restart_puma": {"timeout": 30}}))
    assert step_actions(own, "k1", "restart_puma")[0].command.timeout == 30


def test_check_of_a_releases_host_names_no_loop_variable_and_no_checkout_problem():
    """Two things `pampa check` said of every releases host once it was deployed (found by the fleet test)."""
    from pampa_deployer.commands import readiness as probe
    from pampa_deployer.readiness import judge
    s = stage({}, strategy="releases")
    hp = next(h for h in build_plan(s).hosts if h.host.name == "k1")
    used = probe.programs_used(c for step in hp.steps for a in step.actions for c in a.commands())
    assert "r" not in used and {"sort", "tail", "git"} <= set(used)  # `for r in $(ls ... | sort -r | tail ...)`
    found = {"probe": "started", "git": "ok:0123456789ab", "path": "ok", "disk": "99999999:/",
             "checkout": "not-a-checkout"}  # ROOT holds repo.git, releases/, shared/: no .git of its own
    assert judge(s, hp, found, 1).problems == []
