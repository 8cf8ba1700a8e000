"""Push deploy against the real sshd fleet: full deploy, gate ordering, kepler failure, a host down."""
from __future__ import annotations

import json
import stat

import pytest
from conftest import SECRET, head, kill_leftovers, migrations, pid, restarted, running, served, trace

pytestmark = pytest.mark.fleet

KEPLERS = ["kepler-1", "kepler-2"]
GATED = ["euler-1", "copernico-1"]
NEWTONS = ["newton-1", "newton-2"]


def test_full_deploy_updates_every_host(project, fleet):
    project.stage()
    gated_before = {h: head(fleet, h) for h in GATED}
    pids_before = {h: served(fleet, h, s) for h, s in
                   [("kepler-1", "puma"), ("kepler-2", "planner"), ("euler-1", "puma"),
                    ("newton-1", "worker"), ("newton-2", "worker"), ("copernico-1", "dispatcher")]}
    new = fleet.commit("Release for the full deploy test")

    result = project.pampa("deploy", "test", "--report", "report.json")

    assert result.returncode == 0, result.stdout + result.stderr
    for host in KEPLERS + NEWTONS:
        assert head(fleet, host) == new, host
        secret = fleet.code(host) / "config.rb"
        assert secret.read_text() == f"DB_PASSWORD = '{SECRET}'\n"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert migrations(fleet, host) == ["2"], host  # both Sequel migrations applied
    # Per the seed, euler and copernico only bundle and restart: their checkout is not moved.
    for host in GATED:
        assert head(fleet, host) == gated_before[host]
        assert not (fleet.code(host) / "config.rb").exists()
    for (host, service), before in zip([("kepler-1", "puma"), ("kepler-2", "planner"), ("euler-1", "puma"),
                                        ("newton-1", "worker"), ("newton-2", "worker"),
                                        ("copernico-1", "dispatcher")], pids_before.values()):
        assert restarted(fleet, host, service, before), (host, service)
    report = json.loads((project.root / "report.json").read_text())
    assert {h["name"]: h["result"] for h in report["hosts"]} == {h: "ok" for h, _ in
                                                                   [(x.name, 0) for x in fleet.hosts]}
    assert report["revision"] == new


def test_gate_orders_gated_roles_after_every_kepler(project, fleet):
    project.stage(trace=True)
    fleet.commit("Release for the gate test")

    result = project.pampa("deploy", "test")

    assert result.returncode == 0, result.stdout + result.stderr
    kepler_end = max(end for h in KEPLERS for _, end in trace(fleet, h))
    kepler_start = min(start for h in KEPLERS for start, _ in trace(fleet, h))
    for host in GATED:
        spans = trace(fleet, host)
        assert spans, f"{host} ran nothing"
        assert min(start for start, _ in spans) >= kepler_end, f"{host} started before the last kepler step ended"
    for host in NEWTONS:
        first = min(start for start, _ in trace(fleet, host))
        assert first < kepler_end, f"{host} waited for the gate"
    # Newtons overlap kepler: a newton command ran while kepler was still deploying.
    assert any(kepler_start < start < kepler_end for h in NEWTONS for start, _ in trace(fleet, h))


def test_kepler_failure_keeps_gate_closed(project, fleet):
    project.stage(trace=True, steps={"break_kepler": {"run": "echo 'kepler cannot migrate' >&2; exit 3",
                                          "roles": ["kepler"], "after": "migrate"}})
    gated_log = {h: (fleet.code(h).parent / f"{fleet.app}.revisions.jsonl") for h in GATED}
    gated_lines = {h: p.read_text() if p.exists() else "" for h, p in gated_log.items()}
    new = fleet.commit("Release whose kepler fails")

    result = project.pampa("deploy", "test")

    assert result.returncode == 1
    for host in GATED:
        assert trace(fleet, host) == [], f"{host} was touched"
        text = gated_log[host].read_text() if gated_log[host].exists() else ""
        assert text == gated_lines[host]
        assert f"RESULT {host} [{host.split('-')[0]}] skipped" in result.stdout
        assert "gate closed" in result.stdout
    for host in NEWTONS:
        assert head(fleet, host) == new
    assert "RESULT kepler-1 [kepler] failed at break_kepler exit 3" in result.stdout
    assert "kepler cannot migrate" in result.stdout


def test_one_host_down_others_finish(project, fleet):
    project.stage()
    new = fleet.commit("Release with newton-2 down")
    fleet.stop_host("newton-2")
    try:
        result = project.pampa("deploy", "test", "--report", "r.json")
    finally:
        fleet.start_host("newton-2")

    assert result.returncode == 1
    assert "RESULT newton-2 [newton] failed at connect" in result.stdout
    assert "connection refused" in result.stdout
    # newton-2 printed nothing: no stderr line is made up from the connect failure's reason.
    assert "newton-2 stderr:" not in result.stdout
    import json
    down = next(h for h in json.loads((project.root / "r.json").read_text())["hosts"] if h["name"] == "newton-2")
    assert down["stderr_tail"] is None and "connection refused" in down["reason"]
    for host in ["kepler-1", "kepler-2", "newton-1"]:
        assert head(fleet, host) == new
    assert "RESULT euler-1 [euler] ok" in result.stdout


def test_roles_hosts_and_branch_narrow_a_deploy(project, fleet):
    project.stage()
    before = {h.name: head(fleet, h.name) for h in fleet.hosts}
    subprocess_git = __import__("subprocess")
    subprocess_git.run(["git", "-C", str(fleet.work), "checkout", "-q", "-b", "hotfix"], check=True)
    try:
        hot = fleet.commit("Hotfix")
        subprocess_git.run(["git", "-C", str(fleet.work), "push", "-q", "origin", "hotfix"], check=True)
    finally:
        subprocess_git.run(["git", "-C", str(fleet.work), "checkout", "-q", "main"], check=True)

    result = project.pampa("deploy", "test", "--roles", "newton", "--hosts", "newton-1", "--branch", "hotfix")

    assert result.returncode == 0, result.stdout + result.stderr
    assert head(fleet, "newton-1") == hot
    for host in ("kepler-1", "newton-2", "euler-1"):
        assert head(fleet, host) == before[host]
    assert "RESULT newton-2" not in result.stdout


def test_dry_run_connects_to_nothing_and_masks_secrets(project, fleet):
    project.stage(trace=True, env={"API_TOKEN": SECRET})
    fleet.stop_host("kepler-1")
    try:
        result = project.pampa("deploy", "test", "--dry-run")
    finally:
        fleet.start_host("kepler-1")
    assert result.returncode == 0, result.stderr
    assert "git reset --hard origin/main" in result.stdout
    assert "upload secrets/config.rb" in result.stdout
    assert SECRET not in result.stdout + result.stderr
    assert "API_TOKEN=********" in result.stdout
    assert all(trace(fleet, h.name) == [] for h in fleet.hosts)


def test_shell_session_runs_the_prefix_once_and_keeps_each_step_apart(project, fleet):
    """The default transport: one shell per host; the prefix is loaded once; steps keep their own status."""
    project.stage(prefix="echo loaded >> ~/prefix.log",
                  steps={"check_isolation": {"run": "cd /tmp && export LEAK=1 && exit 0", "roles": ["newton"],
                                             "after": "git_reset"},
                         "see_no_leak": {"run": "test \"$PWD\" = {path!u} || test -z \"$LEAK\"",
                                         "roles": ["newton"], "after": "check_isolation"},
                         "fail_last": {"run": "echo half-done; exit 9", "roles": ["newton"], "after": "bundle"}})
    for host in fleet.hosts:
        (fleet.home(host.name) / "prefix.log").unlink(missing_ok=True)

    result = project.pampa("deploy", "test", "--roles", "newton", "--report", "r.json")

    assert result.returncode == 1
    import json
    steps = {s["name"]: s for s in json.loads((project.root / "r.json").read_text())["hosts"][0]["steps"]}
    assert steps["see_no_leak"]["result"] == "ok"  # cd/export of one step did not leak into the next
    assert steps["fail_last"]["exit_code"] == 9 and steps["bundle"]["result"] == "ok"
    assert "RESULT newton-1 [newton] failed at fail_last exit 9" in result.stdout
    for host in NEWTONS:
        assert (fleet.home(host) / "prefix.log").read_text() == "loaded\n"  # once, not once per command


def test_host_lost_mid_deploy_fails_alone(project, fleet):
    """newton-2 powers off during a step: it is reported failed with the reason, the others finish."""
    import time as _time
    project.stage(steps={"slow": {"run": "sleep 3", "roles": ["newton"], "after": "git_reset"}})
    new = fleet.commit("Release while newton-2 dies")
    proc = project.popen("deploy", "test")
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "newton-2 slow start" in line:
            break
    fleet.stop_host("newton-2")
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        fleet.start_host("newton-2")
        _time.sleep(0.2)
    output = "".join(seen) + out
    assert proc.returncode == 1, output + err
    assert "RESULT newton-2 [newton] failed at slow" in output
    assert "internal error" not in err
    for host in ("kepler-1", "kepler-2", "newton-1"):
        assert head(fleet, host) == new



#: pampa with more than 1,024 descriptors open before it starts (as at a thousand hosts): every one it
#: opens then is at or above select()'s FD_SETSIZE, where select() on a channel fails.
HIGH_DESCRIPTORS = """
import os, sys
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
assert held[-1] >= 1024, held[-1]
from pampa_deployer.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("shell_session", [True, False], ids=["session", "channel-per-command"])
def test_deploy_works_with_more_than_1024_descriptors_open(project, fleet, shell_session):
    """Issue 24: at 1,000 hosts, hosts failed with 'filedescriptor out of range in select()'. A deploy
    whose process already holds 1,100 descriptors reads every channel (the session, a channel per
    command, the fresh channel that stops a timed-out step) and deploys every host."""
    import subprocess
    import sys
    project.stage(ssh={"shell_session": shell_session},
                  steps={"too_slow": {"run": "sleep 4105", "roles": ["newton"], "after": "report_version",
                                      "timeout": 1}})
    new = fleet.commit("Release with many descriptors open")
    try:
        result = subprocess.run([sys.executable, "-c", HIGH_DESCRIPTORS, "deploy", "test", "--report", "r.json"],
                                cwd=project.root, capture_output=True, text=True, timeout=300,
                                stdin=subprocess.DEVNULL)
        left = [h for h in NEWTONS if running(fleet, h, "sleep 4105")]
    finally:
        for h in NEWTONS:
            kill_leftovers(fleet, h, "sleep 4105")

    assert "out of range" not in result.stdout + result.stderr
    assert result.returncode == 1, result.stdout + result.stderr  # only the newtons' too_slow failed
    report = json.loads((project.root / "r.json").read_text())
    assert {h["name"]: h["result"] for h in report["hosts"]} == \
        {h.name: "failed" if h.name in NEWTONS else "ok" for h in fleet.hosts}
    for host in KEPLERS + NEWTONS:
        assert head(fleet, host) == new, host
        assert migrations(fleet, host) == ["2"], host
    for host in NEWTONS:
        assert f"RESULT {host} [newton] failed at too_slow exit 124" in result.stdout
    assert "stopped (TERM)" in result.stdout and left == []  # the stop's own channel was read too


def test_consecutive_steps_cost_one_round_trip_together(project, fleet, monkeypatch):
    """Issue 24: the steps that need no answer from pampa's side are sent to the host's session together:
    newton-1 (not the lock host) costs two writes, its steps through report_version and then the
    revision-log line, where it cost one per command. Counted, not timed. Each step still has its own
    start, result and timing, and the start record named each step in turn."""
    from collections import Counter

    from pampa_deployer.engine.backends.session import ShellSession
    project.stage()
    new = fleet.commit("Release sent ahead")
    writes: Counter = Counter()
    send = ShellSession._send

    def counted(self, text):
        if not text.startswith("__pampa_sshd="):  # the session's first line goes with its exec request
            writes[self.channel.get_transport().getpeername()[0]] += 1
        return send(self, text)
    monkeypatch.setattr(ShellSession, "_send", counted)

    assert project.run_main("deploy", "test", "--hosts", "kepler-1,newton-1", "--report", "r.json") == 0

    assert writes[fleet.host("newton-1").address] == 2
    assert head(fleet, "newton-1") == new and migrations(fleet, "newton-1") == ["2"]
    steps = next(h for h in json.loads((project.root / "r.json").read_text())["hosts"]
                 if h["name"] == "newton-1")["steps"]
    assert [s["name"] for s in steps] == ["git_fetch", "git_reset", "secrets", "bundle", "migrate", "restart_workers",
                                          "report_version"]
    assert all(s["result"] == "ok" for s in steps)
    assert [s["started"] for s in steps] == sorted(s["started"] for s in steps)


def test_a_failed_step_stops_the_steps_sent_after_it(project, fleet):
    """The steps after a failed one were already sent to the host: it runs none of them."""
    project.stage(steps={"break_here": {"run": "exit 7", "roles": ["newton"], "after": "git_reset"}})
    before = pid(fleet, "newton-2", "worker")
    secret = fleet.code("newton-2") / "config.rb"
    secret.unlink(missing_ok=True)

    result = project.pampa("deploy", "test", "--hosts", "newton-2")

    assert result.returncode == 1
    assert "RESULT newton-2 [newton] failed at break_here exit 7" in result.stdout
    assert not secret.exists() and pid(fleet, "newton-2", "worker") == before  # nothing after it ran
    assert "newton-2 secrets start" not in result.stdout and "newton-2 bundle" not in result.stdout
