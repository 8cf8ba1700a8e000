"""CI mode, the JSON report and the JUnit file of real deploys to the fleet, parsed and checked."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest
from conftest import head, in_background, running, trace

pytestmark = pytest.mark.fleet

LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (\S+) (\S+) (.+)$")


def test_ci_output_report_and_junit(project, fleet, tmp_path):
    project.stage(steps={"break_newton": {"run": "echo 'disk full' >&2; exit 7", "roles": ["newton"],
                                          "after": "bundle"}})
    project.edit("test", lambda d: d["steps"]["break_newton"].update(run="test $PAMPA_HOST != newton-2 || "
                                                                         "{{ echo 'disk full' >&2; exit 7; }}"))
    new = fleet.commit("Release for the report test")
    report, junit = tmp_path / "deploy.json", tmp_path / "deploy.xml"

    result = project.pampa("deploy", "test", "--report", str(report), "--junit", str(junit))

    assert result.returncode == 1
    # CI output: plain lines, time host step message; no colour codes, no spinners.
    assert "\x1b[" not in result.stdout
    events = [line for line in result.stdout.splitlines() if LINE.match(line)]
    assert events and all(LINE.match(line) for line in events)
    assert any(re.search(r" kepler-1 git_fetch start$", line) for line in events)
    assert any(re.search(r" newton-2 break_newton FAILED \(exit code 7\): disk full$", line) for line in events)
    assert any(" - gate open: every kepler host finished" in line for line in events)

    data = json.loads(report.read_text())
    assert data["schema"] == 1 and data["stage"] == "test" and data["branch"] == "main"
    assert data["revision"] == new and data["result"] == "failed" and data["exit_code"] == 1
    hosts = {h["name"]: h for h in data["hosts"]}
    assert set(hosts) == {h.name for h in fleet.hosts}
    bad = hosts["newton-2"]
    assert bad["result"] == "failed" and bad["failed_step"] == "break_newton" and bad["exit_code"] == 7
    assert bad["stderr_tail"] == "disk full"
    assert [s["name"] for s in hosts["kepler-1"]["steps"]] == [
        "git_fetch", "git_reset", "secrets", "bundle", "migrate", "restart_puma", "restart_processes",
        "report_version", "open_gate"]
    for step in hosts["kepler-1"]["steps"]:
        assert step["result"] == "ok" and step["exit_code"] == 0 and step["started"] <= step["ended"]
    # Gated hosts connect early, but their first step starts after the gate opened.
    assert hosts["euler-1"]["steps"][0]["started"] >= data["gate"]["opened"]
    assert hosts["newton-1"]["revision_after"] == new == head(fleet, "newton-1")

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == str(len(fleet.hosts)) and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["newton-2"].find("failure").get("message").startswith("break_newton: exit code 7")
    assert cases["kepler-1"].find("failure") is None

    # The run directory holds each host's full log, the report and the timeline.
    run_dir = next((project.root / ".pampa" / "runs").iterdir())
    assert "disk full" in (run_dir / "hosts" / "newton-2.log").read_text()
    assert json.loads((run_dir / "report.json").read_text())["exit_code"] == 1
    assert (run_dir / "timeline.svg").read_text().startswith("<svg")


def test_verbose_streams_output_prefixed_by_host(project, fleet):
    project.stage()
    result = project.pampa("deploy", "test", "-v", "--hosts", "newton-1", "--no-skip")  # bundler runs and says so
    assert result.returncode == 0
    assert re.search(r" newton-1 bundle \| Bundle complete!", result.stdout)
    assert re.search(r" newton-1 git_reset \$ .*git reset --hard origin/main", result.stdout)


def test_batches_and_max_fail(project, fleet):
    project.stage(steps={"fail_newtons": {"run": "exit 1", "roles": ["newton"], "after": "git_reset"}})
    result = project.pampa("deploy", "test", "--roles", "newton", "--batch", "1", "--max-fail", "1")
    assert result.returncode == 1
    assert "max-fail reached (1 failed host): no new hosts started" in result.stdout
    assert "batch 1/2 starts: 1 host (newton-1)" in result.stdout  # batch boundaries are printed
    assert "RESULT newton-1 [newton] failed at fail_newtons" in result.stdout
    assert re.search(r"RESULT newton-2 \[newton\] skipped .*max-fail reached", result.stdout)


def test_straggler_does_not_hold_back_other_hosts(project, fleet):
    """newton-1's migration runs until the test lets it go, which the test does only once every other
    host has finished its whole deploy: were any host held back by the straggler, it would never finish
    and the straggler would fail after 120 s. No duration is measured."""
    project.stage(trace=True, steps={"migrate": {"run": "test $PAMPA_HOST != newton-1 || timeout 120 sh -c "
                                                        "'until test -e ~/go-4108; do sleep 0.1; done' && "
                                                        "bundle exec sequel -m db/migrations $DATABASE_URL"}})
    others = [h.name for h in fleet.hosts if h.name != "newton-1"]
    go = fleet.home("newton-1") / "go-4108"
    try:
        with in_background(project, fleet, "deploy", "test", until="newton-1 migrate start",
                           leftovers=("newton-1", "go-4108")) as run:
            run.read_until_all({f" {name} - OK " for name in others})
            straggling = running(fleet, "newton-1", "go-4108")  # on the host: its migration still waits
            go.touch()
            run.finish(timeout=120)
    finally:
        go.unlink(missing_ok=True)
    assert run.returncode == 0, run.output + run.err
    assert straggling, "newton-1's migration had ended before the other hosts finished"
    # The hosts' own clocks agree: every other host's last command ended before the straggler's migration did.
    migration_end = max(trace(fleet, "newton-1"), key=lambda span: span[1] - span[0])[1]
    for name in others:
        assert trace(fleet, name)[-1][1] < migration_end, f"{name} finished after the straggler's migration"


def test_a_refused_deploy_and_rollback_still_write_report_junit_and_run_directory(project, fleet):
    """docs/ci.md: the lock is held, so the deploy is refused (exit 3) before it touches a host; the CI
    artifacts exist anyway, saying `refused`, the reason, and that no host was touched."""
    project.stage()
    before = {h.name: head(fleet, h.name) for h in fleet.hosts}
    missing = project.pampa("rollback", "test", "--to", "0" * 40, "--report", "missing.json")
    assert missing.returncode == 4 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    report = json.loads((project.root / "missing.json").read_text())
    assert report["result"] == "refused" and "is not present on" in report["reason"] and report["revision"] is None
    assert {h["result"] for h in report["hosts"]} == {"skipped"}
    held = project.pampa("lock", "acquire", "test", "-m", "db maintenance")
    assert held.returncode == 0, held.stdout + held.stderr
    try:
        for command in ("deploy", "rollback"):
            runs = project.root / ".pampa" / "runs"
            seen = set(runs.iterdir()) if runs.is_dir() else set()
            target = ("--to", before["kepler-1"]) if command == "rollback" else ()  # a target every host has
            result = project.pampa(command, "test", *target, "--report", f"{command}.json", "--junit",
                                   f"{command}.xml")
            assert result.returncode == 3, result.stdout + result.stderr
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and "locked" in lines[0] and "Traceback" not in result.stderr, result.stderr
            report = json.loads((project.root / f"{command}.json").read_text())
            assert (report["result"], report["exit_code"], report["kind"]) == ("refused", 3, command)
            assert "locked" in report["reason"] and "db maintenance" in report["reason"]
            assert sorted(h["name"] for h in report["hosts"]) == sorted(h.name for h in fleet.hosts)
            assert all(h["result"] == "skipped" and h["steps"] == [] and h["revision_after"] is None
                       for h in report["hosts"])
            suite = ET.parse(project.root / f"{command}.xml").getroot().find("testsuite")
            assert suite.get("tests") == str(len(fleet.hosts)) and suite.get("skipped") == suite.get("tests")
            new = [p for p in runs.iterdir() if p not in seen]
            assert len(new) == 1 and json.loads((new[0] / "report.json").read_text())["result"] == "refused"
    finally:
        project.pampa("unlock", "test", "--force", "-m", "test cleanup")
    assert {h.name: head(fleet, h.name) for h in fleet.hosts} == before  # nothing was touched
