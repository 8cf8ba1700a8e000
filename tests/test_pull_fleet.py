"""Pull mode on the real fleet: an agent inside each host, started the way `pampa agent install` says.

Each host is an sshd in its own mount namespace. The test installs the agent over SSH on the host
(`pampa agent install`, writing the unit into the host's home), reads the unit back and starts its
ExecStart inside the host's namespace (nsenter), with the clean environment systemd gives a service.
The access point runs in the test process on 127.0.0.1 (port 0). Everything asserted is read on the
hosts (trace timestamps, git HEAD, files) or from the access point.
"""
from __future__ import annotations

import json
import signal
import time

import pytest
from conftest import alive, head, trace
from pullfleet import GATED, KEPLERS, NEWTONS, starts, states

from pampa_deployer.accesspoint.client import AccessPointClient
from pampa_deployer.errors import AccessPointError

pytestmark = pytest.mark.fleet


def test_request_deploys_every_role_with_the_gate_from_the_hosts_clocks(pull, fleet):
    pull.stage()
    pull.install()
    unit = pull.units["kepler-1"]
    assert unit["ExecStart"][-8:] == ["agent", "test", "--node", "kepler-1", "--token-file",
                                      "/root/.pampa/agent/test-kepler-1.token", "--grace", "30"]
    pull.start_all()
    gated_before = {h: head(fleet, h) for h in GATED}
    new = fleet.commit("Release for the pull-mode test")

    result = pull.pampa("request", "test", "-m", "pull test", "--wait", "--report", "report.json")

    assert result.returncode == 0, result.stdout + result.stderr + pull.log("kepler-1")
    assert "deploy request 1 registered" in result.stdout
    for host in KEPLERS + NEWTONS:
        assert head(fleet, host) == new, host
    for host in GATED:  # per the seed, gated roles bundle and restart what they have
        assert head(fleet, host) == gated_before[host]
    kepler_end = max(end for h in KEPLERS for _, end in trace(fleet, h))
    for host in GATED:
        spans = trace(fleet, host)
        assert spans, f"{host} ran nothing"
        assert min(s for s, _ in spans) >= kepler_end, f"{host} started before the last kepler command ended"
    for host in NEWTONS:
        assert min(s for s, _ in trace(fleet, host)) < kepler_end, f"{host} waited for the gate"
    report = json.loads((pull.project.root / "report.json").read_text())
    assert {h["name"]: h["result"] for h in report["hosts"]} == {h.name: "ok" for h in fleet.hosts}
    assert report["gate"]["state"] == "open"
    versions = {n["node"]: n["revision"] for n in pull.admin.nodes("test")}
    assert all(versions[h] == new for h in KEPLERS + NEWTONS)
    done = pull.admin.deploy(1)
    assert done["state"] == "DONE" and set(states(done).values()) == {"ok"}
    status = pull.pampa("status", "test", "--json")
    shown = json.loads(status.stdout)
    # By the seed, euler and copernico bundle and restart the checkout they have: the fleet may drift
    # (status then exits 1), but every host answered and none is incomplete.
    assert not shown["unreachable"] and not shown["incomplete"], status.stderr
    assert status.returncode == (1 if shown["drift"] else 0), status.stderr
    assert shown["pull_request"] == {"id": 1, "state": "DONE", "branch": "main", "requested_by": shown["pull_request"][
        "requested_by"], "stalled": False, "nodes": {h.name: "ok" for h in fleet.hosts}}
    assert all(h["agent_seen_at"] for h in shown["hosts"])  # every agent is polling
    # a node's token, read on the host itself, cannot reach another node's run or another stage
    token = (fleet.home("kepler-1") / ".pampa" / "agent" / "test-kepler-1.token").read_text().strip()
    as_kepler = AccessPointClient(pull.ap.url, token)
    with pytest.raises(AccessPointError, match="403.*not euler-1"):
        as_kepler.progress(1, "euler-1", [])
    with pytest.raises(AccessPointError, match="403.*not euler-1"):
        as_kepler.report_version("euler-1", "test", "0" * 40, ("euler",), 1)
    other = pull.admin.create_request("other", "main", [{"node": "kepler-1", "roles": ["kepler"], "gated": False,
                                                          "opens_gate": True}], "t")
    with pytest.raises(AccessPointError, match="404"):
        as_kepler.deploy(other["id"])
    with pytest.raises(AccessPointError, match="403"):
        as_kepler._call("GET", "/deploys?stage=other")


def test_kepler_failure_leaves_gated_nodes_untouched_and_exit_codes_match_deploy(pull, fleet):
    pull.stage(steps={"break_kepler": {"run": "echo 'kepler cannot migrate' >&2; exit 3", "roles": ["kepler"],
                                       "after": "migrate"}})
    pull.install()
    pull.start_all()
    new = fleet.commit("Release whose kepler fails (pull)")

    result = pull.pampa("request", "test", "--wait")

    assert result.returncode == 1, result.stdout + result.stderr
    for host in GATED:
        assert trace(fleet, host) == [], f"{host} was touched"
        assert f"RESULT {host} [{host.split('-')[0]}] skipped" in result.stdout
    assert "gate closed: kepler-1 failed at break_kepler" in result.stdout or \
        "gate closed: kepler-2 failed at break_kepler" in result.stdout
    for host in NEWTONS:
        assert head(fleet, host) == new
    assert "RESULT kepler-1 [kepler] failed at break_kepler exit 3" in result.stdout
    assert "kepler cannot migrate" in result.stdout
    d = pull.admin.deploy(1)
    assert d["state"] == "FAILED" and all(states(d)[h] == "skipped" for h in GATED)
    pull.stop_all()
    # the same stage pushed with `pampa deploy` fails the same way, with the same exit code
    for host in fleet.hosts:
        (fleet.home(host.name) / "trace.log").unlink(missing_ok=True)
    pushed = pull.pampa("deploy", "test")
    assert pushed.returncode == result.returncode == 1
    assert all(trace(fleet, h) == [] for h in GATED)


def test_agent_killed_mid_sequence_then_restarted(pull, fleet):
    pull.stage(steps={"slow": {"run": "sleep 120 & echo $! > ~/slow.pid; wait", "roles": ["newton"],
                               "after": "bundle"}})
    pull.install()
    pull.start("newton-1")
    pull.start("kepler-1")
    fleet.commit("Release for the kill test")
    d = pull.admin.create_request("test", "main", [
        {"node": "newton-1", "roles": ["newton"], "gated": False, "opens_gate": False},
        {"node": "kepler-1", "roles": ["kepler"], "gated": False, "opens_gate": True}], "t")
    pull.wait_for(d["id"], lambda d: any(n["node"] == "newton-1" and n["step"] == "slow" for n in d["nodes"]),
                  "newton-1 reaches the slow step")
    assert pull.stop("newton-1", signal.SIGKILL) == -signal.SIGKILL
    home = fleet.home("newton-1")
    journal = json.loads((home / ".pampa" / "agent" / "test-newton-1.json").read_text())
    assert journal["state"] == "running" and journal["step"] == "slow"
    sleeper = int((home / "slow.pid").read_text())
    assert alive(sleeper)  # the step's command outlived its agent (its own process group)...
    assert states(pull.admin.deploy(d["id"]))["newton-1"] == "running"  # the server cannot know yet
    traced = starts(fleet, "newton-1")

    pull.start("newton-1")
    after = pull.wait_for(d["id"], lambda d: states(d)["newton-1"] != "running", "the restarted agent reports")

    run = next(n for n in after["nodes"] if n["node"] == "newton-1")
    assert run["state"] == "interrupted" and run["detail"] == ("the agent stopped during slow; not run again; its "
                                                                "command was still running and was stopped")
    assert not alive(sleeper)  # ...and the restarted agent stopped it before anything else
    assert after["state"] in ("FAILED", "ALLOWED", "TAKEN")
    final = pull.wait_for(d["id"], lambda d: d["state"] in ("DONE", "FAILED") and
                          all(n["state"] != "running" for n in d["nodes"]), "the request ends")
    assert final["state"] == "FAILED" and states(final)["kepler-1"] == "ok"
    assert starts(fleet, "newton-1") == traced  # no command started again on newton-1
    deadline = time.monotonic() + 30
    while (home / ".pampa" / "agent" / "test-newton-1.json").exists():  # cleared once acknowledged
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "was cut short" in pull.log("newton-1")


def test_access_point_down_then_back(pull, fleet):
    pull.stage()
    pull.install()
    pull.start("newton-2")
    deadline = time.monotonic() + 60
    while "started for stage test" not in pull.log("newton-2") and time.monotonic() < deadline:
        time.sleep(0.2)
    pull.ap.stop()
    deadline = time.monotonic() + 90
    while "retrying in" not in pull.log("newton-2"):
        assert time.monotonic() < deadline, pull.log("newton-2")
        time.sleep(0.2)
    time.sleep(3)  # a few back-off rounds while it is down
    assert pull.agents["newton-2"].poll() is None  # still alive, backing off
    assert pull.log("newton-2").count("retrying in") == 1  # said once, not once per attempt
    new = fleet.commit("Release after the access point came back")
    pull.ap.start()  # same port, same database
    d = pull.admin.create_request("test", "main", [{"node": "newton-2", "roles": ["newton"], "gated": False,
                                                     "opens_gate": False}], "t")
    done = pull.wait_for(d["id"], lambda d: d["state"] in ("DONE", "FAILED"), "newton-2 deploys after the outage")
    assert done["state"] == "DONE", pull.log("newton-2")
    assert head(fleet, "newton-2") == new
    assert "access point reachable again" in pull.log("newton-2")


@pytest.mark.parametrize("pull", [3], indirect=True)  # the access point calls a node stalled after 3 s
def test_request_wait_exit_codes_stalled_and_interrupted(pull, fleet):
    """No agent runs: the request is stalled, never done (1); --timeout ends the wait with 1."""
    pull.stage()
    pull.install()
    fleet.commit("Release nobody takes")
    made = pull.pampa("request", "test", "-m", "nobody home")
    assert made.returncode == 0, made.stdout + made.stderr
    assert "deploy request 1 registered" in made.stdout and "follow it: pampa request test --follow 1" in made.stdout

    timed = pull.pampa("request", "test", "--follow", "1", "--timeout", "1")
    assert timed.returncode == 1, timed.stdout + timed.stderr
    assert "its outcome is unknown" in timed.stdout  # waiting, or stalled already on a slow machine

    stalled = pull.pampa("request", "test", "--follow", "1")  # ends by itself: nobody will ever report
    assert stalled.returncode == 1, stalled.stdout + stalled.stderr
    assert "RESULT kepler-1 [kepler] stalled" in stalled.stdout
    assert "not started" in stalled.stdout and "is its agent running?" in stalled.stdout
    assert "RESULT euler-1 [euler] waiting" in stalled.stdout and "waits for stalled keplers" in stalled.stdout
    assert "the request is stalled, not done" in stalled.stdout
    assert pull.admin.deploy(1)["stalled"] is True and pull.admin.deploy(1)["state"] == "PENDING"
    status = pull.pampa("status", "test")
    assert "last pull request 1 (branch main): STALLED (not done); 2 waiting; stalled: kepler-1 (not started" \
        in status.stdout.replace("\n", " ")



def test_ctrl_c_stops_following_with_130_and_leaves_the_request_alone(pull, fleet):
    pull.stage()
    pull.install()
    made = pull.pampa("request", "test")
    assert made.returncode == 0, made.stdout + made.stderr
    follower = pull.project.popen("request", "test", "--follow", "1", "--ci", env=pull.env)
    runs = pull.project.root / ".pampa" / "runs"
    deadline = time.monotonic() + 60
    while not (runs.exists() and any(runs.iterdir())):  # following has begun
        assert time.monotonic() < deadline and follower.poll() is None
        time.sleep(0.1)
    follower.send_signal(signal.SIGINT)
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 130, out + err
    assert "stopped following (the request goes on)" in out
    assert pull.admin.deploy(1)["state"] == "PENDING"  # the request is untouched
