"""Whether a lock's holder is known dead: it ran on this machine and its process no longer does (no fleet).

Issue 22: after `kill -9` of a deploy, the next deploy from the same machine was refused until the lease ran
out, and `pampa unlock` was refused without --force, although the holder's pid was gone.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from pampa_deployer.commands.lock import HELD, LockState
from pampa_deployer.engine import holder
from pampa_deployer.engine.lock import DeployLock
from pampa_deployer.engine.results import CommandResult
from pampa_deployer.shell import quote


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.DEVNULL)


def info_of(proc: subprocess.Popen, **extra) -> dict:
    return {"user": "ana", "machine": socket.gethostname(), "pid": proc.pid, **holder.identity(proc.pid), **extra}


def test_a_holder_on_this_machine_is_gone_once_its_process_is():
    proc = sleeper()
    try:
        info = info_of(proc)
        assert holder.gone(info) is None  # alive: the lease decides
    finally:
        proc.kill()
        proc.wait()
    assert holder.gone(info) == f"its process {proc.pid} on this machine is no longer running"


def test_nothing_is_judged_that_cannot_be_seen_from_here():
    proc = sleeper()
    proc.kill()
    proc.wait()
    assert holder.gone(info_of(proc, machine="another-box")) is None  # another machine: the lease rule
    assert holder.gone(info_of(proc, maintenance=True)) is None  # `lock acquire` exits on purpose
    if holder.identity().get("boot_id"):
        assert holder.gone(info_of(proc, boot_id="another-boot")) is None  # rebooted, or a twin named alike
        assert holder.gone(info_of(proc, pid_namespace="pid:[1]")) is None  # a container with our host name
    assert holder.gone({"machine": socket.gethostname(), "pid": "x"}) is None
    assert holder.gone({"machine": socket.gethostname()}) is None


def test_a_reused_pid_is_not_the_holder():
    """The pid runs, but it is another process than the one that took the lock (its start time differs)."""
    info = {"user": "ana", "machine": socket.gethostname(), "pid": os.getppid(), **holder.identity(os.getppid())}
    assert holder.gone(info) is None
    if "pid_started" in info:
        info["pid_started"] += 1
        assert "the pid now belongs to another process" in holder.gone(info)


def test_acquire_takes_over_a_dead_holders_lock_at_once_and_says_why():
    proc = sleeper()
    proc.kill()
    proc.wait()
    dead = info_of(proc)
    raw = json.dumps(dead, sort_keys=True)

    class LockHost:
        name = "k1"

        def __init__(self):
            self.scripts = []

        def run(self, command, on_line=None):
            self.scripts.append(command.script)
            if quote(raw) in command.script:  # the takeover names the dead holder's info.json
                return CommandResult(0, f"PAMPA-LOCK-TOOK-STALE\n{raw}\n")
            return CommandResult(0, f"PAMPA-LOCK-HELD\n{raw}\n{10 ** 10} 100\n")  # lease alive for ages

    host = LockHost()
    lock = DeployLock(host, "~/.pampa/locks", "prod", {"user": "bo"}, 90)
    lock.acquire()  # no wait: without the dead-holder rule this raised LockHeld
    assert lock.held and lock.took_stale == dead
    assert lock.took_dead == f"its process {proc.pid} on this machine is no longer running"
    assert len(host.scripts) == 2 and "info.json" in host.scripts[1]


def test_lock_status_words_for_a_dead_holder():
    state = LockState(HELD, {"user": "ana", "machine": "box", "pid": 7, "started_at": "T", "branch": "main"}, 200, 100)
    assert state.describe() == "held by ana@box (pid 7) since T, deploying main, lease renews, expires in 100s"
    assert state.describe("its process 7 on this machine is no longer running") == \
        "held by ana@box (pid 7) since T, deploying main; its process 7 on this machine is no longer running"
