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
#: The demo app's own processes log to ~/log/NAME.log (and the worker writes a line every 30 s): these tests
#: read files of their own, so what they find is only what they wrote.
TEST_LOG = "~/log/{unit}.test.log"


def test_logs_shows_the_last_lines_prefixed_by_host(project, fleet):
    project.stage(logs={"files": [TEST_LOG]})
    for name in ("newton-1", "newton-2"):
        log = fleet.home(name) / "log" / "worker.test.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text("".join(f"{name} old {i}\n" for i in range(30)))
    r = project.pampa("logs", "test", "--roles", "newton", "-n", "3")
    assert r.returncode == 0, r.stderr
    for name in ("newton-1", "newton-2"):
        got = [line for line in r.stdout.splitlines() if line.startswith(name)]
        assert got == [f"{name} | {name} old {i}" for i in (27, 28, 29)]
    missing = project.pampa("logs", "test", "--hosts", "newton-1", "--unit", "no-such-unit")
    assert missing.returncode == 1
    assert "newton-1 | tail: cannot open '/root/log/no-such-unit.test.log'" in missing.stdout
    assert "logs: newton-1: exit 1" in missing.stderr


def test_logs_follow_prints_new_lines_until_ctrl_c_and_stops_tail_on_the_host(project, fleet):
    project.stage(logs={"files": [TEST_LOG]})
    log = fleet.home("newton-1") / "log" / "worker.test.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text("before follow\n")
    proc = project.popen("logs", "test", "--hosts", "newton-1", "-n", "1", "-f")
    assert proc.stdout.readline().strip() == "newton-1 | before follow"
    for i in range(3):
        with log.open("a") as f:
            f.write(f"grown {i}\n")
        assert proc.stdout.readline().strip() == f"newton-1 | grown {i}"
    assert host_processes(fleet, "newton-1", "worker.test.log")  # tail -F runs on the host
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert wait_until(lambda: not host_processes(fleet, "newton-1", "worker.test.log"), 20)
    # SIGTERM (a CI job cancelled) stops it too, with 143.
    proc = project.popen("logs", "test", "--hosts", "newton-1", "-n", "1", "-f")
    assert proc.stdout.readline().strip() == "newton-1 | grown 2"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert wait_until(lambda: not host_processes(fleet, "newton-1", "worker.test.log"), 20)


# -- lock acquire -------------------------------------------------------------------------------------
def test_lock_acquire_holds_the_stage_until_unlock(project, fleet):
    project.stage()
    hook(project, "on-failure", f'echo "$PAMPA_RESULT" > {project.root}/on-failure.txt')
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
        assert (project.root / "on-failure.txt").read_text().strip() == "refused"
        again = project.pampa("lock", "acquire", "test", "-m", "second")
        assert again.returncode == 3
        status = project.pampa("lock", "status", "test")
        assert "held for maintenance by" in status.stdout and "STALE" not in status.stdout
    finally:
        unlock = project.pampa("unlock", "test", "-m", "maintenance done")
    assert unlock.returncode == 0 and not lock.exists()
    assert project.pampa("lock", "acquire", "test").returncode == 2  # a reason is required


# -- docs/operations.md's example outputs, as written ------------------------------------------------
def test_operations_doc_examples_are_what_pampa_prints(project, fleet):
    """The lock, exec and run examples of docs/operations.md, run on a stage named production."""
    from conftest import doc_shows
    project.stage("production")

    def out(*args):
        r = project.pampa(*args)
        return r, r.stdout + r.stderr

    acquire, a = out("lock", "acquire", "production", "-m", "db maintenance until 18:00")
    try:
        deploy, d = out("deploy", "production")
    finally:
        unlock, u = out("unlock", "production", "-m", "maintenance done")
    assert (acquire.returncode, deploy.returncode, unlock.returncode) == (0, 3, 0), a + d + u
    doc_shows("operations.md", "output: lock acquire", a + d + u)

    exec_, e = out("exec", "production", "--roles", "newton,euler", "--",
                   "git log -1 --format=%h && test $PAMPA_HOST != newton-2")
    assert exec_.returncode == 1, e
    doc_shows("operations.md", "output: exec", e)

    run, r = out("run", "production", "restart_puma", "--roles", "euler")
    assert run.returncode == 0, r
    doc_shows("operations.md", "output: run", r)


# -- check --------------------------------------------------------------------------------------------
def test_check_passes_a_ready_fleet_and_a_fresh_host(project, fleet):
    project.stage()
    # kepler-2 is fresh: no code path yet (only its parent may be created); the app's bin/restart
    # is not on the host yet either, and neither is "missing".
    project.edit("test", lambda d: d["hosts"]["kepler-2"].update(path="/root/fresh-host/code/app"))
    r = project.pampa("check", "test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kepler-2: ready (branch main at" in r.stdout
    assert r.stdout.splitlines()[-1] == "check test: 6 of 6 hosts ready"
    assert not (fleet.home("kepler-2") / "fresh-host").exists()  # a check changes nothing


def test_check_finds_every_problem_one_line_each_with_host_and_fix(project, fleet):
    """The suite decides what `sudo` each host has, whatever this machine has installed (issue 22: with sudo
    on the machine, kepler-1 could never be `ready`): euler-1's asks for a password, newton-1's works without
    one, and the other hosts have none."""
    fake = {"euler-1": 'echo "sudo: a password is required" >&2; exit 1',
            "newton-1": 'shift; exec "$@"'}  # newton-1's sudo works without a password
    for name, body in fake.items():
        (fleet.home(name) / "fakebin").mkdir(exist_ok=True)
        (fleet.home(name) / "fakebin" / "sudo").write_text(f"#!/bin/sh\n{body}\n")
        (fleet.home(name) / "fakebin" / "sudo").chmod(0o755)
    project.stage(secrets=[{"local": "secrets/config.rb", "remote": "/etc/passwd/x/config.rb"}],
                  steps={"tool": {"run": "frobnicate --all", "roles": ["copernico"]}},
                  units={"restart": "sudo true {unit}"})
    paths = {h.name: fleet.path_without(h.name, "sudo") for h in fleet.hosts}

    def broken(d):
        d["hosts"]["newton-2"]["branch"] = "no-such-branch"
        d["hosts"]["copernico-1"]["path"] = "/etc/hostname/app"
        for name in d["hosts"]:
            d["hosts"][name]["env"]["PATH"] = ("/root/fakebin:" if name in fake else "") + paths[name]
    project.edit("test", broken)
    try:
        r = project.pampa("check", "test")
        j = project.pampa("check", "test", "--json")
    finally:
        for name in fake:
            (fleet.home(name) / "fakebin" / "sudo").unlink()
    assert r.returncode == 4 and j.returncode == 4
    lines = r.stdout.splitlines()
    expect = [
        "newton-2: branch 'no-such-branch' does not exist in",
        "copernico-1: code path /etc/hostname/app cannot be created: /etc/hostname is not a writable folder; fix",
        "euler-1: sudo needs a password (sudo: a password is required), so `sudo true puma` would stop the deploy;",
        "kepler-1: sudo is not installed",
        "kepler-1: secret files' folder /etc/passwd/x cannot be created: /etc/passwd is not a writable folder;",
        "copernico-1: command 'frobnicate' is not installed (a deploy step runs it); install it",
    ]
    for start in expect:
        assert any(line.startswith(start) for line in lines), (start, r.stdout)
    assert not any(line.startswith("newton-1: sudo") for line in lines)  # its sudo -n works
    assert not any("bin/restart" in line or "/code/" in line and "not installed" in line for line in lines)
    data = json.loads(j.stdout)
    assert data["ready"] is False
    by_host = {h["host"]: h for h in data["hosts"]}
    assert {p["check"] for p in by_host["newton-2"]["problems"]} >= {"git", "secrets"}
    assert {p["check"] for p in by_host["copernico-1"]["problems"]} >= {"path", "commands"}
    assert all(p["fix"] and p["line"].startswith(h + ": ") for h, v in by_host.items() for p in v["problems"])


def test_check_says_when_a_step_could_not_start(project, fleet):
    """A host whose `prefix` fails could start no step: check says so, and only that (it observed nothing
    else); the deploy then fails as foreseen. The others are ready."""
    project.stage()
    project.edit("test", lambda d: d["hosts"]["euler-1"].update(prefix=". /root/no-such-env.sh"))
    r = project.pampa("check", "test", "--hosts", "euler-1,newton-1")
    deploy = project.pampa("deploy", "test", "--hosts", "euler-1")
    assert r.returncode == 4, r.stdout + r.stderr
    euler = [line for line in r.stdout.splitlines() if line.startswith("euler-1: ")]
    assert len(euler) == 1 and euler[0].startswith("euler-1: the probe could not start (exit code "), r.stdout
    assert "no-such-env.sh" in euler[0] and "neither could a deploy step" in euler[0], r.stdout
    assert euler[0].endswith("fix the stage's `prefix`; if setsid failed (login shells other than bash use "
                             "`setsid -w`), install util-linux (BusyBox's setsid has no -w)"), r.stdout
    assert "newton-1: ready (branch main at" in r.stdout
    assert deploy.returncode == 1  # what check foresaw
    assert "RESULT euler-1 [euler] failed at " in deploy.stdout, deploy.stdout
    assert "no-such-env.sh" in deploy.stdout


def test_check_unreachable_repository_and_low_disk(project, fleet):
    project.stage(repo="/nonexistent/repo.git", check={"min_free_mb": 10 ** 9})
    r = project.pampa("check", "test", "--hosts", "kepler-1")
    assert r.returncode == 4
    assert "kepler-1: cannot reach the repository /nonexistent/repo.git from the host (fatal:" in r.stdout
    assert "MB free on /root/code/" in r.stdout and "below check.min_free_mb=1000000000" in r.stdout


def test_secret_in_a_new_folder_is_checked_creatable_then_created_by_the_deploy(project, fleet):
    project.stage(secrets=[{"local": "secrets/config.rb", "remote": "~/etc-new/app/config.rb"}])
    assert project.pampa("check", "test", "--hosts", "newton-1").returncode == 0
    r = project.pampa("deploy", "test", "--hosts", "newton-1")
    assert r.returncode == 0, r.stdout + r.stderr
    target = fleet.home("newton-1") / "etc-new" / "app" / "config.rb"
    assert target.read_text().strip().endswith(f"'{SECRET}'") and (target.stat().st_mode & 0o777) == 0o600


# -- run STEP and deploy --skip -----------------------------------------------------------------------
def test_run_one_step_fleet_wide_keeps_the_gate_and_reports(project, fleet, tmp_path):
    from conftest import restarted, served, trace
    project.stage(trace=True)
    before = {h: served(fleet, h, "puma") for h in ("kepler-1", "kepler-2", "euler-1")}
    report = tmp_path / "run.json"
    r = project.pampa("run", "test", "restart_puma", "--report", str(report))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(report.read_text())
    assert data["kind"] == "run"
    assert {h["name"]: [s["name"] for s in h["steps"]] for h in data["hosts"]} == \
        {"kepler-1": ["restart_puma"], "kepler-2": ["restart_puma"], "euler-1": ["restart_puma"]}
    for host in ("kepler-1", "kepler-2", "euler-1"):
        assert len(trace(fleet, host)) == 1 and restarted(fleet, host, "puma", before[host])
    for host in ("newton-1", "newton-2", "copernico-1"):
        assert trace(fleet, host) == []  # not part of the run: never touched
    # euler-1 is gated: it restarts only after every kepler finished.
    kepler_end = max(end for h in ("kepler-1", "kepler-2") for _, end in trace(fleet, h))
    assert trace(fleet, "euler-1")[0][0] >= kepler_end
    assert not (fleet.home("kepler-1") / ".pampa" / "locks" / "test.lock").exists()  # it took and released it


def test_run_names_an_unknown_step(project, fleet):
    project.stage()
    r = project.pampa("run", "test", "restart_pumma")
    assert r.returncode == 2 and "unknown step 'restart_pumma' (did you mean 'restart_puma'?)" in r.stderr


def test_deploy_skip_leaves_steps_out(project, fleet, tmp_path):
    from conftest import head
    project.stage()
    new = fleet.commit("Release for the skip test")
    report = tmp_path / "skip.json"
    r = project.pampa("deploy", "test", "--skip", "migrate", "--skip", "bundle,restart_workers", "--report",
                      str(report))
    assert r.returncode == 0, r.stdout + r.stderr
    steps = {h["name"]: [s["name"] for s in h["steps"]] for h in json.loads(report.read_text())["hosts"]}
    assert steps["newton-1"] == ["git_fetch", "git_reset", "secrets", "report_version"]
    assert steps["euler-1"] == ["restart_puma", "report_version"]
    assert all("migrate" not in s and "bundle" not in s for s in steps.values())
    assert head(fleet, "newton-1") == new
    assert "skipped steps: bundle, migrate, restart_workers" in r.stdout


# -- hooks and notifications --------------------------------------------------------------------------
def hook(project, name, body):
    folder = project.stages / "hooks"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("#!/bin/sh\n" + body + "\n")
    (folder / name).chmod(0o755)


def test_failing_pre_deploy_hook_stops_before_anything_changes(project, fleet):
    from conftest import trace
    project.stage(trace=True)
    hook(project, "pre-deploy", 'echo "refusing $PAMPA_STAGE $PAMPA_BRANCH"; exit 9')
    r = project.pampa("deploy", "test")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "hook pre-deploy | refusing test main" in r.stderr
    assert "hooks/pre-deploy exited 9; the deploy did not start and nothing was changed" in r.stderr
    assert all(trace(fleet, h.name) == [] for h in fleet.hosts)
    assert not (fleet.home("kepler-1") / ".pampa" / "locks" / "test.lock").exists()
    assert project.pampa("deploy", "test", "--dry-run").returncode == 0  # a dry run runs no hook
    hook(project, "pre-rollback", "exit 1")
    r = project.pampa("rollback", "test")
    assert r.returncode == 4 and "pre-rollback exited 1; the rollback did not start" in r.stderr
    assert all(trace(fleet, h.name) == [] for h in fleet.hosts)


def test_hooks_see_the_deploy_in_their_environment(project, fleet, tmp_path):
    from conftest import head
    project.stage()
    seen = tmp_path / "seen"
    hook(project, "pre-deploy", f'env | grep ^PAMPA_ | sort > {seen}.pre')
    hook(project, "post-deploy", f'env | grep ^PAMPA_ | sort > {seen}.post')
    new = fleet.commit("Release for the hooks test")
    r = project.pampa("deploy", "test", "--hosts", "newton-*")
    assert r.returncode == 0, r.stdout + r.stderr
    pre = dict(line.split("=", 1) for line in Path(f"{seen}.pre").read_text().splitlines())
    post = dict(line.split("=", 1) for line in Path(f"{seen}.post").read_text().splitlines())
    assert pre["PAMPA_HOOK"] == "pre-deploy" and pre["PAMPA_STAGE"] == "test" and pre["PAMPA_KIND"] == "deploy"
    assert pre["PAMPA_BRANCH"] == "main" and pre["PAMPA_HOSTS"] == "newton-1,newton-2" and pre["PAMPA_RESULT"] == ""
    assert post["PAMPA_RESULT"] == "ok" and post["PAMPA_REVISION"] == new == head(fleet, "newton-2")
    assert post["PAMPA_FAILED_HOSTS"] == "" and float(post["PAMPA_DURATION"]) > 0
    assert json.loads(Path(post["PAMPA_REPORT"]).read_text())["result"] == "ok"
    assert Path(post["PAMPA_RUN_DIR"]).is_dir() and post["PAMPA_USER"]


def test_on_failure_hook_and_webhooks_at_start_and_end(project, fleet, tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    received = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    closed = HTTPServer(("127.0.0.1", 0), Receiver)
    dead_url = f"http://127.0.0.1:{closed.server_port}/services/T0KEN-dead"
    closed.server_close()  # nothing listens there: that notification fails
    url = f"http://127.0.0.1:{server.server_port}/services/T0KEN-live"
    project.stage(notify={"webhooks": [url, dead_url], "timeout": 5},
                  steps={"break_newton": {"run": "test $PAMPA_HOST != newton-2", "roles": ["newton"]}})
    hook(project, "on-failure", f'echo "$PAMPA_RESULT $PAMPA_FAILED_HOSTS" > {tmp_path}/failure')
    try:
        r = project.pampa("deploy", "test", "--hosts", "newton-*")
    finally:
        server.shutdown()
    assert r.returncode == 1
    assert (tmp_path / "failure").read_text().strip() == "failed newton-2"
    assert [p for p, _ in received] == ["/services/T0KEN-live"] * 2
    start, end = received[0][1], received[1][1]
    assert start["event"] == "deploy.started" and start["hosts"] == ["newton-1", "newton-2"]
    assert start["text"].endswith("started deploy of main to test (2 hosts)")
    assert end["event"] == "deploy.finished" and end["result"] == "failed" and end["failed_hosts"] == ["newton-2"]
    assert "failed: newton-2" in end["text"] and end["duration"] > 0 and len(end["revision"]) == 40
    # The dead webhook is a warning (twice: start and end), its URL masked.
    warnings = [line for line in r.stderr.splitlines() if "notification" in line]
    assert len(warnings) == 2 and all("pampa: warning:" in w and "T0KEN" not in w for w in warnings)
    assert "T0KEN" not in r.stdout + r.stderr


def test_a_rollback_refused_for_a_missing_target_runs_on_failure_and_sends_the_end(project, fleet, tmp_path):
    """docs/operations.md: `on-failure` runs after a run that was refused, and every run's end is sent to the
    webhooks. Issue 22: a rollback refused for a missing target (exit 4) ran no hook and sent nothing."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    received = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    project.stage(notify={"webhooks": [f"http://127.0.0.1:{server.server_port}/hook"], "timeout": 5})
    hook(project, "on-failure", f'echo "$PAMPA_RESULT $PAMPA_KIND $PAMPA_REVISION" > {tmp_path}/failure')
    hook(project, "pre-rollback", f'touch {tmp_path}/pre')
    try:
        r = project.pampa("rollback", "test", "--to", "0" * 40)
    finally:
        server.shutdown()
    assert r.returncode == 4 and "is not present on" in r.stderr, r.stdout + r.stderr
    assert (tmp_path / "failure").read_text().split() == ["refused", "rollback", "0" * 40]
    assert [(p["event"], p["result"]) for p in received] == [("rollback.finished", "refused")]
    assert not (tmp_path / "pre").exists()  # the target is read before the pre-rollback hook: it never ran
