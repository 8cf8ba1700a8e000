"""The operator's toolkit against the real fleet: exec, logs, lock acquire, check, hooks, notifications."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import SECRET

pytestmark = pytest.mark.fleet


def host_processes(fleet, name: str, needle: str) -> list[str]:
    """Command lines of the processes running on host ``name`` (its mount namespace) that contain ``needle``."""
    pidfile = fleet.root / "hosts" / name / "sshd" / "unshare.pid"
    namespace = os.readlink(f"/proc/{int(pidfile.read_text())}/ns/mnt")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/mnt") != namespace:
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            found.append(cmdline.strip())
    return found


def wait_until(predicate, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


# -- exec ---------------------------------------------------------------------------------------------
def test_exec_groups_output_per_host_with_exit_codes_and_fails_if_one_host_fails(project, fleet):
    project.stage()
    # Each host prints three lines with pauses, so unsynchronised output would interleave.
    script = ('for i in 1 2 3; do echo "$PAMPA_HOST line $i in $(pwd)"; sleep 0.2; done; '
              '[ "$PAMPA_HOST" != newton-2 ] || exit 3')
    r = project.pampa("exec", "test", "--", script)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    for host in fleet.hosts:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"=== {host.name} "))
        assert lines[at + 1:at + 4] == [f"{host.name} line {i} in /root/code/{fleet.app}" for i in (1, 2, 3)]
    assert "=== newton-2 [newton] FAILED (exit 3," in r.stdout
    assert "=== kepler-1 [kepler] ok (exit 0," in r.stdout
    assert lines[-1] == "exec on 6 hosts: 5 ok, 1 failed (newton-2 exit 3)"
    assert "exec failed on 1 of 6 hosts: newton-2" in r.stderr


def test_exec_json_roles_and_same_env_as_a_deploy(project, fleet):
    project.stage(prefix="export FROM_PREFIX=yes-prefix")
    r = project.pampa("exec", "test", "--roles", "newton", "--json", "--",
                      "echo", "$FROM_PREFIX", "$DATABASE_URL", "$PAMPA_HOST", "&&", "git", "rev-parse", "HEAD")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is True and [h["host"] for h in data["hosts"]] == ["newton-1", "newton-2"]
    for h in data["hosts"]:
        first, rev = h["stdout"].splitlines()
        assert first == f"yes-prefix sqlite://db/app.sqlite3 {h['host']}"
        assert h["exit_code"] == 0 and len(rev) == 40


def test_exec_masks_secrets_and_reports_unreachable_hosts(project, fleet):
    project.stage()
    project.edit("test", lambda d: d["hosts"]["euler-1"].update(port=1))  # nothing listens there
    r = project.pampa("exec", "test", "--json", "--", "cat", "config.rb", "||", "true")
    data = json.loads(r.stdout)
    assert r.returncode == 1
    assert SECRET not in r.stdout
    euler = next(h for h in data["hosts"] if h["host"] == "euler-1")
    assert euler["ok"] is False and euler["exit_code"] is None and "connection refused" in euler["error"]


def test_exec_ctrl_c_stops_the_command_on_every_host(project, fleet):
    project.stage()
    proc = project.popen("exec", "test", "--roles", "newton", "--", "sleep 417; echo never")
    assert wait_until(lambda: len(host_processes(fleet, "newton-1", "sleep 417")) > 0 and
                      len(host_processes(fleet, "newton-2", "sleep 417")) > 0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert wait_until(lambda: not host_processes(fleet, "newton-1", "sleep 417")
                      and not host_processes(fleet, "newton-2", "sleep 417"), 20)
    assert "never" not in out


def test_exec_timeout_stops_the_command_on_the_host(project, fleet):
    project.stage()
    r = project.pampa("exec", "test", "--hosts", "euler-1", "--timeout", "1", "--", "sleep 418")
    assert r.returncode == 1
    assert "FAILED (exit 124," in r.stdout and "timed out after 1s" in r.stdout
    assert wait_until(lambda: not host_processes(fleet, "euler-1", "sleep 418"), 20)


def test_exec_without_a_command_is_a_usage_error(project, fleet):
    project.stage()
    r = project.pampa("exec", "test")
    assert r.returncode == 2 and "give the command after `--`" in r.stderr and "Traceback" not in r.stderr


# -- logs ---------------------------------------------------------------------------------------------
def test_logs_shows_the_last_lines_prefixed_by_host(project, fleet):
    project.stage(logs={"files": ["~/log/{unit}.log"]})
    for name in ("newton-1", "newton-2"):
        log = fleet.home(name) / "log" / "worker.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text("".join(f"{name} old {i}\n" for i in range(30)))
    r = project.pampa("logs", "test", "--roles", "newton", "-n", "3")
    assert r.returncode == 0, r.stderr
    for name in ("newton-1", "newton-2"):
        got = [line for line in r.stdout.splitlines() if line.startswith(name)]
        assert got == [f"{name} | {name} old {i}" for i in (27, 28, 29)]


def test_logs_follow_prints_new_lines_until_ctrl_c_and_stops_tail_on_the_host(project, fleet):
    project.stage(logs={"files": ["~/log/{unit}.log"]})
    log = fleet.home("newton-1") / "log" / "worker.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text("before follow\n")
    proc = project.popen("logs", "test", "--hosts", "newton-1", "-n", "1", "-f")
    assert proc.stdout.readline().strip() == "newton-1 | before follow"
    for i in range(3):
        with log.open("a") as f:
            f.write(f"grown {i}\n")
        assert proc.stdout.readline().strip() == f"newton-1 | grown {i}"
    assert host_processes(fleet, "newton-1", "worker.log")  # tail -F runs on the host
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert wait_until(lambda: not host_processes(fleet, "newton-1", "worker.log"), 20)


# -- lock acquire -------------------------------------------------------------------------------------
def test_lock_acquire_holds_the_stage_until_unlock(project, fleet):
    project.stage()
    lock = fleet.home("kepler-1") / ".pampa" / "locks" / "test.lock"
    r = project.pampa("lock", "acquire", "test", "-m", "db maintenance until 18:00")
    assert r.returncode == 0, r.stderr
    assert "locked for maintenance on kepler-1" in r.stdout and lock.is_dir()
    try:
        before = {h.name: (fleet.code(h.name) / ".git" / "HEAD").read_text() for h in fleet.hosts}
        deploy = project.pampa("deploy", "test")
        assert deploy.returncode == 3
        assert "held for maintenance by" in deploy.stderr and "'db maintenance until 18:00'" in deploy.stderr
        assert "`pampa unlock test` ends the maintenance" in deploy.stderr
        assert json.loads((lock / "info.json").read_text())["maintenance"] is True
        assert before == {h.name: (fleet.code(h.name) / ".git" / "HEAD").read_text() for h in fleet.hosts}
        again = project.pampa("lock", "acquire", "test", "-m", "second")
        assert again.returncode == 3
        status = project.pampa("lock", "status", "test")
        assert "held for maintenance by" in status.stdout and "STALE" not in status.stdout
    finally:
        unlock = project.pampa("unlock", "test", "-m", "maintenance done")
    assert unlock.returncode == 0 and not lock.exists()
    assert project.pampa("lock", "acquire", "test").returncode == 2  # a reason is required
