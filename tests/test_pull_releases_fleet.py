"""Pull mode with issue 10's features on the real fleet: releases, health checks, restarts, rollback.

The agents run inside the hosts as in tests/test_pull_fleet.py. Everything asserted is read on the
hosts (``current`` and the release folders, trace timestamps, live processes, the app's answer) or
from the access point, and compared with what `pampa deploy` does to the same stage.
"""
from __future__ import annotations

import json
import os
import signal
import time

import pytest
from conftest import alive, head, trace
from pullfleet import GATED, KEPLERS, NEWTONS, starts, states
from releasefleet import ROOT, WEB, current, releases, root, serving

pytestmark = pytest.mark.fleet

#: Gated roles build releases too (the seed's euler/copernico run what they have, and have no release).
RELEASES = dict(path=f"~/{ROOT}/{{app}}", strategy="releases", shared_files=["db/app.sqlite3"],
                sequences={"euler": ["git_fetch", "git_reset", "bundle", "restart_puma", "report_version"],
                           "copernico": ["git_fetch", "git_reset", "bundle", "restart_processes", "report_version"]})


def clear_traces(fleet) -> None:
    for host in fleet.hosts:
        (fleet.home(host.name) / "trace.log").unlink(missing_ok=True)


def results(report_path) -> dict:
    return {h["name"]: (h["result"], h.get("failed_step")) for h in json.loads(report_path.read_text())["hosts"]}


def test_pull_deploy_in_releases_mode_switches_every_node_behind_the_gate(pull, fleet):
    pull.stage(checks={"web": WEB}, **RELEASES)
    pull.install()
    pull.start_all()
    first = fleet.commit("First pull release in releases/")
    made = pull.pampa("request", "test", "--wait")
    assert made.returncode == 0, made.stdout + made.stderr
    clear_traces(fleet)
    second = fleet.commit("Second pull release in releases/")

    result = pull.pampa("request", "test", "-m", "releases by pull", "--wait", "--report", "r.json")

    assert result.returncode == 0, result.stdout + result.stderr + pull.log("kepler-1")
    for host in [h.name for h in fleet.hosts]:
        base = root(fleet, host)
        assert (base / "repo.git" / "HEAD").exists(), host  # the node's bare mirror
        assert current(fleet, host).startswith("releases/") and current(fleet, host).endswith(second[:7]), host
        live = base / current(fleet, host)
        assert (live / "REVISION").read_text() == second + "\n" and (live / ".pampa-live").exists()
        assert os.readlink(live / "db" / "app.sqlite3") == f"/root/{ROOT}/{fleet.app}/shared/db/app.sqlite3"
        older = [r for r in releases(fleet, host) if r.endswith(first[:7])]
        assert len(older) == 1 and (base / "releases" / older[0] / ".pampa-live").exists(), host
    kepler_end = max(end for h in KEPLERS for _, end in trace(fleet, h))
    for host in GATED:  # the gate, from the hosts' own clocks: nothing before the last kepler command ended
        assert min(s for s, _ in trace(fleet, host)) >= kepler_end, host
    for host in NEWTONS:
        assert min(s for s, _ in trace(fleet, host)) < kepler_end, f"{host} waited for the gate"
    assert f"revision={second}" in serving(fleet, "kepler-1")  # restarts acted on current, checks passed
    assert f"revision={second}" in serving(fleet, "euler-1")
    report = json.loads((pull.project.root / "r.json").read_text())
    for host in report["hosts"]:
        names = [s["name"] for s in host["steps"]]
        assert host["result"] == "ok" and "switch_release" in names, host
        assert ("health_check" in names) == (host["name"] in KEPLERS + ["euler-1"]), host
    assert {n["node"]: n["revision"] for n in pull.admin.nodes("test")} == {h.name: second for h in fleet.hosts}


def test_failing_health_checks_fail_a_pull_request_as_they_fail_a_deploy(pull, fleet):
    """A kepler whose check fails closes the gate; a newton whose check fails fails alone."""
    ready = {"run": "test -e ~/ready", "retries": 1, "interval": 0.2, "timeout": 5}
    pull.stage(checks={"kepler_ready": {"roles": ["kepler"], **ready}, "newton_ready": {"roles": ["newton"], **ready}},
               **RELEASES)
    for host in fleet.hosts:  # kepler-1 and newton-2 never get ready
        marker = fleet.home(host.name) / "ready"
        marker.unlink(missing_ok=True)
        if host.name not in ("kepler-1", "newton-2"):
            marker.write_text("")
    pull.install()
    pull.start_all()
    gated_before = {h: current(fleet, h) if (root(fleet, h) / "current").exists() else None for h in GATED}
    clear_traces(fleet)
    new = fleet.commit("Release whose checks fail on kepler-1 and newton-2")

    result = pull.pampa("request", "test", "--wait", "--report", "pulled.json")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "RESULT kepler-1 [kepler] failed at health_check" in result.stdout
    assert "RESULT newton-2 [newton] failed at health_check" in result.stdout
    assert "health check 'kepler_ready' failed after 2 attempts" in result.stdout
    d = pull.admin.deploy(1)
    assert d["state"] == "FAILED"
    assert states(d) == {"kepler-1": "failed", "kepler-2": "ok", "newton-1": "ok", "newton-2": "failed",
                         "euler-1": "skipped", "copernico-1": "skipped"}
    for host in GATED:  # no gated node acted on it
        assert trace(fleet, host) == [], f"{host} was touched"
        now = current(fleet, host) if (root(fleet, host) / "current").exists() else None
        assert now == gated_before[host]
    for host in ("kepler-1", "newton-2"):  # switched, then failed its check: as a push deploy leaves it
        assert current(fleet, host).endswith(new[:7])
    versions = {n["node"]: n["revision"] for n in pull.admin.nodes("test")}
    assert versions["newton-1"] == new and versions.get("newton-2") != new  # a failed check reports no version
    pulled = results(pull.project.root / "pulled.json")
    assert pulled["newton-2"] == ("failed", "health_check") and pulled["kepler-1"] == ("failed", "health_check")

    pull.stop_all()  # the same stage pushed: the same results host by host, the same exit code
    clear_traces(fleet)
    pushed = pull.pampa("deploy", "test", "--report", "pushed.json")
    assert pushed.returncode == result.returncode == 1, pushed.stdout + pushed.stderr
    assert results(pull.project.root / "pushed.json") == pulled
    assert all(trace(fleet, h) == [] for h in GATED)


def _slow_newton(pull, after: str) -> dict:
    """Stage a newton step that sleeps 120s ``after`` a step; returns the request once newton-1 is in it."""
    pull.stage(steps={"slow": {"run": "sleep 120 & echo $! > ~/slow.pid; wait", "roles": ["newton"],
                               "after": after}}, **RELEASES)
    pull.publish()
    pull.start("newton-1")
    d = pull.admin.create_request("test", "main", [{"node": "newton-1", "roles": ["newton"], "gated": False,
                                                     "opens_gate": False}], "t")
    pull.wait_for(d["id"], lambda d: states(d)["newton-1"] == "running" and d["nodes"][0]["step"] == "slow",
                  "newton-1 reaches the slow step")
    return d


def _kill_and_restart(pull, fleet, d: dict) -> dict:
    """SIGKILL the agent, start it again (it stops the step's command left running), return newton-1's run."""
    assert pull.stop("newton-1", signal.SIGKILL) == -signal.SIGKILL
    pid_file = fleet.home("newton-1") / "slow.pid"
    deadline = time.monotonic() + 30
    while not pid_file.read_text().strip() if pid_file.exists() else True:
        assert time.monotonic() < deadline, "the slow step never wrote its pid"
        time.sleep(0.1)
    sleeper = int(pid_file.read_text())
    pid_file.unlink()
    assert alive(sleeper)
    traced = starts(fleet, "newton-1")
    pull.start("newton-1")
    after = pull.wait_for(d["id"], lambda d: states(d)["newton-1"] != "running", "the restarted agent reports")
    assert starts(fleet, "newton-1") == traced  # nothing of that request ran again
    assert not alive(sleeper)  # the command the killed agent left running was stopped
    return after["nodes"][0]


def test_agent_killed_mid_release_reports_where_current_is_and_never_reruns(pull, fleet):
    base = root(fleet, "newton-1")
    pull.stage(**RELEASES)
    pull.install()
    live = fleet.commit("Release live before the kills")
    assert pull.pampa("deploy", "test", "--hosts", "newton-1").returncode == 0
    was = current(fleet, "newton-1")
    built = set(releases(fleet, "newton-1"))
    fleet.commit("Release cut short before its switch")

    # 1. killed while the new release is built but not yet current
    d = _slow_newton(pull, after="bundle")
    run = _kill_and_restart(pull, fleet, d)

    assert run["state"] == "interrupted", run
    assert run["detail"] == (f"the agent stopped during slow; not run again; current still {was} (not switched); "
                             "its command was still running and was stopped")
    assert current(fleet, "newton-1") == was and (base / was / "REVISION").read_text() == live + "\n"
    (half,) = set(releases(fleet, "newton-1")) - built  # built beside it, never made live
    assert not (base / "releases" / half / ".pampa-live").exists()
    assert os.readlink(base / "release") == f"releases/{half}"
    assert not (base / "current.pampa-new").exists()  # no half-made link left either

    # 2. killed after the switch, before the restarts: said, not hidden
    cut = fleet.commit("Release cut short after its switch")
    pull.stop("newton-1")
    d = _slow_newton(pull, after="switch_release")
    run = _kill_and_restart(pull, fleet, d)

    now = current(fleet, "newton-1")
    assert now != was and now.endswith(cut[:7]) and (base / now / ".pampa-live").exists()
    assert run["state"] == "interrupted", run
    assert run["detail"] == (f"the agent stopped during slow; not run again; current was switched to {now} "
                             f"(from {was}); the steps after slow did not run; its command was still running and "
                             "was stopped")
    assert {n["node"]: n["revision"] for n in pull.admin.nodes("test")}.get("newton-1") != cut  # never reported

    # the agent goes on: the next request builds one more release and finishes it
    pull.stop("newton-1")
    pull.stage(**RELEASES)
    pull.publish()
    pull.start("newton-1")
    known = set(releases(fleet, "newton-1"))
    again = pull.admin.create_request("test", "main", [{"node": "newton-1", "roles": ["newton"], "gated": False,
                                                         "opens_gate": False}], "t")
    done = pull.wait_for(again["id"], lambda d: d["state"] in ("DONE", "FAILED"), "the next request ends")
    assert done["state"] == "DONE", pull.log("newton-1")
    (built_now,) = set(releases(fleet, "newton-1")) - known  # one new release (keep_releases prunes old ones)
    assert current(fleet, "newton-1") == f"releases/{built_now}" and built_now.endswith(cut[:7])

    # restarted after a finished request: it polls again and runs nothing of it
    finished = (releases(fleet, "newton-1"), current(fleet, "newton-1"), starts(fleet, "newton-1"))
    pull.stop("newton-1")
    restarted = time.time()
    pull.start("newton-1")
    deadline = time.monotonic() + 60
    while not any(n["node"] == "newton-1" and (n.get("seen_at") or 0) > restarted for n in pull.admin.nodes("test")):
        assert time.monotonic() < deadline, pull.log("newton-1")  # its first long poll after the restart
        time.sleep(0.2)
    assert (releases(fleet, "newton-1"), current(fleet, "newton-1"), starts(fleet, "newton-1")) == finished
    assert states(pull.admin.deploy(again["id"]))["newton-1"] == "ok"


def test_rollback_request_switches_every_node_back_to_one_release(pull, fleet):
    pull.stage(checks={"web": WEB}, **RELEASES)
    pull.install()
    pull.start_all()
    old = fleet.commit("Release A, a pull rollback goes back to")
    assert pull.pampa("request", "test", "--wait").returncode == 0
    new = fleet.commit("Release B, rolled back from by pull")
    assert pull.pampa("request", "test", "--wait").returncode == 0
    before = {h.name: releases(fleet, h.name) for h in fleet.hosts}
    old_release = {h: next(r for r in reversed(before[h]) if r.endswith(old[:7])) for h in before}
    assert all(current(fleet, h).endswith(new[:7]) for h in before)
    clear_traces(fleet)

    result = pull.pampa("request", "test", "--rollback", "-m", "B is broken", "--wait", "--report", "r.json")

    assert result.returncode == 0, result.stdout + result.stderr + pull.log("kepler-1")
    assert f"rollback request 3 registered at {pull.ap.url}: stage test, to {old}, 6 nodes" in result.stdout
    for host in before:  # one switch back to the release that was live, nothing built or pruned
        assert current(fleet, host) == f"releases/{old_release[host]}", host
        assert releases(fleet, host) == before[host], host
    report = json.loads((pull.project.root / "r.json").read_text())
    assert report["kind"] == "rollback"
    for host in report["hosts"]:
        names = [s["name"] for s in host["steps"]]
        assert host["result"] == "ok" and names[0] == "switch_release" and "bundle" not in names, host
        assert "git_fetch" not in names and "migrate" not in names
    kepler_end = max(end for h in KEPLERS for _, end in trace(fleet, h))
    for host in GATED:  # the same gate as a deploy
        assert min(s for s, _ in trace(fleet, host)) >= kepler_end, host
    assert f"revision={old}" in serving(fleet, "kepler-1") and f"revision={old}" in serving(fleet, "euler-1")
    assert {n["node"]: n["revision"] for n in pull.admin.nodes("test")} == {h: old for h in before}

    # the history now ends at A (the rollback popped B): nothing earlier is known, nothing is requested
    refused = pull.pampa("request", "test", "--rollback")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert f"rollback: the access point knows no revision of stage test before {old[:12]}" in refused.stderr
    assert len(pull.admin.deploys("test")) == 3

    # a target no node holds: every node refuses before changing anything (push refuses up front: exit 4)
    clear_traces(fleet)
    never = fleet.commit("Never deployed anywhere")
    missing = pull.pampa("request", "test", "--rollback", "--to", never, "--wait")
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "RESULT kepler-1 [kepler] failed at rollback" in missing.stdout
    assert f"rollback: revision {never} is not in kepler-1's mirror. Nothing was changed" in missing.stdout
    d = pull.admin.deploy(4)
    assert d["state"] == "FAILED" and states(d)["euler-1"] == "skipped" and states(d)["newton-1"] == "failed"
    assert all(current(fleet, h) == f"releases/{old_release[h]}" for h in before)
    assert all(trace(fleet, h) == [] for h in GATED)


def test_rollback_request_in_place_resets_the_nodes_that_manage_code(pull, fleet):
    """The default strategy: keplers and newtons reset to the target; euler and copernico restart what they have."""
    pull.stage()
    pull.install()
    pull.start_all()
    old = fleet.commit("Release A, in place")
    assert pull.pampa("request", "test", "--wait").returncode == 0
    fleet.commit("Release B, in place, rolled back from")
    assert pull.pampa("request", "test", "--wait").returncode == 0
    gated = {h: head(fleet, h) for h in GATED}
    clear_traces(fleet)

    result = pull.pampa("request", "test", "--rollback", "--wait", "--report", "r.json")

    assert result.returncode == 0, result.stdout + result.stderr + pull.log("kepler-1")
    assert f"stage test, to {old}, 6 nodes" in result.stdout
    for host in KEPLERS + NEWTONS:
        assert head(fleet, host) == old, host
    kepler_end = max(end for h in KEPLERS for _, end in trace(fleet, h))
    for host in GATED:  # restarted behind the gate, on the checkout they have
        assert head(fleet, host) == gated[host]
        assert min(s for s, _ in trace(fleet, host)) >= kepler_end, host
    steps = {h["name"]: [s["name"] for s in h["steps"]]
             for h in json.loads((pull.project.root / "r.json").read_text())["hosts"]}
    assert steps["kepler-1"][:2] == ["git_reset", "bundle"] and "migrate" not in steps["kepler-1"]
    assert steps["euler-1"] == ["bundle", "restart_puma", "report_version"]
