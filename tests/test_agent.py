"""The pull-mode agent without root: its unit file, lock, journal and back-off, and whole requests run
by agents on this machine (LocalBackend, a temp home per node) against a real access point on loopback."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pampa_deployer.accesspoint.client import AccessPointClient
from pampa_deployer.agent.backoff import Backoff
from pampa_deployer.agent.journal import Journal
from pampa_deployer.agent.loop import Agent
from pampa_deployer.agent.nodelock import NodeLock
from pampa_deployer.agent.runstop import AgentStop
from pampa_deployer.agent.unit import AgentUnit, systemd_quote
from pampa_deployer.cli.request import nodes_of
from pampa_deployer.engine.results import StepResult
from pampa_deployer.errors import LockHeld
from pampa_deployer.inventory import load_stage
from pampa_deployer.plan import build_plan
from pampa_deployer.server.app import make_server

KEY = "admin-k3y-agent"
SECRET = "s3cr3t-Agent-4711"


def test_unit_file_is_exact():
    unit = AgentUnit(stage="production", node="kepler-1", user="deploy", home="/home/deploy",
                     workdir="/srv/my app", env_file="/etc/pampa/agent-production.env", grace=30,
                     argv=("/opt/pampa/bin/python", "-m", "pampa_deployer", "--stages", "/srv/my app/stages",
                           "agent", "production", "--node", "kepler-1"))
    assert unit.name == "pampa-agent-production.service"
    assert unit.render() == """\
# Written by `pampa agent install` (docs/pull-mode.md). Secrets stay on this node:
# /etc/pampa/agent-production.env (mode 0600) holds variables the stage's secret templates use.
[Unit]
Description=Pampa deploy agent: node kepler-1 of stage production
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User=deploy
WorkingDirectory="/srv/my app"
Environment=HOME=/home/deploy
EnvironmentFile=-/etc/pampa/agent-production.env
ExecStart=/opt/pampa/bin/python -m pampa_deployer --stages "/srv/my app/stages" agent production --node kepler-1
Restart=always
RestartSec=5
# SIGTERM to the agent only: it stops starting steps, gives running commands the grace
# period, reports the run as interrupted, then exits 143.
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=60
SuccessExitStatus=143

[Install]
WantedBy=multi-user.target
"""


def test_systemd_quote():
    assert systemd_quote("/usr/bin/python3") == "/usr/bin/python3"
    assert systemd_quote("a b") == '"a b"'
    assert systemd_quote('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert systemd_quote("50%") == "50%%"


def test_one_agent_per_node(tmp_path):
    with NodeLock(tmp_path / "n.lock", "kepler-1"):
        with pytest.raises(LockHeld, match="another pampa agent already runs for node kepler-1"):
            NodeLock(tmp_path / "n.lock", "kepler-1").acquire()
    with NodeLock(tmp_path / "n.lock", "kepler-1"):  # released: free again
        pass


def test_journal_is_private_and_atomic(tmp_path):
    j = Journal(tmp_path / "state" / "j.json")
    assert j.read() is None
    j.write(deploy_id=3, state="running", step=None)
    j.update(step="migrate")
    assert j.read() == {"deploy_id": 3, "state": "running", "step": "migrate"}
    assert (tmp_path / "state" / "j.json").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["j.json"]
    j.clear()
    assert j.read() is None


def test_a_cut_short_run_says_where_current_is():
    from pampa_deployer.agent.cutshort import detail
    assert detail("migrate") == "the agent stopped during migrate; not run again"
    assert detail(None) == "the agent stopped before its first step; not run again"
    assert detail("bundle", ("releases/1-a", "releases/1-a")) == \
        "the agent stopped during bundle; not run again; current still releases/1-a (not switched)"
    assert detail("restart_puma", ("releases/1-a", "releases/2-b")) == (
        "the agent stopped during restart_puma; not run again; current was switched to releases/2-b "
        "(from releases/1-a); the steps after restart_puma did not run")
    assert detail("bundle", (None, None)) == \
        "the agent stopped during bundle; not run again; current still absent (not switched)"


def test_backoff_grows_to_a_cap_and_resets():
    b = Backoff(first=1, cap=30)
    delays = [b.next_delay() for _ in range(8)]
    assert 0.8 <= delays[0] <= 1.2 and all(d <= 36 for d in delays) and delays[-1] >= 24
    assert all(delays[i] < delays[i + 1] for i in range(4))
    b.reset()
    assert b.next_delay() <= 1.2


# -- whole requests, agents in threads on this machine ---------------------------------------------------
STAGE = """
app: demo
repo: {origin}
access_point: {{url: "{url}", api_key: "${{PAMPA_AP_KEY}}"{extra}}}
secrets: [{{local: secrets/config.rb, remote: config.rb}}]
units: {{restart: "echo restart {{unit}} >> ~/restarts.log", puma: [puma], processes: [dispatcher], workers: [worker]}}
steps:
  migrate: {{run: "if [ -e ~/fail-migrate ]; then printf 'migration \\\\033]0;pwned\\\\007broke\\\\r\\\\n' >&2; exit 3; fi; while [ -e ~/hold-migrate ]; do sleep 0.1; done; date +%s.%N > ~/migrated"}}
  bundle: {{run: "date +%s.%N >> ~/bundled; if [ -e ~/slow-bundle ]; then sleep 120 & echo $! > ~/sleep.pid; wait; fi"}}
hosts:
  k1: {{roles: [kepler]}}
  e1: {{roles: [euler]}}
  n1: {{roles: [newton]}}
"""


@pytest.fixture
def world(tmp_path):
    """An access point, an origin repo, a stage (kepler, euler, newton) and a home per node."""
    db = str(tmp_path / "ap.sqlite3")
    srv = make_server("127.0.0.1", 0, db, KEY, stall_after=60)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    port = srv.server_address[1]
    url = f"http://127.0.0.1:{port}"
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True, capture_output=True)
    (work / "README").write_text("v1\n")
    git = ["git", "-C", str(work), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "v1"], check=True)
    subprocess.run(git + ["push", "-q", "origin", "HEAD:main"], check=True, capture_output=True)
    stages = tmp_path / "stages"
    (stages / "secrets").mkdir(parents=True)
    (stages / "secrets" / "config.rb").write_text(f"PASSWORD = '{SECRET}'\n")
    (stages / "secrets" / "config.rb").chmod(0o600)
    (stages / "local.yml").write_text(STAGE.format(origin=origin, url=url, extra=""))
    admin = AccessPointClient(url, KEY)
    homes = {n: tmp_path / "homes" / n for n in ("k1", "e1", "n1")}
    for name, home in homes.items():
        (home / "code").mkdir(parents=True)
        if name == "e1":  # euler does not fetch: it runs what is checked out
            subprocess.run(["git", "clone", "-q", str(origin), str(home / "code" / "demo")], check=True,
                           capture_output=True)

    class World:
        pass

    w = World()
    w.url, w.admin, w.homes, w.stages, w.tmp, w.server = url, admin, homes, stages, tmp_path, srv
    w.agents = []

    def stage(name: str, url: str = url, **access_point):
        """Another stage like ``local``: its access point at ``url``, more ``access_point`` settings."""
        extra = "".join(f", {k}: {v}" for k, v in access_point.items())
        (stages / f"{name}.yml").write_text(STAGE.format(origin=origin, url=url, extra=extra))

    def stop_server():
        w.server.shutdown()
        w.server.server_close()

    def start_server():
        w.server = make_server("127.0.0.1", port, db, KEY, stall_after=60)  # same port, same database
        threading.Thread(target=w.server.serve_forever, daemon=True).start()

    def start_agent(name: str):
        token = admin.issue_token("local", name, [])["token"]
        client = AccessPointClient(url, token)
        env = {"PAMPA_AP_KEY": token}
        stop = AgentStop()
        out = io.StringIO()
        agent = Agent(name, "local", lambda branch: load_stage("local", stages, environ=env), client, stop,
                      tmp_path / "state" / name, out=out, poll_wait=5, home=str(homes[name]))
        t = threading.Thread(target=agent.run, daemon=True)
        t.start()
        w.agents.append((stop, t))
        return agent, stop, t, out

    def request(stage: str = "local", requested_by: str = "tester", message: str = "test", nodes=None):
        loaded = load_stage(stage, stages, environ={"PAMPA_AP_KEY": KEY})
        plan_nodes = nodes_of(build_plan(loaded))
        if nodes is not None:
            plan_nodes = [n for n in plan_nodes if n["node"] in nodes]
        return admin.create_request(stage, "main", plan_nodes, requested_by, message)

    def wait_for(deploy_id, pred, what, bound=60.0):
        deadline = time.monotonic() + bound
        while True:
            d = admin.deploy(deploy_id)
            if pred(d):
                return d
            if time.monotonic() > deadline:
                raise AssertionError(f"never happened: {what}; deploy is {d}")
            time.sleep(0.1)

    def agent_process(name: str, log: Path, *extra: str, stage: str = "local") -> subprocess.Popen:
        """A real `pampa agent` process for node ``name``, as its unit starts it: token file 0600, HOME its home."""
        home = homes[name]
        token = home / f"{stage}-{name}.token"
        if not token.exists():
            token.write_text(admin.issue_token(stage, name, [])["token"])
            token.chmod(0o600)
        env = {**os.environ, "HOME": str(home)}
        env.pop("PAMPA_AP_KEY", None)  # the agent reads its token, nothing else
        argv = [sys.executable, "-m", "pampa_deployer", "--stages", str(stages), "agent", stage, "--node", name,
                "--token-file", str(token), *extra]
        with open(log, "a") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        w.processes.append(proc)
        return proc

    w.start_agent, w.request, w.wait_for, w.agent_process = start_agent, request, wait_for, agent_process
    w.stage, w.stop_server, w.start_server, w.processes = stage, stop_server, start_server, []
    yield w
    for stop, t in w.agents:
        stop.request(15)
        stop.abort()
    for stop, t in w.agents:
        t.join(30)
    for proc in w.processes:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    try:
        w.server.shutdown()
        w.server.server_close()
    except Exception:  # noqa: BLE001 - a test may have stopped it
        pass


def _states(d):
    return {n["node"]: n["state"] for n in d["nodes"]}


def test_agents_deploy_a_request_behind_the_gate(world):
    for n in ("k1", "e1", "n1"):
        world.start_agent(n)
    d = world.request()
    done = world.wait_for(d["id"], lambda d: d["state"] in ("DONE", "FAILED"), "the request ends")
    assert done["state"] == "DONE", done
    homes = world.homes
    # the gate, from the nodes' own clocks: euler bundled only after kepler migrated and reported
    kepler_migrated = float((homes["k1"] / "migrated").read_text())
    euler_bundled = float((homes["e1"] / "bundled").read_text().split()[0])
    assert euler_bundled > kepler_migrated
    assert (homes["k1"] / "code" / "demo" / "config.rb").stat().st_mode & 0o777 == 0o600
    revision = subprocess.run(["git", "-C", str(homes["k1"] / "code" / "demo"), "rev-parse", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
    versions = {n["node"]: n["revision"] for n in world.admin.nodes("local")}
    assert versions == {"k1": revision, "e1": revision, "n1": revision}
    events = world.admin.events(d["id"])["events"]
    assert not any(SECRET in str(e) for e in events)
    # each node's revision-log line names its request (run id request-ID-CREATED) and carries its message,
    # so `pampa history` joins a node's own line to the access point's request
    for n in ("k1", "e1", "n1"):
        line = json.loads((homes[n] / "code" / "demo.revisions.jsonl").read_text().splitlines()[-1])
        assert (line["run"], line["message"], line["result"]) == (
            f"request-{d['id']}-{int(d['created_at'])}", "test", "ok"), n


def test_kepler_failure_leaves_gated_nodes_untouched(world):
    (world.homes["k1"] / "fail-migrate").write_text("")
    for n in ("k1", "e1", "n1"):
        world.start_agent(n)
    d = world.request()
    ended = world.wait_for(d["id"], lambda d: all(n["state"] not in ("waiting", "running") for n in d["nodes"]),
                           "every node ends")
    assert ended["state"] == "FAILED" and _states(ended) == {"k1": "failed", "e1": "skipped", "n1": "ok"}
    assert not (world.homes["e1"] / "bundled").exists()  # euler never ran a command
    k1 = [n for n in ended["nodes"] if n["node"] == "k1"][0]
    assert k1["step"] == "migrate" and "exit code 3" in k1["detail"]


def _sleeper(home) -> int:
    """The slow bundle's sleep pid: the step is reported before its shell has written the file."""
    import time
    path = home / "sleep.pid"
    for _ in range(300):  # an upper bound that tells "written" from "never"
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return int(text)
        time.sleep(0.1)
    raise AssertionError("the slow bundle never wrote ~/sleep.pid")


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False


def test_an_agent_killed_mid_sequence_reports_honestly_and_never_reruns(world):
    """A real `pampa agent` process, SIGKILLed during bundle, then started again."""
    home = world.homes["n1"]
    (home / "slow-bundle").write_text("")
    log = world.tmp / "n1-agent.log"
    first = world.agent_process("n1", log)
    try:
        d = world.request()
        world.wait_for(d["id"], lambda d: any(n["node"] == "n1" and n["step"] == "bundle" for n in d["nodes"]),
                       "n1 reaches bundle")
        journal = Journal(home / ".pampa" / "agent" / "local-n1.json")
        assert journal.read()["state"] == "running" and journal.read()["step"] == "bundle"
        first.kill()
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    # the bundle command it started is still sleeping, in its own process group, after its agent died...
    sleeper = _sleeper(home)
    assert _alive(sleeper)
    (home / "slow-bundle").unlink()
    assert _states(world.admin.deploy(d["id"]))["n1"] == "running"  # the server cannot know yet
    bundles = (home / "bundled").read_text().count("\n")
    second = world.agent_process("n1", log)
    try:
        run = world.wait_for(d["id"], lambda d: _states(d)["n1"] != "running", "the restarted agent reports")
        n1 = [n for n in run["nodes"] if n["node"] == "n1"][0]
        assert n1["state"] == "interrupted"
        assert n1["detail"] == ("the agent stopped during bundle; not run again; its command was still running "
                                "and was stopped")
        assert not _alive(sleeper)  # ...and the restarted agent stopped it (the pgid file named its group)
        assert "a command the previous agent started was still running (process group" in log.read_text()
        deadline = time.monotonic() + 30
        while journal.read() is not None:  # cleared once the access point acknowledged the outcome
            assert time.monotonic() < deadline, journal.read()
            time.sleep(0.05)
        again = world.request()  # the agent is alive and takes new requests...
        world.wait_for(again["id"], lambda d: _states(d)["n1"] == "ok", "n1 deploys the next request")
        # ...and ran bundle once for it: request 1 was never run a second time
        assert (home / "bundled").read_text().count("\n") == bundles + 1
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 143


# -- the commands the pull-mode page shows ------------------------------------------------------------------
def _main(world, *args, env=None) -> tuple[int, str, str]:
    import contextlib

    from pampa_deployer.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--stages", str(world.stages), *args])
    finally:
        os.environ.clear()
        os.environ.update(old)
    return code, out.getvalue(), err.getvalue()


def test_token_command_prints_or_writes_private_files(world):
    code, out, _ = _main(world, "access-point", "token", "local", "k1", env={"PAMPA_AP_KEY": KEY})
    assert code == 0 and out.startswith("k1 pnt_") and len(out.split()) == 2
    code, out, _ = _main(world, "access-point", "token", "local", "--out", str(world.tmp / "tokens"),
                         env={"PAMPA_AP_KEY": KEY})
    assert code == 0
    files = sorted(p.name for p in (world.tmp / "tokens").iterdir())
    assert files == ["local-e1.token", "local-k1.token", "local-n1.token"]
    assert all((world.tmp / "tokens" / f).stat().st_mode & 0o777 == 0o600 for f in files)
    code, _, err = _main(world, "access-point", "token", "local", "nope", env={"PAMPA_AP_KEY": KEY})
    assert code == 2 and "stage local has no host 'nope'" in err


def test_agent_install_prints_the_unit_and_refuses_a_readable_token(world, tmp_path):
    token = tmp_path / "k1.token"
    token.write_text("pnt_x\n")
    token.chmod(0o644)
    code, _, err = _main(world, "agent", "install", "local", "--node", "k1", "--token-file", str(token), "--print")
    assert code == 2 and f"token file {token} is readable by others (mode 0644); run `chmod 600 {token}`" in err
    token.chmod(0o600)
    code, out, _ = _main(world, "agent", "install", "local", "--node", "k1", "--token-file", str(token), "--print")
    assert code == 0 and "[Service]" in out
    assert f"--stages {world.stages} agent local --node k1 --token-file {token} --grace 30" in out
    code, out, _ = _main(world, "agent", "install", "local", "--node", "k1", "--token-file", str(token),
                         "--unit-dir", str(tmp_path / "units"))
    assert code == 0 and (tmp_path / "units" / "pampa-agent-local.service").exists()
    assert "systemctl daemon-reload && systemctl enable --now pampa-agent-local" in out


def test_a_second_agent_for_the_node_exits_3(world, tmp_path):
    token = tmp_path / "k1.token"
    token.write_text(world.admin.issue_token("local", "k1", ["kepler"])["token"])
    token.chmod(0o600)
    state = tmp_path / "state"
    with NodeLock(state / "local-k1.lock", "k1"):
        code, _, err = _main(world, "agent", "local", "--node", "k1", "--token-file", str(token),
                             "--state-dir", str(state))
    assert code == 3 and "another pampa agent already runs for node k1" in err


def test_a_refused_token_is_retried_slowly_with_the_servers_answer(world):
    stop = AgentStop()
    out = io.StringIO()
    agent = Agent("k1", "local", lambda b: None, AccessPointClient(world.url, "pnt_revoked"), stop,
                  world.tmp / "state-bad", out=out, poll_wait=1)
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while "retrying in 60s" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.request(15)
    t.join(30)
    assert not t.is_alive()
    assert "answered 401 Unauthorized: missing or wrong API key; retrying in 60s (fix the token or the stage)" \
        in out.getvalue()


def test_request_wait_follows_agents_and_ends_like_deploy(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for n in ("k1", "e1", "n1"):
        world.start_agent(n)
    code, out, err = _main(world, "request", "local", "-m", "ship", "--wait", "--ci", "--report", "r.json",
                           env={"PAMPA_AP_KEY": KEY})
    assert code == 0, out + err
    assert "deploy request 1 registered" in out
    assert "gate open: every kepler node reported success" in out
    for line in ("RESULT k1 [kepler] ok", "RESULT e1 [euler] ok", "RESULT n1 [newton] ok"):
        assert line in out
    import json as _json
    report = _json.loads((tmp_path / "r.json").read_text())
    assert report["result"] == "ok" and report["gate"]["state"] == "open"
    k1 = next(h for h in report["hosts"] if h["name"] == "k1")
    assert [s["name"] for s in k1["steps"]][:3] == ["git_fetch", "git_reset", "secrets"]
    assert SECRET not in out

    (world.homes["k1"] / "fail-migrate").write_text("")
    code, out, err = _main(world, "request", "local", "--wait", "--ci", env={"PAMPA_AP_KEY": KEY})
    assert code == 1, out + err
    assert "RESULT k1 [kepler] failed at migrate exit 3" in out and "migration broke" in out
    assert "RESULT e1 [euler] skipped" in out and "gate closed: k1 failed at migrate" in out


def test_local_backend_stops_a_command_and_its_children_at_the_timeout(tmp_path):
    from pampa_deployer.engine.backends.local import LocalBackend
    from pampa_deployer.steps.actions import Command

    backend = LocalBackend("n1", str(tmp_path))
    result = backend.run(Command(script="echo started; sleep 60 & echo $! > child.pid; wait", timeout=1))
    assert result.exit_code == 124 and "timed out after 1s" in result.stderr and result.stdout == "started\n"
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 20
    while Path(f"/proc/{child}").exists() and "Z" not in Path(f"/proc/{child}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the command's child outlived its timeout"
        time.sleep(0.05)


def test_sigterm_mid_step_reports_the_run_interrupted_at_that_step(world):
    home = world.homes["n1"]
    (home / "slow-bundle").write_text("")
    agent = world.agent_process("n1", world.tmp / "n1-term.log", "--grace", "1")
    try:
        d = world.request()
        world.wait_for(d["id"], lambda d: any(n["node"] == "n1" and n["step"] == "bundle" for n in d["nodes"]),
                       "n1 reaches bundle")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 143
    finally:
        if agent.poll() is None:
            agent.kill()
    run = next(n for n in world.admin.deploy(d["id"])["nodes"] if n["node"] == "n1")
    assert run["state"] == "interrupted" and run["step"] == "bundle", run
    text = (world.tmp / "n1-term.log").read_text()
    assert "SIGTERM: starting no new steps; running commands get 1s to finish" in text
    assert "pampa agent: node n1 stopped by SIGTERM" in text
    sleeper = _sleeper(home)
    deadline = time.monotonic() + 20
    while Path(f"/proc/{sleeper}").exists() and "Z" not in Path(f"/proc/{sleeper}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the step's command outlived the grace period"
        time.sleep(0.05)


def test_reporter_keeps_progress_while_the_access_point_is_away_and_keeps_only_an_output_tail():
    from pampa_deployer.agent.reporter import OUTPUT_TAIL, Reporter
    from pampa_deployer.engine import events as ev
    from pampa_deployer.errors import AccessPointError

    class Flaky:
        """Unreachable for the first three calls, then takes everything."""

        def __init__(self):
            self.calls, self.received = 0, []

        def progress(self, deploy_id, node, events):
            self.calls += 1
            if self.calls <= 3:
                raise AccessPointError("down", unreachable=True)
            self.received.extend(events)
            return {"ok": True}

    client = Flaky()
    steps = []
    reporter = Reporter(client, 7, "n1", on_step=steps.append, heartbeat=0.05)
    reporter(ev.StepStarted(host="n1", step="bundle"))
    for i in range(OUTPUT_TAIL + 60):
        reporter(ev.Output(host="n1", step="bundle", stream="stdout", line=f"line {i}"))
    reporter(ev.StepFinished(host="n1", result=StepResult("bundle", True, 0.0, 0.0)))
    assert reporter.close(timeout=60)  # delivered once the access point answered
    kinds = [e["kind"] for e in client.received]
    assert kinds[0] == "step_started" and kinds[-1] == "step_finished" and steps == ["bundle"]
    lines = [e["line"] for e in client.received if e["kind"] == "output"]
    assert len(lines) == OUTPUT_TAIL and lines[-1] == f"line {OUTPUT_TAIL + 59}"  # the tail, in order
    assert reporter.dropped == 60 and client.calls >= 4


def test_request_to_needs_rollback_and_an_unknown_history_is_refused(world):
    code, _, err = _main(world, "request", "local", "--to", "abc123", env={"PAMPA_AP_KEY": KEY})
    assert code == 2 and "request: --to REV goes with --rollback" in err
    code, _, err = _main(world, "request", "local", "--rollback", env={"PAMPA_AP_KEY": KEY})
    assert code == 4 and "rollback: the access point knows no revision of stage local (its history is the pull " \
        "requests whose keplers succeeded); give one with --to REV. Nothing was requested" in err
    assert world.admin.deploys("local") == []


# -- a hostile or failing access point, real `pampa agent` processes (issue 20, class 8) ----------------------
def _wait_log(log: Path, needle: str, proc: subprocess.Popen, bound: float = 60.0) -> str:
    deadline = time.monotonic() + bound
    while True:
        text = log.read_text() if log.exists() else ""
        if needle in text:
            return text
        assert proc.poll() is None, f"the agent exited ({proc.returncode}) before '{needle}': {text[-3000:]}"
        assert time.monotonic() < deadline, f"never logged '{needle}': {text[-3000:]}"
        time.sleep(0.1)


UNEXPECTED = [{}, None, [], "not an object", {"deploy": {}}, {"deploy": {"id": "7"}}, {"deploy": {"id": True}},
              {"deploy": {"id": 7, "kind": "nuke"}}, {"deploy": {"id": 7, "kind": "rollback"}}, {"deploy": []},
              {"deploy": {"id": 10 ** 30, "branch": ["main"]}}]


def test_unexpected_answers_are_one_log_line_and_a_back_off_never_a_crash(world):
    from hostileap import Hostile
    calls = iter(UNEXPECTED)
    hostile = Hostile(lambda method, path, headers, body: (200, next(calls, {}) if "/next" in path else {"ok": 1}, {}))
    world.stage("hostile", hostile.url)
    log = world.tmp / "hostile-agent.log"
    agent = world.agent_process("n1", log, stage="hostile")
    try:
        _wait_log(log, "answered something unexpected", agent)
        deadline = time.monotonic() + 120
        while sum("/next" in p for p in hostile.paths()) < 5:  # backing off: 1, 2, 4... seconds apart
            assert agent.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 143
    finally:
        hostile.close()
    text = log.read_text()
    assert "Traceback" not in text and "internal error" not in text
    assert text.count("answered something unexpected") == 1, text  # one line, then quiet back-off
    assert "retrying in 1s" in text


def test_polls_are_a_second_apart_however_fast_the_server_answers(world):
    """An access point that answers every long poll at once (today: 22,216 requests in 20 s)."""
    from hostileap import Hostile
    hostile = Hostile(lambda method, path, headers, body: (200, {"deploy": None} if "/next" in path else {}, {}))
    world.stage("eager", hostile.url)
    log = world.tmp / "eager-agent.log"
    agent = world.agent_process("n1", log, stage="eager")
    try:
        deadline = time.monotonic() + 60
        while not any("/next" in p for p in hostile.paths()):
            assert agent.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        start, first = time.monotonic(), sum("/next" in p for p in hostile.paths())
        time.sleep(4)
        polls = sum("/next" in p for p in hostile.paths()) - first
        elapsed = time.monotonic() - start
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 143
    finally:
        hostile.close()
    # MIN_POLL is 1 s: at most one poll per second (+1 for the edge); a loaded machine polls less, never more
    assert 1 <= polls <= elapsed + 1, (polls, elapsed)


def test_a_rotated_token_file_is_read_again_without_a_restart(world):
    log = world.tmp / "rotate-agent.log"
    agent = world.agent_process("n1", log)
    token_file = world.homes["n1"] / "local-n1.token"
    try:
        _wait_log(log, "started for stage local", agent)
        new = world.admin.issue_token("local", "n1", [])["token"]  # revokes the token the agent holds
        staged = token_file.with_name("new.token")
        staged.write_text(new + "\n")
        staged.chmod(0o600)
        staged.replace(token_file)  # as an operator (or a config manager) rotates it: a new file in place
        _wait_log(log, f"token file {token_file} changed: using the new token", agent)
        d = world.request(nodes=("n1",))
        done = world.wait_for(d["id"], lambda d: _states(d)["n1"] not in ("waiting", "running"), "n1 deploys")
        assert _states(done)["n1"] == "ok", log.read_text()
        assert new not in log.read_text()
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)


def test_a_401_makes_the_agent_read_its_token_file_again(tmp_path):
    """The file changed without its signature changing (same size, mtime put back): a 401 makes it look."""
    from pampa_deployer.agent.token import TokenFile
    file = tmp_path / "t.token"
    file.write_text("pnt_old-token\n")
    file.chmod(0o600)
    token = TokenFile(file, "local", "n1")
    stat = file.stat()
    file.write_text("pnt_new-token\n")
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert token.changed() is None  # looks the same
    assert token.changed(force=True) == "pnt_new-token" and token.token == "pnt_new-token"
    file.chmod(0o644)
    with pytest.raises(Exception, match="readable by others"):
        token.changed(force=True)
    assert TokenFile(None, "local", "n1", "pnt_from-env").changed(force=True) is None  # $PAMPA_AGENT_TOKEN: read once


def _hold_n1_in_migrate(world, log: Path, agent: subprocess.Popen, **request) -> dict:
    (world.homes["n1"] / "hold-migrate").write_text("")
    d = world.request(nodes=("n1",), **request)
    world.wait_for(d["id"], lambda d: d["nodes"][0]["step"] == "migrate", "n1 reaches migrate")
    return d


def test_a_short_outage_at_report_version_does_not_fail_a_deployed_node(world):
    log = world.tmp / "outage-agent.log"
    agent = world.agent_process("n1", log)
    try:
        d = _hold_n1_in_migrate(world, log, agent)
        world.stop_server()
        (world.homes["n1"] / "hold-migrate").unlink()
        _wait_log(log, "n1 report_version start", agent)
        time.sleep(2)  # a few tries fail while it is away
        world.start_server()
        done = world.wait_for(d["id"], lambda d: _states(d)["n1"] not in ("waiting", "running"), "n1 ends")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
    assert _states(done)["n1"] == "ok", log.read_text()  # today: failed at report_version, connection refused
    revision = subprocess.run(["git", "-C", str(world.homes["n1"] / "code" / "demo"), "rev-parse", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
    assert {n["node"]: n["revision"] for n in world.admin.nodes("local")} == {"n1": revision}
    assert "UNREACHABLE" not in log.read_text()  # delivered within its retry period: nothing to say


def test_a_version_report_that_cannot_wait_is_delivered_later_and_the_node_is_ok(world):
    world.stage("brief", world.url, report_retry=1)
    log = world.tmp / "brief-agent.log"
    agent = world.agent_process("n1", log, stage="brief")
    try:
        (world.homes["n1"] / "hold-migrate").write_text("")
        d = world.request("brief", nodes=("n1",))
        world.wait_for(d["id"], lambda d: d["nodes"][0]["step"] == "migrate", "n1 reaches migrate")
        world.stop_server()
        (world.homes["n1"] / "hold-migrate").unlink()
        _wait_log(log, "ACCESS POINT UNREACHABLE", agent)
        journal = Journal(world.homes["n1"] / ".pampa" / "agent" / "brief-n1.json")
        deadline = time.monotonic() + 60
        while (journal.read() or {}).get("state") != "finished":
            assert time.monotonic() < deadline, journal.read()
            time.sleep(0.1)
        assert journal.read()["result"] == "ok" and journal.read()["unsent"]["node"] == "n1"
        world.start_server()
        done = world.wait_for(d["id"], lambda d: _states(d)["n1"] not in ("waiting", "running"), "n1 ends")
        _wait_log(log, "reported (late)", agent)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
    text = log.read_text()
    assert _states(done)["n1"] == "ok", text
    assert "n1 is deployed; its version report" in text
    assert [n["node"] for n in world.admin.nodes("brief")] == ["n1"]


def test_a_cancelled_request_stops_the_agent_at_its_next_step(world):
    """The access point's answers say ``cancelled: true`` (a relay in front of the real one adds it, as the
    server's cancel endpoint does): the running step finishes, no other starts, the run is interrupted."""
    from hostileap import Relay
    cancelled: set[int] = set()

    def rewrite(method, path, status, answer):
        """What the access point answers once the request is cancelled (server/requests.py, issue 20)."""
        ids = [i for i in cancelled if path.startswith(f"/api/v1/deploys/{i}")]
        if ids and isinstance(answer, dict) and path.endswith(("/progress", "/finish")):
            answer = {**answer, "cancelled": True}
        elif ids and isinstance(answer, dict) and path == f"/api/v1/deploys/{ids[0]}":
            answer = {**answer, "state": "CANCELLED", "detail": "cancelled by ana@laptop: wrong branch"}
        return status, answer

    relay = Relay(world.url, rewrite)
    world.stage("relayed", relay.url)
    log = world.tmp / "cancel-agent.log"
    agent = world.agent_process("n1", log, stage="relayed")
    home = world.homes["n1"]
    try:
        (home / "hold-migrate").write_text("")
        d = world.request("relayed", nodes=("n1",))
        world.wait_for(d["id"], lambda d: d["nodes"][0]["step"] == "migrate", "n1 reaches migrate")
        cancelled.add(d["id"])
        _wait_log(log, f"request {d['id']}: cancelled by ana@laptop: wrong branch: starting no new step; the "
                       "running command gets 30s to finish", agent)  # within a heartbeat (10 s)
        (home / "hold-migrate").unlink()  # the running step finishes...
        done = world.wait_for(d["id"], lambda d: _states(d)["n1"] not in ("waiting", "running"), "n1 ends")
        run = done["nodes"][0]
        assert run["state"] == "interrupted", run
        assert run["detail"] == "cancelled by ana@laptop: wrong branch; interrupted before restart_workers", run
        assert (home / "migrated").exists() and not (home / "restarts.log").exists()  # ...and nothing after it
        again = world.request("relayed", nodes=("n1",))  # the agent goes on with the next request
        world.wait_for(again["id"], lambda d: _states(d)["n1"] == "ok", "n1 deploys the next request")
        assert agent.poll() is None
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
        relay.close()


def test_nothing_a_request_or_a_command_says_reaches_the_agents_log_as_a_control_sequence(world):
    (world.homes["n1"] / "fail-migrate").write_text("")
    log = world.tmp / "escape-agent.log"
    agent = world.agent_process("n1", log)
    try:
        d = world.request(nodes=("n1",), requested_by="ana\x1b]0;owned\x07", message="fix\rforged line\x1b[2J")
        world.wait_for(d["id"], lambda d: _states(d)["n1"] == "failed", "n1 fails at migrate")
        _wait_log(log, f"request {d['id']}: failed at migrate", agent)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
    text = log.read_text()
    assert "for ana (fix forged line)" in text and "migration broke" in text
    for c in ("\x1b", "\x07", "\r"):
        assert c not in text, (c, text)


@pytest.mark.skipif(not hasattr(__import__("pampa_deployer.accesspoint.rules", fromlist=["x"]), "CANCELLED"),
                    reason="the access point's cancel endpoint (issue 20, its server side) is not in this tree yet")
def test_cancel_through_the_access_point_stops_the_agent_and_the_follower_says_so(world, tmp_path, monkeypatch):
    """`pampa request --cancel ID --wait` against the real access point, a real agent in its running step."""
    monkeypatch.chdir(tmp_path)
    log = world.tmp / "cancelled-agent.log"
    agent = world.agent_process("n1", log, "--grace", "1")
    try:
        (world.homes["n1"] / "hold-migrate").write_text("")
        d = world.request(nodes=("n1", "e1"))  # no kepler: e1 may start, but has no agent: it waits
        world.wait_for(d["id"], lambda d: _states(d)["n1"] == "running" and
                       next(n for n in d["nodes"] if n["node"] == "n1")["step"] == "migrate", "n1 reaches migrate")
        code, out, err = _main(world, "request", "local", "--cancel", str(d["id"]), "-m", "wrong branch", "--wait",
                               "--ci", env={"PAMPA_AP_KEY": KEY})
        assert agent.poll() is None  # the agent goes on
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
    assert code == 1, out + err
    assert f"request {d['id']} CANCELLED: 1 waiting node(s) will not start it; 1 running node(s)" in out
    assert "RESULT n1 [newton] interrupted at migrate" in out and "RESULT e1 [euler] skipped" in out
    n1 = next(n for n in world.admin.deploy(d["id"])["nodes"] if n["node"] == "n1")
    assert n1["state"] == "interrupted" and n1["detail"].startswith("cancelled by ") and "wrong branch" in n1["detail"]
    assert not (world.homes["n1"] / "migrated").exists() and not (world.homes["n1"] / "restarts.log").exists()


def test_a_left_behind_group_is_stopped_and_a_reused_number_is_not(tmp_path):
    """The pgid file names a group and its leader's start time: a group still there is stopped; a process
    that got the number later (another start time) is left alone; a file that says nothing stops nothing."""
    from pampa_deployer.engine.backends.local import _start_time, stop_left_behind
    file = tmp_path / "n1.pgid"
    group = subprocess.Popen(["bash", "-c", "sleep 60 & wait"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        file.write_text(f"{bystander.pid} 1\n")  # its number, but not its start time: not ours
        assert stop_left_behind(file, grace=1) is None and bystander.poll() is None and not file.exists()
        for junk in ("", "1 1", "abc def", f"{group.pid}"):
            file.write_text(junk)
            assert stop_left_behind(file, grace=1) is None and group.poll() is None
        file.write_text(f"{group.pid} {_start_time(group.pid)}\n")
        assert stop_left_behind(file, grace=5) == group.pid
        assert group.wait(30) is not None  # TERM reached the group
    finally:
        for proc in (group, bystander):
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def test_request_without_wait_names_how_to_follow_it_with_its_stages_folder(world):
    """Issue 22: the follow hint dropped --stages, so typing it as printed found no stage."""
    code, out, err = _main(world, "request", "local", env={"PAMPA_AP_KEY": KEY})
    assert code == 0, err
    deploy_id = world.admin.deploys("local")[0]["id"]
    assert out.splitlines()[-1] == (f"follow it: pampa --stages {world.stages} request local --follow {deploy_id}"
                                    f"  (cancel it: --cancel {deploy_id})")


def test_printing_a_node_token_says_it_revoked_the_one_written_before(world):
    """Issue 22: printing one node token silently revoked the one just written with --out."""
    from pampa_deployer.errors import AccessPointError
    folder = world.tmp / "tokens-revoked"
    code, _, err = _main(world, "access-point", "token", "local", "n1", "--out", str(folder), env={"PAMPA_AP_KEY": KEY})
    assert code == 0, err
    written = (folder / "local-n1.token").read_text().strip()
    code, out, err = _main(world, "access-point", "token", "local", "n1", env={"PAMPA_AP_KEY": KEY})
    assert code == 0 and out.startswith("n1 pnt_") and written not in out
    assert err.strip() == ("pampa: warning: n1: its earlier token (e.g. one written with --out) no longer works; give "
                           "the node this new one at ~/.pampa/agent/local-n1.token")
    with pytest.raises(AccessPointError, match="401"):
        AccessPointClient(world.url, written).next_request("n1")
