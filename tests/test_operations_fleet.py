"""Safe operations against the real fleet: lock, status, rollback, interruption, host keys, secrets, access point."""
from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest
from conftest import SECRET, head, read_until, trace

pytestmark = pytest.mark.fleet


def lock_dir(fleet) -> Path:
    return fleet.home("kepler-1") / ".pampa" / "locks" / "test.lock"


def revlog(fleet, host) -> list[dict]:
    path = fleet.code(host).parent / f"{fleet.app}.revisions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def slow_stage(project, seconds: int = 4):
    project.stage(steps={"slow": {"run": f"sleep {seconds}", "roles": ["newton"], "after": "git_reset"}})


# -- deploy lock --------------------------------------------------------------------------------------
def test_second_deploy_refuses_while_first_holds_the_lock(project, fleet):
    # The first deploy's step waits until the test has looked (a file on each newton), not a fixed time.
    go = [fleet.home(h) / "go-4110" for h in ("newton-1", "newton-2")]
    for f in go:
        f.unlink(missing_ok=True)
    project.stage(steps={"slow": {"run": "n=0; while [ ! -e ~/go-4110 ] && [ $n -lt 1200 ]; do sleep 0.1; "
                                  "n=$((n+1)); done", "roles": ["newton"], "after": "git_reset"}})
    first = project.popen("deploy", "test", "-m", "first deploy")
    seen: list[str] = []
    read_until(first, "newton-1 slow start", seen)

    second = project.pampa("deploy", "test")
    status = project.pampa("lock", "status", "test")
    info = json.loads((lock_dir(fleet) / "info.json").read_text())
    for f in go:
        f.touch()
    first_out, _ = first.communicate(timeout=120)
    for f in go:
        f.unlink()

    assert second.returncode == 3
    assert "stage test is locked on kepler-1" in second.stderr and f"(pid {first.pid})" in second.stderr
    assert "message: 'first deploy'" in second.stderr
    assert (second.stdout + second.stderr).count("is locked on kepler-1") == 1  # said once, not per host
    assert info["pid"] == first.pid  # the second deploy did not release or replace the first's lock
    assert "held by" in status.stdout and "first deploy" in status.stdout
    assert first.returncode == 0, "".join(seen) + first_out
    assert not lock_dir(fleet).exists()  # released on success
    # docs/operations.md: the -m message is recorded in the revision log too
    assert revlog(fleet, "newton-1")[-1]["message"] == "first deploy"


def test_lock_wait_waits_for_the_holder(project, fleet):
    slow_stage(project, 3)
    first = project.popen("deploy", "test")
    read_until(first, "newton-1 slow start", [])
    second = project.pampa("deploy", "test", "--lock-wait", "120")
    first.communicate(timeout=120)
    assert first.returncode == 0
    assert second.returncode == 0, second.stdout + second.stderr
    assert "lock held" in second.stdout


def test_stale_lock_is_shown_and_taken_over(project, fleet):
    project.stage()
    d = lock_dir(fleet)
    d.mkdir(parents=True, exist_ok=True)
    (d / "info.json").write_text(json.dumps({"user": "ghost", "machine": "gone", "pid": 999999,
                                             "started_at": "2020-01-01T00:00:00Z", "branch": "main"}))
    (d / "token").write_text("dead-token")
    (d / "expires").write_text(str(int(time.time()) - 60))

    status = project.pampa("lock", "status", "test")
    deploy = project.pampa("deploy", "test")

    assert "stale by ghost@gone" in status.stdout and "STALE" in status.stdout
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert "took over a stale lock left by ghost@gone" in deploy.stdout
    assert not d.exists()


def test_unlock_of_a_live_lock_needs_force_and_is_recorded(project, fleet):
    project.stage()
    d = lock_dir(fleet)
    d.mkdir(parents=True, exist_ok=True)
    (d / "info.json").write_text(json.dumps({"user": "someone", "pid": 1}))
    (d / "expires").write_text(str(int(time.time()) + 3600))

    assert project.pampa("deploy", "test").returncode == 3
    refused = project.pampa("unlock", "test", "-m", "deploy box died")
    assert refused.returncode == 3 and d.exists()  # its lease is alive: the holder may be deploying
    assert "held by someone@? (pid 1)" in refused.stderr and "--force" in refused.stderr
    result = project.pampa("unlock", "test", "-m", "deploy box died", "--force")

    assert result.returncode == 0 and "lock removed" in result.stdout
    assert not d.exists()
    record = json.loads((d.parent / "test.unlocks.jsonl").read_text().splitlines()[-1])  # JSON Lines
    assert record["message"] == "deploy box died" and record["unlocked_by"] == "root"
    assert record["lock"] == {"user": "someone", "pid": 1}
    assert project.pampa("deploy", "test").returncode == 0


@pytest.mark.parametrize("then", ["deploy", "unlock"])
def test_a_sigkilled_deploy_does_not_block_its_own_machine(project, fleet, then):
    """Issue 22: after `kill -9` of a deploy, the next deploy from the same machine waited out the lease, and
    `pampa unlock` (the advice) refused without --force. Its holder is this machine and its pid is gone: the
    lock is stale now, `lock status` says so, and a deploy takes it over (or unlock removes it), saying why."""
    slow_stage(project, 30)
    first = project.popen("deploy", "test", "--roles", "newton")
    read_until(first, "newton-1 slow start", [])
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    assert json.loads((lock_dir(fleet) / "info.json").read_text())["pid"] == first.pid  # left behind, lease alive
    project.stage()
    status = project.pampa("lock", "status", "test")
    assert f"its process {first.pid} on this machine is no longer running  (STALE: the next deploy takes it " \
           "over, or `pampa unlock test` removes it)" in status.stdout
    if then == "unlock":
        result = project.pampa("unlock", "test", "-m", "my deploy was killed")
        assert result.returncode == 0 and "lock removed on kepler-1" in result.stdout, result.stderr
        assert not lock_dir(fleet).exists()
    result = project.pampa("deploy", "test", "--roles", "newton")
    assert result.returncode == 0, result.stdout + result.stderr
    took = f"took over a stale lock left by root@{socket.gethostname()} (its process {first.pid} on this machine " \
           "is no longer running)"
    assert (took in result.stdout) == (then == "deploy")
    assert not lock_dir(fleet).exists()  # and released at its end, as always


def test_a_live_deploy_on_this_machine_still_holds_its_lock(project, fleet):
    """The other side: the holder runs here and is alive, so its lock is not stale, whatever the machine."""
    slow_stage(project, 5)
    first = project.popen("deploy", "test", "--roles", "newton")
    read_until(first, "newton-1 slow start", [])
    second = project.pampa("deploy", "test", "--roles", "newton")
    unlock = project.pampa("unlock", "test")
    first.communicate(timeout=120)
    assert second.returncode == 3 and f"(pid {first.pid})" in second.stderr
    assert "its lease runs out in" in second.stderr and "`pampa unlock test --force -m WHY` removes it now" in second.stderr
    assert unlock.returncode == 3 and "--force" in unlock.stderr
    assert first.returncode == 0


# -- interruption -------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_step_finishes_running_commands_then_stops(project, fleet, signum, code):
    slow_stage(project, 3)
    fleet.commit(f"Release interrupted by {signum.name}")
    proc = project.popen("deploy", "test")
    seen: list[str] = []
    read_until(proc, "newton-1 slow start", seen)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    output = "".join(seen) + out

    assert proc.returncode == code, output + err
    assert f"{signum.name}: starting no new steps" in output
    assert "newton-1 slow ok" in output  # the running command was allowed to finish
    last = revlog(fleet, "newton-1")[-1]
    assert last["result"] == "interrupted" and last["step"] == "secrets"
    assert not lock_dir(fleet).exists()
    status = json.loads(project.pampa("status", "test", "--json").stdout)
    by_host = {h["host"]: h for h in status["hosts"]}
    assert by_host["newton-1"]["interrupted"] and by_host["newton-1"]["last_step"] == "secrets"
    # The next deploy recovers with nothing to clean by hand.
    project.stage()
    again = project.pampa("deploy", "test")
    assert again.returncode == 0, again.stdout + again.stderr
    assert revlog(fleet, "newton-1")[-1]["result"] == "ok"


def test_second_sigint_aborts_at_once_and_still_unlocks(project, fleet):
    slow_stage(project, 60)
    proc = project.popen("deploy", "test")
    seen: list[str] = []
    read_until(proc, "newton-1 slow start", seen)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=45)  # far less than the 60 s step: it did not wait

    assert proc.returncode == 130
    assert "aborting running commands now" in "".join(seen) + out
    assert not lock_dir(fleet).exists()
    assert revlog(fleet, "newton-1")[-1]["result"] == "interrupted"
    assert revlog(fleet, "newton-1")[-1]["step"] == "slow"


# -- status and rollback ------------------------------------------------------------------------------
def test_status_marks_drift(project, fleet):
    project.stage()
    assert project.pampa("deploy", "test").returncode == 0
    new = fleet.commit("Only newton-1 gets this")
    assert project.pampa("deploy", "test", "--hosts", "newton-1").returncode == 0

    status = json.loads(project.pampa("status", "test", "--json").stdout)

    assert status["drift"] is True
    rows = {h["host"]: h for h in status["hosts"]}
    assert rows["newton-1"]["revision"] == new and rows["newton-1"]["drift"]
    assert not rows["kepler-1"]["drift"]
    table = project.pampa("status", "test")
    assert "DRIFT" in table.stdout, (table.returncode, table.stderr)


def test_rollback_goes_back_one_revision_on_every_host(project, fleet):
    project.stage()
    old = fleet.commit("Release A")
    assert project.pampa("deploy", "test").returncode == 0
    new = fleet.commit("Release B")
    assert project.pampa("deploy", "test").returncode == 0
    assert head(fleet, "kepler-1") == new

    dry = project.pampa("rollback", "test", "--dry-run")
    assert dry.returncode == 0 and f"git reset --hard {old}" in dry.stdout
    assert head(fleet, "kepler-1") == new  # the dry run changed nothing

    result = project.pampa("rollback", "test")

    assert result.returncode == 0, result.stdout + result.stderr
    for host in ("kepler-1", "kepler-2", "newton-1", "newton-2"):
        assert head(fleet, host) == old
        assert revlog(fleet, host)[-1]["kind"] == "rollback"
    assert "database migrations are not reverted" in result.stdout


def test_rollback_refuses_a_revision_missing_on_a_host(project, fleet):
    project.stage()
    result = project.pampa("rollback", "test", "--to", "0123456789abcdef0123456789abcdef01234567")
    assert result.returncode == 4
    assert "is not present on" in result.stderr and "Nothing was changed" in result.stderr


# -- host keys and ssh_config --------------------------------------------------------------------------
def test_unknown_host_key_is_refused_unless_trusted(project, fleet, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    project.stage(ssh={"known_hosts": str(empty)})

    refused = project.pampa("check", "test")
    trusted = project.pampa("check", "test", "--accept-new-host-keys")
    after = project.pampa("check", "test")

    assert refused.returncode == 4 and "unknown host key" in refused.stdout
    assert trusted.returncode == 0, trusted.stdout
    assert len(empty.read_text().splitlines()) == len(fleet.hosts)
    assert after.returncode == 0  # the keys were saved


def test_changed_host_key_is_always_refused(project, fleet, tmp_path):
    lines = fleet.known_hosts.read_text().splitlines()
    key_of = {line.split()[0]: line.split(None, 1)[1] for line in lines}
    kepler = f"[{fleet.host('kepler-1').address}]:2222"
    other = f"[{fleet.host('newton-1').address}]:2222"
    forged = tmp_path / "known_hosts"
    forged.write_text("".join(f"{h} {key_of[other] if h == kepler else k}\n" for h, k in key_of.items()))
    project.stage(ssh={"known_hosts": str(forged)})

    result = project.pampa("deploy", "test", "--accept-new-host-keys")

    assert result.returncode == 4
    assert "HOST KEY CHANGED" in result.stderr and "kepler-1" in result.stderr


def test_proxyjump_through_a_fleet_host(project, fleet, tmp_path):
    from pampa_deployer.engine.backends.ssh import SSHBackend, SSHSettings
    from pampa_deployer.inventory import load_stage

    bastion, target = fleet.host("kepler-1"), fleet.host("newton-2")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host bastion\n  HostName {bastion.address}\n  Port 2222\n  User root\n"
                      f"  IdentityFile {fleet.key}\n\n"
                      f"Host behind-bastion\n  HostName {target.address}\n  User root\n"
                      f"  IdentityFile {fleet.key}\n  ProxyJump bastion\n")
    project.stage(ssh={"config": str(config)})
    project.edit("test", lambda d: d["hosts"]["newton-2"].update(address="behind-bastion"))
    new = fleet.commit("Deployed through the bastion")

    result = project.pampa("deploy", "test", "--hosts", "newton-2")
    stage = load_stage("test", project.stages)
    backend = SSHBackend(stage.host("newton-2"), SSHSettings.from_stage(stage))
    backend.connect()
    try:
        gateway = backend.connection.gateway
        assert gateway is not None and gateway.host == bastion.address and gateway.is_connected
        assert backend.run(__import__("pampa_deployer.steps.actions", fromlist=["Command"]).Command(
            "git -C ~/code/pampa-demo rev-parse HEAD")).stdout.strip() == new
    finally:
        backend.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert head(fleet, "newton-2") == new


# -- secrets -------------------------------------------------------------------------------------------
def test_secret_never_appears_in_any_output_of_a_failing_deploy(project, fleet, tmp_path):
    project.stage(env={"API_TOKEN": SECRET},
                  steps={"leak": {"run": "cat config.rb; echo token=$API_TOKEN >&2; exit 1",
                                  "roles": ["newton"], "after": "secrets"}})
    project.stage("withap", access_point={"url": "http://127.0.0.1:9", "api_key": SECRET + "-key"})
    report, junit = tmp_path / "r.json", tmp_path / "j.xml"
    result = project.pampa("deploy", "test", "-v", "--report", str(report), "--junit", str(junit))
    plan = project.pampa("plan", "test")
    config = project.pampa("config", "withap")
    ap_down = project.pampa("deploy", "withap")
    assert ap_down.returncode == 1 and "access point http://127.0.0.1:9" in ap_down.stderr

    everything = [result.stdout, result.stderr, plan.stdout, config.stdout, ap_down.stdout, ap_down.stderr]
    for path in list((project.root / ".pampa").rglob("*")) + [report, junit]:
        if path.is_file():
            everything.append(path.read_text(errors="replace"))
    assert result.returncode == 1
    assert all(SECRET not in text for text in everything)
    assert "********" in result.stdout and "********" in config.stdout


# -- access point --------------------------------------------------------------------------------------
def test_deploy_follows_the_access_point_protocol(project, fleet, access_point):
    from pampa_deployer.accesspoint.client import AccessPointClient
    project.stage(access_point={"url": access_point, "api_key": "${AP_KEY}"})
    new = fleet.commit("Release through the access point")

    result = project.pampa("deploy", "test", env={"AP_KEY": "ap-test-key"})

    assert result.returncode == 0, result.stdout + result.stderr
    client = AccessPointClient(access_point, "ap-test-key")
    deploy = client._call("GET", "/deploys?stage=test")["deploys"][0]
    assert deploy["state"] == "DONE" and deploy["taken_by"] == "kepler-1"
    nodes = {n["node"]: n["revision"] for n in client.nodes("test")}
    assert nodes["kepler-1"] == nodes["newton-2"] == new
    assert set(nodes) == {h.name for h in fleet.hosts}
    status = json.loads(project.pampa("status", "test", "--json", env={"AP_KEY": "ap-test-key"}).stdout)
    assert {h["host"]: h["access_point_revision"] for h in status["hosts"]}["newton-1"] == new


def test_access_point_allowed_before_gated_hosts_start(project, fleet, access_point):
    """The access point hears ALLOWED (gate open) before any euler/copernico reports its version."""
    import sqlite3
    project.stage(access_point={"url": access_point, "api_key": "ap-test-key"})
    assert project.pampa("deploy", "test").returncode == 0
    db = sqlite3.connect(project.root / "ap.sqlite3")  # the access_point fixture's file (same tmp_path)
    rows = db.execute("SELECT kind, body FROM events WHERE deploy_id = (SELECT MAX(id) FROM deploys) "
                      "ORDER BY id").fetchall()
    kinds = [k if k != "version" else "version:" + json.loads(b)["node"] for k, b in rows]
    allowed = kinds.index("allowed")
    assert kinds[:2] == ["created", "taken"] and kinds[-1] == "done"
    assert all(kinds.index(f"version:{h}") > allowed for h in ("euler-1", "copernico-1"))
    assert all(kinds.index(f"version:{h}") < allowed for h in ("kepler-1", "kepler-2"))


def test_wrong_access_point_key_fails_clearly(project, fleet, access_point):
    project.stage(trace=True, access_point={"url": access_point, "api_key": "wrong-key"})
    result = project.pampa("deploy", "test")
    assert result.returncode == 1
    assert "answered 401" in result.stderr and "wrong API key" in result.stderr
    assert "wrong-key" not in result.stderr + result.stdout
    assert not lock_dir(fleet).exists()
    assert trace(fleet, "kepler-1") == []
