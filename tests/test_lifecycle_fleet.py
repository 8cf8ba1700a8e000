"""A status that never lies, and locks and requests that cannot be lost, against the real fleet.

Crashes are real: a host is powered off (every process of its namespace SIGKILLed) in the middle
of a step, or the deploy itself is SIGKILLed. Assertions read the hosts' own files and pampa's
outputs and exit codes.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from conftest import head, read_until, trace

pytestmark = pytest.mark.fleet


def lock_dir(fleet) -> Path:
    return fleet.home("kepler-1") / ".pampa" / "locks" / "test.lock"


def status(project, *extra, env=None):
    result = project.pampa("status", "test", "--json", *extra, env=env)
    return result, json.loads(result.stdout)


# -- a status that never lies ---------------------------------------------------------------------------
def test_host_crashed_mid_step_shows_incomplete_and_status_exits_non_zero(project, fleet):
    project.stage(steps={"slow": {"run": "sleep 30", "roles": ["newton"], "after": "migrate"}})
    fleet.commit("Release newton-1 never finishes")
    proc = project.popen("deploy", "test", "--hosts", "kepler-1,newton-1")
    seen: list[str] = []
    try:
        read_until(proc, "newton-1 slow start", seen)
        fleet.stop_host("newton-1")  # power off: no process of the host survives
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        fleet.start_host("newton-1")
    assert proc.returncode == 1, "".join(seen) + out
    assert "host crashed or connection lost during slow" in "".join(seen) + out

    # The two hosts of the run (other tests may have left other hosts incomplete, rightly).
    result, found = status(project, "--hosts", "kepler-1,newton-1")
    table = project.pampa("status", "test", "--hosts", "kepler-1,newton-1")

    rows = {h["host"]: h for h in found["hosts"]}
    assert result.returncode == 1 and table.returncode == 1
    assert found["incomplete"] == ["newton-1"] and not found["agree"]
    assert rows["newton-1"]["incomplete"]["step"] == "slow"
    assert rows["newton-1"]["branch"] == "main" and rows["kepler-1"]["branch"] == "main"
    assert not rows["kepler-1"]["incomplete"] and not found["drift"]
    assert "incomplete at slow" in table.stdout
    assert "hosts on one revision" not in table.stdout and "1 incomplete" in table.stdout
    # The next deploy finishes the host, and status agrees again (euler and copernico keep their own
    # checkout: no git_reset in their sequences, so they are left out).
    project.stage()
    assert project.pampa("deploy", "test").returncode == 0
    result, found = status(project, "--roles", "kepler,newton")
    assert result.returncode == 0 and found["agree"] and found["incomplete"] == []
    assert "all 4 hosts on one revision" in project.pampa("status", "test", "--roles", "kepler,newton").stdout


def test_sigkilled_deploy_leaves_its_hosts_incomplete(project, fleet):
    project.stage(steps={"slow": {"run": "sleep 30", "roles": ["newton"], "after": "git_reset"}})
    proc = project.popen("deploy", "test", "--hosts", "newton-2")
    seen: list[str] = []
    try:
        read_until(proc, "newton-2 slow start", seen)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        result, found = status(project, "--hosts", "newton-2")
    finally:
        lock = lock_dir(fleet)
        if lock.exists():  # the killed deploy could not release it
            project.pampa("unlock", "test", "--force", "-m", "test cleanup")
        project.stage()
        project.pampa("deploy", "test", "--hosts", "newton-2")
    assert result.returncode == 1
    assert found["hosts"][0]["incomplete"]["step"] == "slow"


def test_unreachable_host_is_never_counted_as_agreeing(project, fleet):
    project.stage()
    assert project.pampa("deploy", "test").returncode == 0
    fleet.stop_host("newton-2")
    try:
        result, found = status(project, "--roles", "kepler,newton")
        table = project.pampa("status", "test", "--roles", "kepler,newton")
    finally:
        fleet.start_host("newton-2")
    assert result.returncode == 1 and found["unreachable"] == ["newton-2"] and not found["agree"]
    assert not found["drift"]  # the three it saw agree, but it did not see the fourth
    assert "hosts on one revision" not in table.stdout and "1 unreachable (not seen): newton-2" in table.stdout
    assert "pampa: error: stage test:" in table.stderr


# -- locks that cannot be lost ---------------------------------------------------------------------------
def test_deploy_whose_lock_is_taken_over_stops_starting_hosts(project, fleet):
    # kepler-1 runs a slow step alone (--parallel 1); meanwhile someone takes the lock over.
    project.stage(lock={"lease": 3},
                  steps={"slow": {"run": "sleep 6", "roles": ["kepler"], "after": "git_reset"}})
    old = head(fleet, "newton-1")
    fleet.commit("Release whose lock is stolen")
    proc = project.popen("deploy", "test", "--parallel", "1")
    seen: list[str] = []
    try:
        read_until(proc, "kepler-1 slow start", seen)
        d = lock_dir(fleet)
        (d / "token").write_text("someone-else")
        (d / "info.json").write_text(json.dumps({"user": "mallory", "machine": "other-box", "pid": 4242}))
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        project.pampa("unlock", "test", "--force", "-m", "test cleanup")
    output = "".join(seen) + out
    assert proc.returncode == 3, output + err
    assert "LOCK LOST" in output and "taken over by mallory@other-box (pid 4242)" in output
    assert "not started: the deploy lock was taken over" in output
    assert "RESULT newton-1 [newton] skipped" in output
    assert head(fleet, "newton-1") == old  # never touched after the lock was lost
    assert "stopped starting hosts" in err


# -- access point: abandoned requests and emergencies ---------------------------------------------------
def test_request_left_taken_by_a_dead_deploy_is_closed_as_abandoned(project, fleet, access_point):
    from pampa_deployer.accesspoint.client import AccessPointClient
    project.stage(access_point={"url": access_point, "api_key": "ap-test-key"})
    client = AccessPointClient(access_point, "ap-test-key")
    dead = client.create_deploy("test", "main", "ghost")["id"]
    client.take(dead, "kepler-1")  # ... and then that deploy was SIGKILLed

    before, found = status(project)
    deploy = project.pampa("deploy", "test", "--hosts", "newton-1")
    after = project.pampa("status", "test")

    assert [r["id"] for r in found["access_point_requests"]] == [dead]
    assert "open" in found["access_point_requests"][0]["note"]
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert f"deploy request {dead} was left TAKEN by a deploy that died; closed it as abandoned" in deploy.stdout
    closed = client.deploy(dead)
    assert closed["state"] == "FAILED" and closed["detail"].startswith("abandoned")
    assert f"deploy request {dead} FAILED (taken by kepler-1): abandoned" in after.stdout


def test_unreachable_access_point_blocks_unless_optional(project, fleet, tmp_path):
    project.stage(access_point={"url": "http://127.0.0.1:9", "api_key": "k", "timeout": 2})
    report = tmp_path / "report.json"
    blocked = project.pampa("deploy", "test", "--hosts", "newton-1")
    emergency = project.pampa("deploy", "test", "--hosts", "newton-1", "--access-point-optional",
                              "--report", str(report))

    assert blocked.returncode == 1 and "access point http://127.0.0.1:9" in blocked.stderr
    assert blocked.stderr.strip().endswith("(is it running, and is the stage's `access_point.url` right?); nothing "
                                           "was changed. To go on without it this once: --access-point-optional")
    assert emergency.returncode == 0, emergency.stdout + emergency.stderr
    assert "ACCESS POINT UNREACHABLE" in emergency.stdout
    notes = json.loads(report.read_text())["notes"]
    assert any("not reported: the deploy request" in n and "version of newton-1" in n for n in notes), notes
    assert "NOTE ACCESS POINT UNREACHABLE" in emergency.stdout


def test_access_point_killed_while_the_keplers_migrate_fails_no_deployed_host(project, fleet, tmp_path):
    """Issue 20: every fully deployed kepler and newton failed at report_version (connection refused, no
    retry) and the gated hosts were skipped. Now each report is retried for report_retry seconds, then it
    is a warning and a note: every host is deployed, the gate opens, exit 0."""
    from pullfleet import KEY, AccessPoint
    ap = AccessPoint(tmp_path / "ap.sqlite3")
    project.stage(trace=True, access_point={"url": ap.url, "api_key": KEY, "report_retry": 2},
                  steps={"migrate": {"run": "while [ -e ~/hold-migrate ]; do sleep 0.1; done"}})
    for name in ("kepler-1", "kepler-2"):
        (fleet.home(name) / "hold-migrate").write_text("")
    new = fleet.commit("Release whose access point goes away")
    proc = project.popen("deploy", "test", "--ci")
    seen: list[str] = []
    try:
        while not all(any(f"{k} migrate start" in line for line in seen) for k in ("kepler-1", "kepler-2")):
            read_until(proc, "migrate start", seen)  # both keplers are in migrate, in either order
        ap.stop()
        for name in ("kepler-1", "kepler-2"):
            (fleet.home(name) / "hold-migrate").unlink()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        for name in ("kepler-1", "kepler-2"):
            (fleet.home(name) / "hold-migrate").unlink(missing_ok=True)
    out = "".join(seen) + out
    assert proc.returncode == 0, out + err
    for host in fleet.hosts:
        assert f"RESULT {host.name} [" in out and f"RESULT {host.name} [{host.roles[0]}] ok" in out, out
    for name in ("euler-1", "copernico-1"):  # the gate opened: gated hosts deployed, after the keplers
        assert trace(fleet, name), f"{name} was not deployed"
    assert head(fleet, "kepler-1") == new and head(fleet, "newton-1") == new
    assert "ACCESS POINT UNREACHABLE" in out and "is deployed; its version report" in out
    note = next(line for line in out.splitlines() if line.startswith("NOTE ACCESS POINT UNREACHABLE"))
    assert "not reported: " in note and "version of kepler-1" in note and "version of kepler-2" in note, note


def test_a_start_record_that_cannot_be_written_fails_the_step_before_its_command_runs(project, fleet):
    """The record rides in the step's first command: when the host cannot write it, the command does
    not run and the step fails saying so (a directory stands where the record goes)."""
    record = fleet.code("newton-2").parent / f"{fleet.app}.deploying.json"
    fetched = fleet.code("newton-2") / ".git" / "FETCH_HEAD"
    before = fetched.stat().st_mtime_ns if fetched.exists() else None
    project.stage()
    record.unlink(missing_ok=True)
    record.mkdir()
    try:
        result = project.pampa("deploy", "test", "--hosts", "newton-2", "--verbose")
    finally:
        record.rmdir()
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "could not write the start record on the host" in out and "git_fetch" in out
    assert (fetched.stat().st_mtime_ns if fetched.exists() else None) == before  # git fetch never ran
    assert project.pampa("deploy", "test", "--hosts", "newton-2").returncode == 0
