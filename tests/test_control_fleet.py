"""Remote execution under control, against the real fleet: frozen hosts, timeouts, interrupts, live output.

A host is *frozen* by SIGSTOP of every process in its mount namespace (its sshd and all it
started): it accepts TCP but answers nothing, like a hung machine. Every test thaws it in a
``finally``. Assertions look at the hosts themselves (their processes, their checkout) and at
pampa's outputs; the only times are generous bounds that tell "ended" from "hung".
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import frozen, head, in_background, kill_leftovers, running

pytestmark = pytest.mark.fleet


def lock_dir(fleet) -> Path:
    return fleet.home("kepler-1") / ".pampa" / "locks" / "test.lock"


def sleeper_stage(project, seconds: int, **step):
    """newton hosts run a custom step ``slow`` that prints a line, then sleeps ``seconds``."""
    project.stage(steps={"slow": {"run": f"echo slow-begins; sleep {seconds}; echo slow-ends", "roles": ["newton"],
                                  "after": "git_reset", **step}})


# -- liveness --------------------------------------------------------------------------------------------
def test_host_frozen_mid_step_fails_unresponsive_and_the_others_finish(project, fleet):
    sleeper_stage(project, 4101)
    new = fleet.commit("Release while newton-1 hangs")
    with in_background(project, fleet, "deploy", "test", "--hosts", "kepler-*,euler-1,copernico-1,newton-1",
                       until="newton-1 slow start", leftovers=("newton-1", "sleep 4101")) as run:
        with frozen(fleet, "newton-1"):
            run.mark()
            output = run.finish(timeout=120)
    err, ended_after = run.err, run.took
    assert run.returncode == 1, output + err
    assert "RESULT newton-1 [newton] failed at slow" in output and "unresponsive" in output
    assert "Traceback" not in err and "No existing session" not in output + err
    assert "RESULT newton-1 [newton] failed at slow" in output
    assert "unresponsive during slow (no answer to keepalives for 15s)" in output
    for host in ("kepler-1", "kepler-2", "euler-1", "copernico-1"):
        assert f"RESULT {host} [" in output and f"RESULT {host} [{host.split('-')[0]}] ok" in output
    assert head(fleet, "kepler-1") == head(fleet, "kepler-2") == new
    assert ended_after < 90  # default dead-peer time is 15 s: it ended, it did not hang
    assert not lock_dir(fleet).exists()


def test_long_silent_command_on_a_live_host_is_not_unresponsive(project, fleet):
    """Keepalives are answered by sshd, not by the command: 4 s of silence with a 1 s x 2 rule is fine."""
    project.stage(ssh={"server_alive_interval": 1, "server_alive_count_max": 2},
                  steps={"quiet": {"run": "sleep 4", "roles": ["newton"], "after": "git_reset"}})
    result = project.pampa("deploy", "test", "--hosts", "newton-1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unresponsive" not in result.stdout


def test_host_frozen_before_the_deploy_is_reported_without_traceback(project, fleet):
    project.stage(ssh={"connect_timeout": 3})
    with frozen(fleet, "newton-2"):
        t0 = time.monotonic()
        result = project.pampa("deploy", "test", "--hosts", "newton-*", timeout=120)
        took = time.monotonic() - t0
    assert result.returncode == 1, result.stdout + result.stderr
    assert "RESULT newton-2 [newton] failed at connect" in result.stdout
    # Depending on when the freeze catches sshd: no banner at all, or a banner and then silence.
    assert ("no SSH banner within 3s" in result.stdout
            or "unresponsive: no answer to the SSH handshake within 3s" in result.stdout), result.stdout
    assert "Traceback" not in result.stderr and "No existing session" not in result.stdout + result.stderr
    assert "RESULT newton-1 [newton] ok" in result.stdout
    assert took < 60  # one 3 s attempt, not retried


def test_port_that_is_not_ssh_says_so(project, fleet):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        project.stage(ssh={"connect_timeout": 2})
        project.edit("test", lambda d: d["hosts"]["newton-2"].update(address="127.0.0.1", port=port))
        result = project.pampa("deploy", "test", "--hosts", "newton-2")
    finally:
        silent.close()
    assert result.returncode == 1
    # paramiko ends a silent peer either at its banner timeout or in the handshake after it: both say so.
    assert "within 2s (is this port an SSH server?" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr


def test_missing_key_file_is_named(project, fleet, tmp_path):
    project.stage()
    project.edit("test", lambda d: d["hosts"]["newton-1"].update(key=str(tmp_path / "no-such-key")))
    result = project.pampa("deploy", "test", "--hosts", "newton-1")
    assert result.returncode == 1
    assert f"key file {tmp_path / 'no-such-key'} not found" in result.stdout, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


# -- stopping --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shell_session", [True, False])
def test_timed_out_step_leaves_no_process_on_the_host(project, fleet, shell_session):
    project.stage(ssh={"shell_session": shell_session},
                  steps={"slow": {"run": "sleep 4102 & sleep 4103; echo never", "roles": ["newton"],
                                  "after": "git_reset", "timeout": 2}})
    try:
        result = project.pampa("deploy", "test", "--hosts", "newton-1")
        left = running(fleet, "newton-1", "sleep 410")
    finally:
        kill_leftovers(fleet, "newton-1", "sleep 410")
    assert result.returncode == 1
    assert "RESULT newton-1 [newton] failed at slow exit 124" in result.stdout
    assert "timed out after 2s" in result.stdout and "stopped" in result.stdout
    assert left == []  # neither the command nor what it started in the background is still running


def test_second_sigint_stops_the_command_on_the_host(project, fleet):
    sleeper_stage(project, 4104)
    with in_background(project, fleet, "deploy", "test", "--hosts", "newton-1", until="newton-1 slow start",
                       leftovers=("newton-1", "sleep 4104")) as run:
        run.interrupt(times=2)
        run.finish()
        left = running(fleet, "newton-1", "sleep 4104")
    assert run.returncode == 130, run.output
    assert left == []
    assert not lock_dir(fleet).exists()


def test_ctrl_c_while_a_host_is_frozen_exits_130_with_the_lock_free(project, fleet):
    sleeper_stage(project, 4105)
    with in_background(project, fleet, "deploy", "test", "--hosts", "kepler-1,newton-1", "--grace", "1",
                       until="newton-1 slow start", leftovers=("newton-1", "sleep 4105")) as run:
        with frozen(fleet, "newton-1"):
            run.interrupt()
            output = run.finish()
    assert run.returncode == 130, output + run.err
    assert "SIGINT: starting no new steps" in output
    assert not lock_dir(fleet).exists()
    assert run.took < 45  # seconds, not "when the host comes back"


def test_second_ctrl_c_while_a_host_is_frozen_abandons_at_once(project, fleet):
    sleeper_stage(project, 4106)
    with in_background(project, fleet, "deploy", "test", "--hosts", "kepler-1,newton-1",
                       until="newton-1 slow start", leftovers=("newton-1", "sleep 4106")) as run:
        with frozen(fleet, "newton-1"):
            time.sleep(3)  # the host has been silent a while when the operator gives up
            run.interrupt(times=2)
            run.finish()
    assert run.returncode == 130, run.output + run.err
    assert not lock_dir(fleet).exists()
    assert run.took < 30
    # What the frozen host was left in is said, on its own result line.
    assert re.search(r"RESULT newton-1 \[newton\] interrupted at slow .*the host did not answer the stop: "
                     r"its command may still be running there, and `pampa status` shows the host incomplete",
                     run.output), run.output


def test_second_ctrl_c_with_the_lock_host_frozen_too_ends_and_says_the_lock_was_not_released(project, fleet):
    """Both hosts frozen mid-step, the lock host among them: nothing more is asked of a host that did not
    answer the stop, so the lock release does not wait out the 40 s connect timeout; the output says the
    lock was left, how it ends, and what each host was left in."""
    sleeper_stage(project, 4108, roles=["kepler", "newton"])
    project.edit("test", lambda d: d.setdefault("ssh", {}).update(connect_timeout=40, server_alive_interval=20))
    try:
        with in_background(project, fleet, "deploy", "test", "--hosts", "kepler-1,newton-1",
                           until="kepler-1 slow start", leftovers=("newton-1", "sleep 4108")) as run:
            if "newton-1 slow start" not in run.output:
                run.read_until("newton-1 slow start")
            with frozen(fleet, "kepler-1"), frozen(fleet, "newton-1"):
                run.interrupt(times=2)
                run.finish(timeout=120)
        held = lock_dir(fleet).exists()
    finally:
        kill_leftovers(fleet, "kepler-1", "sleep 4108")
        shutil.rmtree(lock_dir(fleet), ignore_errors=True)
    assert run.returncode == 130, run.output + run.err
    assert held  # it could not be released, and that is what pampa says:
    assert ("could not release the lock on kepler-1: the host did not answer when the run was aborted; it is "
            "no longer renewed, so it goes stale 90s after its last renewal and the next deploy takes it over, "
            "or run `pampa unlock test`") in run.output, run.output
    for host in ("kepler-1 [kepler]", "newton-1 [newton]"):
        assert re.search(rf"RESULT {re.escape(host)} interrupted at slow .*the host did not answer the stop: its "
                         r"command may still be running there", run.output), run.output
    assert run.took < 30  # it ended: not the 40 s connect timeout of a channel to a frozen host


# -- live output ---------------------------------------------------------------------------------------------
def test_line_before_a_long_sleep_reaches_verbose_output_while_it_sleeps(project, fleet):
    project.stage(steps={"slow": {"run": "echo early-line-4107; sleep 4107", "roles": ["newton"],
                                  "after": "git_reset"}})
    with in_background(project, fleet, "deploy", "test", "-v", "--hosts", "newton-1",
                       until="newton-1 slow | early-line-4107", leftovers=("newton-1", "sleep 4107")) as run:
        still_sleeping = running(fleet, "newton-1", "sleep 4107")
        run.interrupt(times=2)  # 0.3 s apart: two signals sent at once may reach pampa as one
        run.finish()
    assert still_sleeping, "the line arrived only after the command ended"
    assert any(" newton-1 slow | early-line-4107" in line for line in run.seen)


# -- the stage's repo is the truth ------------------------------------------------------------------------
def test_changed_repo_deploys_the_new_repositorys_revision(project, fleet, tmp_path):
    moved = tmp_path / "moved.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(fleet.origin), str(moved)], check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(moved), str(work)], check=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "Only in the new home"], cwd=work, env=env,
                   check=True)
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, check=True)
    new = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()
    project.stage(repo=str(moved))
    try:
        result = project.pampa("deploy", "test", "--hosts", "newton-1")
        again = project.pampa("deploy", "test", "--hosts", "newton-1")
        url = subprocess.run(["git", "-C", str(fleet.code("newton-1")), "remote", "get-url", "origin"],
                             capture_output=True, text=True).stdout.strip()
    finally:
        subprocess.run(["git", "-C", str(fleet.code("newton-1")), "remote", "set-url", "origin", str(fleet.origin)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert head(fleet, "newton-1") == new and url == str(moved)
    assert f"NOTE newton-1: origin changed from {fleet.origin} to {moved}" in result.stdout
    assert "origin changed" not in again.stdout  # said once, when it changed
    report = json.loads(next((project.root / ".pampa" / "runs").glob("*/report.json")).read_text())
    assert isinstance(report["hosts"][0]["notes"], list)
