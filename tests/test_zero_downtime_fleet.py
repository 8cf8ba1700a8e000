"""Deploys the app's users never notice (issue 21), on the real fleet with a load client running.

Every puma host gets GET / twenty times a second on a new connection each (fleet/load.py) while pampa
deploys. The assertions are counts, never timings: no request failed, and each host answered with the
old revision and with the new one (so the load really spanned the restart).
"""
from __future__ import annotations

import glob
import json
import time

import pytest
from conftest import alive, doc_shows, head, pid, trace
from releasefleet import ROOT, WEB

from pampa_deployer.fleet import APP_SOURCE
from pampa_deployer.fleet.load import Load, summary

pytestmark = pytest.mark.fleet

PUMAS = ["kepler-1", "kepler-2", "euler-1"]
GATED = ["euler-1", "copernico-1"]
CONFIG_RU = (APP_SOURCE / "config.ru").read_text()
PUMA_RB = (APP_SOURCE / "config" / "puma.rb").read_text()
PROCESS_RB = (APP_SOURCE / "bin" / "process.rb").read_text()
#: Divisions and dispatchers update their code too, so every puma host serves each new release.
SEQUENCES = {"euler": ["git_fetch", "git_reset", "bundle", "restart_puma", "report_version"],
             "copernico": ["git_fetch", "git_reset", "bundle", "restart_processes", "report_version"]}


def zero_downtime_stage(project, mode: str = "phased", strategy: str = "in_place", **extra):
    settings = dict(units={"puma_restart": mode}, sequences=SEQUENCES, checks={"web": WEB})
    if strategy == "releases":
        settings.update(path=f"~/{ROOT}/{{app}}", strategy="releases", shared_files=["db/app.sqlite3"])
    settings.update(extra)
    return project.stage(**settings)


def under_load(project, fleet, *args: str):
    """``pampa ARGS`` while every puma host is under load; (the run, the load's summary)."""
    with Load({h: (fleet.host(h).address, 9292) for h in PUMAS}, rate=20, timeout=15) as load:
        time.sleep(1)  # answers from before the deploy
        load.mark("deploy")
        result = project.pampa(*args, timeout=600)
        load.mark("deployed")
        time.sleep(1)
    return result, summary(load.samples, load.marks["deploy"], load.marks["deployed"])


def host_log(project, host: str) -> str:
    newest = sorted(glob.glob(str(project.root / ".pampa" / "runs" / "*")))[-1]
    with open(f"{newest}/hosts/{host}.log") as f:
        return f.read()


@pytest.mark.parametrize("strategy", ["in_place", "releases"])
@pytest.mark.parametrize("mode", ["phased", "hot"])
def test_a_deploy_under_load_refuses_no_request(project, fleet, mode, strategy):
    zero_downtime_stage(project, mode, strategy)
    old = fleet.commit(f"Release served before the {mode} restart ({strategy})")
    assert project.pampa("deploy", "test", timeout=600).returncode == 0  # every puma on this code path first
    new = fleet.commit(f"Release deployed under load ({mode}, {strategy})")

    result, load = under_load(project, fleet, "deploy", "test")

    assert result.returncode == 0, result.stdout + result.stderr
    assert load.failures == 0, (load.failed, load.window)
    for host in PUMAS:
        assert load.revisions[host].get(old, 0) > 0 and load.revisions[host].get(new, 0) > 0, (host, load.revisions)
        assert f"puma: {mode} restart done: 2 workers on the new code" in host_log(project, host)
    if (mode, strategy) == ("phased", "in_place"):
        doc_shows("operations.md", "output: restart", host_log(project, "kepler-1"))


def test_a_rollback_under_load_refuses_no_request(project, fleet):
    zero_downtime_stage(project)
    old = fleet.commit("Release rolled back to, under load")
    assert project.pampa("deploy", "test", timeout=600).returncode == 0
    new = fleet.commit("Release rolled back, under load")
    assert project.pampa("deploy", "test", timeout=600).returncode == 0

    result, load = under_load(project, fleet, "rollback", "test")

    assert result.returncode == 0, result.stdout + result.stderr
    assert load.failures == 0, (load.failed, load.window)
    for host in PUMAS:
        assert load.revisions[host].get(new, 0) > 0 and load.revisions[host].get(old, 0) > 0, (host, load.revisions)
        assert head(fleet, host) == old


def test_new_workers_that_cannot_boot_fail_kepler_hold_the_gate_and_drop_nothing(project, fleet):
    zero_downtime_stage(project, trace=True)
    good = fleet.commit("Release every puma serves before the broken one")
    assert project.pampa("deploy", "test", timeout=600).returncode == 0
    for host in fleet.hosts:
        (fleet.home(host.name) / "trace.log").unlink(missing_ok=True)
    gated = {h: (head(fleet, h), pid(fleet, h, "puma" if h.startswith("euler") else "dispatcher")) for h in GATED}
    keplers = {h: pid(fleet, h, "puma") for h in ("kepler-1", "kepler-2")}
    bad = fleet.commit("Release whose new workers cannot boot", {"config.ru": 'raise "boom: cannot boot"\n' + CONFIG_RU})
    try:
        result, load = under_load(project, fleet, "deploy", "test", "--report", "r.json")

        assert result.returncode == 1, result.stdout + result.stderr
        report = json.loads((project.root / "r.json").read_text())
        hosts = {h["name"]: h for h in report["hosts"]}
        for kepler, master in keplers.items():
            assert hosts[kepler]["failed_step"] == "restart_puma", hosts[kepler]
            assert hosts[kepler]["reason"].startswith(
                "puma: the phased restart failed: 3 new workers exited before they booted, so the new code does "
                "not boot (see puma's log); the workers from before keep serving"), hosts[kepler]["reason"]
            assert [s["name"] for s in hosts[kepler]["steps"]][-1] == "restart_puma"  # nothing after it ran
            assert head(fleet, kepler) == bad and pid(fleet, kepler, "puma") == master and alive(master)
        assert report["gate"]["state"] == "closed"
        for host in GATED:
            assert hosts[host]["result"] == "skipped" and "gate closed" in hosts[host]["reason"]
            assert trace(fleet, host) == [], f"{host} was touched"
            service = "puma" if host.startswith("euler") else "dispatcher"
            assert (head(fleet, host), pid(fleet, host, service)) == gated[host] and alive(gated[host][1])
        # Zero downtime even so: the keplers' old workers answered every request with the good release.
        assert load.failures == 0, (load.failed, load.window)
        for host in PUMAS:
            assert set(load.revisions[host]) == {good}, (host, load.revisions[host])
    finally:
        fixed = fleet.commit("Puma boots again", {"config.ru": CONFIG_RU})
        assert project.pampa("deploy", "test", timeout=600).returncode == 0
    for host in PUMAS:
        assert head(fleet, host) == fixed


def test_a_worker_that_finishes_its_job_stops_on_term_one_that_does_not_is_killed(project, fleet):
    project.stage(units={"stop_timeout": 1})
    stubborn = "Signal.trap(\"TERM\") { }\n" + PROCESS_RB.replace('Signal.trap("TERM") { stopping = true }\n', "")
    fleet.commit("A worker that ignores TERM", {"bin/worker.rb": stubborn})
    try:
        first = project.pampa("deploy", "test", "--roles", "newton", "--report", "one.json", timeout=600)
        assert first.returncode == 0, first.stdout + first.stderr
        log = host_log(project, "newton-1")
        assert "worker: stopped 0." in log and "s after TERM" in log  # the old worker finished its job
        stuck = pid(fleet, "newton-1", "worker")
        fleet.commit("Another release, while the stubborn worker runs")

        second = project.pampa("deploy", "test", "--roles", "newton", "--report", "two.json", timeout=600)

        assert second.returncode == 0, second.stdout + second.stderr
        hosts = {h["name"]: h for h in json.loads((project.root / "two.json").read_text())["hosts"]}
        assert "worker: still running 1s after TERM: killed (KILL)" in hosts["newton-1"]["notes"]
        assert not alive(stuck) and alive(pid(fleet, "newton-1", "worker"))
        assert "newton-1: worker: still running 1s after TERM: killed (KILL)" in second.stdout
    finally:
        fleet.commit("The worker stops on TERM again", {"bin/worker.rb": 'load File.join(__dir__, "process.rb")\n'})
        assert project.pampa("deploy", "test", "--roles", "newton", timeout=600).returncode == 0


@pytest.mark.parametrize("strategy", ["in_place", "releases"])
def test_check_says_each_puma_can_restart_and_names_a_config_that_cannot(project, fleet, strategy):
    zero_downtime_stage(project, "phased", strategy)
    assert project.pampa("deploy", "test", timeout=600).returncode == 0

    ready = project.pampa("check", "test", "--roles", "kepler,euler")

    assert ready.returncode == 0, ready.stdout + ready.stderr
    for host in PUMAS:
        line = next(x for x in ready.stdout.splitlines() if x.startswith(f"{host}: "))
        assert line.startswith(f"{host}: ready (") and line.endswith("MB free, puma puma: phased, 2 workers)"), line
    if strategy != "releases":
        return
    fleet.commit("A puma.rb that forgot its directory", {"config/puma.rb": PUMA_RB.replace("directory ENV", "# ENV")})
    try:
        assert project.pampa("deploy", "test", timeout=600).returncode == 0  # this restart still had it

        late = project.pampa("check", "test", "--hosts", "kepler-1")

        assert late.returncode == 4, late.stdout + late.stderr
        assert (f"kepler-1: ~/{ROOT}/pampa-demo/current/config/puma.rb sets no directory, so a phased restart of puma "
                "(puma) re-enters the folder it was started in, not the new release; add `directory "
                f"\"~/{ROOT}/pampa-demo/current\"` to config/puma.rb") in late.stdout
    finally:
        fleet.commit("The directory is back", {"config/puma.rb": PUMA_RB})
        assert project.pampa("deploy", "test", timeout=600).returncode == 0
