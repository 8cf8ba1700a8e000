"""Health checks on the real fleet: a broken boot keeps the gate closed, a dying worker fails its host."""
from __future__ import annotations

import json
import urllib.request
import xml.etree.ElementTree as ET

import pytest
from conftest import alive, head, pid, trace

from pampa_deployer.cli.demo import DEMO_CHECKS

pytestmark = pytest.mark.fleet

GATED = ["euler-1", "copernico-1"]
CONFIG_RU = (__import__("pampa_deployer.fleet", fromlist=["APP_SOURCE"]).APP_SOURCE / "config.ru").read_text()
WORKER_RB = 'load File.join(__dir__, "process.rb")\n'

#: The checks the demo stage uses: puma answers with the revision just deployed; processes keep beating.
WEB, WORKER = DEMO_CHECKS["web"], DEMO_CHECKS["workers"]


def serving(fleet, name: str) -> str:
    with urllib.request.urlopen(f"http://{fleet.host(name).address}:9292/", timeout=10) as answer:
        return answer.read().decode()


def test_the_demo_checks_pass_on_a_good_release(project, fleet):
    project.stage(checks=DEMO_CHECKS)
    new = fleet.commit("A good release, checked")

    result = project.pampa("deploy", "test", "--report", "r.json")

    assert result.returncode == 0, result.stdout + result.stderr
    for host in json.loads((project.root / "r.json").read_text())["hosts"]:
        assert "health_check" in [s["name"] for s in host["steps"]], host["name"]
    assert f"revision={new}" in serving(fleet, "kepler-1")


def test_app_that_fails_to_boot_on_kepler_keeps_the_gate_closed(project, fleet):
    # A full restart (stop, then start) returns before puma boots: the health check is what catches it.
    # A phased restart catches it itself (tests/test_zero_downtime_fleet.py).
    project.stage(trace=True, checks={"web": WEB}, units={"puma_restart": "full"})
    assert project.pampa("deploy", "test").returncode == 0  # every puma up on a good release first
    for host in fleet.hosts:
        (fleet.home(host.name) / "trace.log").unlink(missing_ok=True)
    gated = {h: (head(fleet, h), pid(fleet, h, "puma" if h.startswith("euler") else "dispatcher")) for h in GATED}
    bad = fleet.commit("Release whose puma cannot boot", {"config.ru": 'raise "boom: cannot boot"\n' + CONFIG_RU})
    try:
        result = project.pampa("deploy", "test", "--report", "r.json", "--junit", "j.xml")

        assert result.returncode == 1, result.stdout + result.stderr
        for kepler in ("kepler-1", "kepler-2"):
            assert head(fleet, kepler) == bad  # restarted "ok" by systemd's standards, but not serving
            assert f"RESULT {kepler} [kepler] failed at health_check" in result.stdout
        report = json.loads((project.root / "r.json").read_text())
        hosts = {h["name"]: h for h in report["hosts"]}
        assert hosts["kepler-1"]["reason"].startswith("health check 'web' failed after 21 attempts")
        assert hosts["kepler-1"]["steps"][-1]["name"] == "health_check"  # no version reported, no gate
        assert "status 000" in hosts["kepler-1"]["reason"]  # the last response: nothing listens
        assert report["gate"]["state"] == "closed"
        for host in GATED:
            assert hosts[host]["result"] == "skipped" and "gate closed" in hosts[host]["reason"]
            assert trace(fleet, host) == [], f"{host} was touched"
            service = "puma" if host.startswith("euler") else "dispatcher"
            assert (head(fleet, host), pid(fleet, host, service)) == gated[host]
            assert alive(gated[host][1])
        assert "revision=" in serving(fleet, "euler-1")  # the division still serves what it had
        case = next(c for c in ET.parse(project.root / "j.xml").iter("testcase") if c.get("name") == "kepler-1")
        assert case.find("failure").get("message").startswith("health_check: health check 'web' failed")
    finally:
        fixed = fleet.commit("Puma boots again", {"config.ru": CONFIG_RU})
        assert project.pampa("deploy", "test").returncode == 0
    assert f"revision={fixed}" in serving(fleet, "kepler-1")


def test_worker_exiting_right_after_start_fails_its_host(project, fleet):
    project.stage(checks={"worker": WORKER})
    fleet.commit("Release whose worker dies", {"bin/worker.rb": 'abort "worker: missing API key"\n'})
    try:
        result = project.pampa("deploy", "test", "--roles", "newton", "--report", "r.json")

        assert result.returncode == 1, result.stdout + result.stderr
        hosts = {h["name"]: h for h in json.loads((project.root / "r.json").read_text())["hosts"]}
        for newton in ("newton-1", "newton-2"):
            assert hosts[newton]["result"] == "failed" and hosts[newton]["failed_step"] == "health_check"
            assert hosts[newton]["reason"].startswith("health check 'worker' failed")
            assert not alive(pid(fleet, newton, "worker"))
            assert [s["name"] for s in hosts[newton]["steps"]][-2:] == ["restart_workers", "health_check"]
    finally:
        fleet.commit("Worker runs again", {"bin/worker.rb": WORKER_RB})
        fixed = project.pampa("deploy", "test", "--roles", "newton")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert alive(pid(fleet, "newton-1", "worker"))


def test_check_passing_after_two_retries_succeeds(project, fleet):
    counter = "~/check-attempts"
    project.stage(checks={"warm": {"roles": ["newton"], "interval": 0.2, "retries": 4, "run":
                                   f"n=$(($(cat {counter} 2>/dev/null || echo 0)+1)); echo $n > {counter}; "
                                   "echo \"attempt $n\"; [ $n -ge 3 ]"}})
    for newton in ("newton-1", "newton-2"):
        (fleet.home(newton) / "check-attempts").unlink(missing_ok=True)

    result = project.pampa("deploy", "test", "--roles", "newton")

    assert result.returncode == 0, result.stdout + result.stderr
    for newton in ("newton-1", "newton-2"):
        assert (fleet.home(newton) / "check-attempts").read_text() == "3\n"
    (run,) = (project.root / ".pampa" / "runs").iterdir()
    log = (run / "hosts" / "newton-1.log").read_text()
    assert "check warm: attempt 2/5: exit 1: attempt 2" in log and "check warm: passed on attempt 3/5" in log
