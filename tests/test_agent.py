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
from pampa_deployer.agent.unit import AgentUnit, systemd_quote
from pampa_deployer.cli.request import nodes_of
from pampa_deployer.engine.results import StepResult
from pampa_deployer.engine.stop import StopSignal
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
@pytest.fixture
def world(tmp_path):
    """An access point, an origin repo, a stage (kepler, euler, newton) and a home per node."""
    srv = make_server("127.0.0.1", 0, str(tmp_path / "ap.sqlite3"), KEY, stall_after=60)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
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
    (stages / "local.yml").write_text(f"""
app: demo
repo: {origin}
access_point: {{url: "{url}", api_key: "${{PAMPA_AP_KEY}}"}}
secrets: [{{local: secrets/config.rb, remote: config.rb}}]
units: {{restart: "echo restart {{unit}} >> ~/restarts.log", puma: [puma], processes: [dispatcher], workers: [worker]}}
steps:
  migrate: {{run: "if [ -e ~/fail-migrate ]; then echo migration broke >&2; exit 3; fi; date +%s.%N > ~/migrated"}}
  bundle: {{run: "date +%s.%N >> ~/bundled; if [ -e ~/slow-bundle ]; then sleep 120 & echo $! > ~/sleep.pid; wait; fi"}}
hosts:
  k1: {{roles: [kepler]}}
  e1: {{roles: [euler]}}
  n1: {{roles: [newton]}}
""")
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

    def start_agent(name: str):
        token = admin.issue_token("local", name, [])["token"]
        client = AccessPointClient(url, token)
        env = {"PAMPA_AP_KEY": token}
        stop = StopSignal()
        out = io.StringIO()
        agent = Agent(name, "local", lambda branch: load_stage("local", stages, environ=env), client, stop,
                      tmp_path / "state" / name, out=out, poll_wait=5, home=str(homes[name]))
        t = threading.Thread(target=agent.run, daemon=True)
        t.start()
        w.agents.append((stop, t))
        return agent, stop, t, out

    def request():
        stage = load_stage("local", stages, environ={"PAMPA_AP_KEY": KEY})
        return admin.create_request("local", "main", nodes_of(build_plan(stage)), "tester", "test")

    def wait_for(deploy_id, pred, what, bound=60.0):
        deadline = time.monotonic() + bound
        while True:
            d = admin.deploy(deploy_id)
            if pred(d):
                return d
            if time.monotonic() > deadline:
                raise AssertionError(f"never happened: {what}; deploy is {d}")
            time.sleep(0.1)

    def agent_process(name: str, log: Path, *extra: str) -> subprocess.Popen:
        """A real `pampa agent` process for node ``name``, as its unit starts it: token file 0600, HOME its home."""
        home = homes[name]
        token = home / f"{name}.token"
        if not token.exists():
            token.write_text(admin.issue_token("local", name, [])["token"])
            token.chmod(0o600)
        env = {**os.environ, "HOME": str(home)}
        env.pop("PAMPA_AP_KEY", None)  # the agent reads its token, nothing else
        argv = [sys.executable, "-m", "pampa_deployer", "--stages", str(stages), "agent", "local", "--node", name,
                "--token-file", str(token), *extra]
        with open(log, "a") as out:
            return subprocess.Popen(argv, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)

    w.start_agent, w.request, w.wait_for, w.agent_process = start_agent, request, wait_for, agent_process
    yield w
    for stop, t in w.agents:
        stop.request(15)
        stop.abort()
    for stop, t in w.agents:
        t.join(30)
    srv.shutdown()
    srv.server_close()


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
    # the bundle command it started is still sleeping, in its own process group: stop it like systemd would
    os.kill(_sleeper(home), signal.SIGKILL)
    (home / "slow-bundle").unlink()
    assert _states(world.admin.deploy(d["id"]))["n1"] == "running"  # the server cannot know yet
    bundles = (home / "bundled").read_text().count("\n")
    second = world.agent_process("n1", log)
    try:
        run = world.wait_for(d["id"], lambda d: _states(d)["n1"] != "running", "the restarted agent reports")
        n1 = [n for n in run["nodes"] if n["node"] == "n1"][0]
        assert n1["state"] == "interrupted"
        assert n1["detail"] == "the agent stopped during bundle; not run again"
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
    stop = StopSignal()
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
