"""Steps written in Python against the real sshd fleet: a task in kepler's sequence, one that raises,
one that times out, one that prints, and the same task through ``fab -H``."""
from __future__ import annotations

import importlib.util
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import conftest
import pytest
import yaml
from conftest import ended_or_say_where_it_waits, head, kill_leftovers, running

from pampa_deployer.sequences import DEFAULT_SEQUENCES

pytestmark = pytest.mark.fleet

TASKS = '''
from invoke import task
from pampa_deployer.shell import quote


@task
def mark_revision(c):
    """Write the deployed revision to ~/marker.txt, unless it already says so."""
    host = c.config.pampa.host
    rev = c.run("git rev-parse HEAD").stdout.strip()
    seen = c.run("cat ~/marker.txt 2>/dev/null", warn=True).stdout.strip()
    if seen == f"{host} {rev}":
        print(f"marker already at {rev[:12]}")
        return
    c.run(f"echo {quote(host)} {quote(rev)} > ~/marker.txt")
    print(f"marker written: {rev[:12]} (c.config.pampa.revision {c.config.pampa.revision[:12]})")


@task
def explode(c):
    """Refuse the release on kepler-1."""
    if c.config.pampa.host == "kepler-1":
        raise RuntimeError("release refused on " + c.config.pampa.host)


@task
def hang(c):
    """A command that outlives the step's timeout, with a child in the background."""
    c.run("sleep 4201 & sleep 4202; echo never")


@task
def chatty(c):
    """Prints, then works for a long time."""
    print("chatty-python-4301", flush=True)
    c.run("echo chatty-remote-4302; sleep 4303")
'''

#: Stopping a remote command's process tree and live shell-session output are issue 8's (commands/procgroup.py).
#: Until it is in, the two checks that need it are expected failures; once it is, they are plain assertions.
REMOTE_STOP = importlib.util.find_spec("pampa_deployer.commands.procgroup") is not None

KEPLER_WITH_MARK = ["git_fetch", "git_reset", "mark_revision", *DEFAULT_SEQUENCES["kepler"][2:]]


def write_tasks(project, name: str = "deploy/tasks.py", extra: str = "") -> None:
    path = project.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(TASKS) + extra)


# -- what is on the hosts ---------------------------------------------------------------------------------


def marker(fleet, name: str) -> str | None:
    path = fleet.home(name) / "marker.txt"
    return path.read_text().strip() if path.exists() else None


# -- the tests ----------------------------------------------------------------------------------------------
def test_python_step_in_kepler_sequence_reads_the_revision_and_writes_a_marker(project, fleet):
    write_tasks(project)
    project.stage(tasks="deploy/tasks.py", sequences={"kepler": KEPLER_WITH_MARK})
    for host in fleet.hosts:
        (fleet.home(host.name) / "marker.txt").unlink(missing_ok=True)
    new = fleet.commit("Release marked by a Python step")

    plan = project.pampa("plan", "test", "--hosts", "kepler-1")
    dry = project.pampa("deploy", "test", "--dry-run", "--hosts", "kepler-1")
    first = project.pampa("deploy", "test", "-v")
    again = project.pampa("deploy", "test", "-v", "--roles", "kepler")

    assert "task mark_revision (deploy/tasks.py): Write the deployed revision to ~/marker.txt, unless it " \
           "already says so." in plan.stdout
    assert "kepler-1 mark_revision $ would call task mark_revision (deploy/tasks.py)" in dry.stdout
    assert first.returncode == 0, first.stdout + first.stderr
    for host in ("kepler-1", "kepler-2"):
        assert head(fleet, host) == new
        assert marker(fleet, host) == f"{host} {new}"  # read on the host, after git_reset
        assert f"{host} mark_revision | marker written: {new[:12]} (c.config.pampa.revision {new[:12]})" \
            in first.stdout
    for host in ("euler-1", "newton-1", "newton-2", "copernico-1"):
        assert marker(fleet, host) is None  # only kepler's sequence has the step
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"kepler-1 mark_revision | marker already at {new[:12]}" in again.stdout  # it read the value and decided


def test_python_step_that_raises_fails_only_its_host_and_the_gate_stays_closed(project, fleet):
    write_tasks(project)
    project.stage(tasks="deploy/tasks.py", steps={"explode": {"roles": ["kepler"], "after": "migrate"}})
    gated_heads = {h: head(fleet, h) for h in ("euler-1", "copernico-1")}
    new = fleet.commit("Release refused by a Python step on kepler-1")

    result = project.pampa("deploy", "test")

    assert result.returncode == 1
    out = result.stdout
    reason = "task explode raised RuntimeError: release refused on kepler-1 (traceback in the host's log)"
    assert "RESULT kepler-1 [kepler] failed at explode" in out and reason in out
    assert "Traceback" not in out  # one line in the summary ...
    rundir = Path(out.split("run directory: ")[1].split()[0])
    log = (project.root / rundir / "hosts" / "kepler-1.log").read_text()
    assert "Traceback (most recent call last):" in log  # ... the traceback in the run directory
    assert 'raise RuntimeError("release refused on " + c.config.pampa.host)' in log
    assert "RESULT kepler-2 [kepler] ok" in out and head(fleet, "kepler-2") == new
    for host in ("newton-1", "newton-2"):
        assert f"RESULT {host} [newton] ok" in out and head(fleet, host) == new
    for host in ("euler-1", "copernico-1"):
        assert f"RESULT {host} " in out and "skipped" in out.split(f"RESULT {host} ")[1].splitlines()[0]
        assert head(fleet, host) == gated_heads[host]


def test_python_step_that_times_out_is_stopped_on_its_host(project, fleet):
    write_tasks(project)
    project.stage(tasks="deploy/tasks.py",
                  steps={"hang": {"roles": ["newton"], "after": "git_reset", "timeout": 2}})
    try:
        result = project.pampa("deploy", "test", "--hosts", "newton-1", timeout=120)
        left = running(fleet, "newton-1", "sleep 420")
    finally:
        kill_leftovers(fleet, "newton-1", "sleep 420")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "RESULT newton-1 [newton] failed at hang exit 124" in result.stdout
    assert "task hang timed out after 2s" in result.stdout
    if not REMOTE_STOP and left:
        pytest.xfail(f"needs issue 8's remote stop: still running on newton-1: {left}")
    assert left == []  # neither the command nor its background child is still running on the host


def test_python_step_output_is_streamed_live(project, fleet):
    write_tasks(project)
    project.stage(tasks="deploy/tasks.py", steps={"chatty": {"roles": ["newton"], "after": "git_reset"}})
    proc = project.popen("deploy", "test", "-v", "--hosts", "newton-1")
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    python_line, remote_line = "newton-1 chatty | chatty-python-4301", "newton-1 chatty | chatty-remote-4302"
    seen: list[str] = []
    when_sleeping: list[str] | None = None  # what -v had printed once the task's command was running
    remote_while_sleeping = False
    try:
        limit = time.monotonic() + 60  # "arrived" versus "never arrived while the command ran"
        while time.monotonic() < limit and not remote_while_sleeping:
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                pass
            if running(fleet, "newton-1", "sleep 4303"):
                when_sleeping = list(seen) if when_sleeping is None else when_sleeping
                remote_while_sleeping = any(remote_line in line for line in seen)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        ended_or_say_where_it_waits(proc, 120)  # ended, not hung (a loaded machine is slow to stop)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_leftovers(fleet, "newton-1", "sleep 4303")
    # print() from Python was out before the task ended (its command was still running) ...
    assert when_sleeping is not None and any(python_line in line for line in when_sleeping), "".join(seen)
    # ... and so was the remote command's first line, while that command still ran on the host.
    if not REMOTE_STOP and not remote_while_sleeping:
        pytest.xfail("needs issue 8's live shell-session output")
    assert remote_while_sleeping, "".join(seen)


def test_the_same_task_runs_through_fab(project, fleet):
    write_tasks(project)
    (project.root / "fabfile.py").write_text("from pampa_deployer.tasks import collection\n"
                                             "from deploy.tasks import explode, mark_revision\n\n"
                                             "ns = collection(mark_revision, explode)\n")
    project.stage(tasks="fabfile.py", sequences={"kepler": KEPLER_WITH_MARK})
    (fleet.home("newton-1") / "marker.txt").unlink(missing_ok=True)
    exe = shutil.which("fab") or str(Path(sys.executable).parent / "fab")
    host = f"root@{fleet.host('newton-1').address}:2222"

    listing = project.pampa("plan", "test", "--hosts", "kepler-1")
    result = subprocess.run([exe, "-r", str(project.root), "-i", str(fleet.key), "-H", host, "mark-revision",
                             "--stage", "test"], cwd=project.root, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)

    assert "task mark_revision (fabfile.py)" in listing.stdout  # pampa reads the fabfile's own tasks
    assert result.returncode == 0, result.stdout + result.stderr
    rev = head(fleet, "newton-1")
    assert marker(fleet, "newton-1") == f"newton-1 {rev}"
    assert f"[newton-1]   marker written: {rev[:12]}" in result.stdout
    # c.run built pampa's command (env, code path) and ran it over fab's connection
    assert f"[newton-1]   $ export DATABASE_URL=sqlite://db/app.sqlite3 && export PAMPA_HOST=newton-1 && " \
           f"cd ~/code/{fleet.app} && git rev-parse HEAD" in result.stdout


# -- docs/python-steps.md: its example, run as written ----------------------------------------------------
def doc_block(marker: str) -> str:
    return conftest.doc_block("python-steps.md", marker)


def shows(doc_marker: str, output: str) -> None:
    conftest.doc_shows("python-steps.md", doc_marker, output)


def test_docs_example_reads_a_value_from_the_host_and_decides(project, fleet):
    (project.root / "deploy").mkdir()
    (project.root / "deploy" / "tasks.py").write_text(doc_block("example: deploy/tasks.py"))
    project.stage("production", **yaml.safe_load(doc_block("example: stages/production.yml")))
    for host in ("kepler-1", "kepler-2"):
        (fleet.code(host) / ".bundled-at").unlink(missing_ok=True)

    plan = project.pampa("plan", "production", "--hosts", "kepler-1")
    dry = project.pampa("deploy", "production", "--dry-run", "--hosts", "kepler-1")
    first = project.pampa("deploy", "production", "--roles", "kepler", "-v")
    second = project.pampa("deploy", "production", "--roles", "kepler", "-v")

    assert first.returncode == 0 and second.returncode == 0, first.stdout + second.stdout + second.stderr
    shows("output: plan", plan.stdout)
    shows("output: dry-run", dry.stdout)
    shows("output: first deploy", first.stdout)
    shows("output: second deploy", second.stdout)
    assert "bundle install" not in second.stdout  # it read the commit on the host and skipped bundler
    changed = subprocess.run(["git", "-C", str(fleet.code("kepler-1")), "log", "-1", "--format=%H", "--",
                              "Gemfile", "Gemfile.lock"], capture_output=True, text=True, check=True).stdout
    assert (fleet.code("kepler-1") / ".bundled-at").read_text() == changed
