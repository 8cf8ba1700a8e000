"""`pampa deploy --canary` on the real fleet: the first host(s) of each role go first, and what the other
hosts saw (nothing at all, or commands only after the canary and its wait) is read from the hosts."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest
from conftest import doc_shows, head, trace
from releasefleet import WEB

pytestmark = pytest.mark.fleet


def revlog_lines(fleet, name: str) -> list[str]:
    path = fleet.code(name).parent / f"{fleet.app}.revisions.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def start_record(fleet, name: str) -> tuple[str, float] | None:
    path = fleet.code(name).parent / f"{fleet.app}.deploying.json"
    return (path.read_text(), path.stat().st_mtime) if path.exists() else None


def untouched_state(fleet, names):
    return {n: (head(fleet, n), revlog_lines(fleet, n), start_record(fleet, n)) for n in names}


def test_a_failing_canary_leaves_every_other_host_untouched(project, fleet):
    project.stage(trace=True, steps={"disk_check": {"run": "test $PAMPA_HOST != kepler-1", "roles": ["kepler"],
                                                    "after": "git_reset"}})
    fleet.commit("A release the canary refuses")
    rest = ("kepler-2", "newton-2")
    before = untouched_state(fleet, rest)

    result = project.pampa("deploy", "test", "--roles", "kepler,newton", "--canary", "1", "--report", "r.json")

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "pampa: error: deploy of test stopped at the canary: kepler-1 failed at disk_check; 2 hosts were not "
        "touched: kepler-2, newton-2"]
    # On the hosts themselves: no command ran (trace), the checkout, the revision log and the start record
    # are as they were: the rest was never even connected to.
    for name in rest:
        assert trace(fleet, name) == [], name
    assert untouched_state(fleet, rest) == before
    assert "kepler-2 connect" not in result.stdout and "newton-2 connect" not in result.stdout
    assert trace(fleet, "kepler-1") and trace(fleet, "newton-1")  # the canary did run
    report = json.loads((project.root / "r.json").read_text())
    assert report["canary"] == {"hosts": ["kepler-1", "newton-1"], "rest": ["kepler-2", "newton-2"],
                                "result": "failed", "reason": "kepler-1 failed at disk_check"}
    assert "the deploy stopped at the canary: kepler-1 failed at disk_check" in report["notes"]
    skipped = {h["name"]: h for h in report["hosts"] if h["result"] == "skipped"}
    assert set(skipped) == set(rest) and all(h["steps"] == [] for h in skipped.values())
    assert "canary FAILED: kepler-1 failed at disk_check; not touched: kepler-2, newton-2" in result.stdout


def test_the_rest_waits_for_the_canary_and_its_wait_and_the_gate_still_holds(project, fleet):
    project.stage("production", trace=True, checks={"web": WEB})
    release = fleet.commit("A release tried on one host of each role first")

    result = project.pampa("deploy", "production", "--canary", "1", "--canary-wait", "2", "-m", "canary of 41")

    assert result.returncode == 0, result.stdout + result.stderr
    canary = ("kepler-1", "kepler-2", "euler-1", "newton-1", "copernico-1")  # every kepler: the run has gated roles
    spans = {h.name: trace(fleet, h.name) for h in fleet.hosts}
    keplers_done = max(end for name in ("kepler-1", "kepler-2") for _, end in spans[name])
    for gated in ("euler-1", "copernico-1"):  # the gate holds inside the canary
        assert min(start for start, _ in spans[gated]) > keplers_done, gated
    canary_done = max(end for name in canary for _, end in spans[name])
    rest_start = min(start for start, _ in spans["newton-2"])
    assert rest_start - canary_done >= 2.0  # the rest waited for the whole canary, health checks included, and 2 s
    assert {head(fleet, h) for h in ("kepler-1", "kepler-2", "newton-1", "newton-2")} == {release}
    assert "canary started on kepler-1, kepler-2, newton-1, euler-1, copernico-1; 1 host waits for it" in result.stdout
    assert "euler-1 health_check ok" in result.stdout
    doc_shows("operations.md", "output: canary", result.stdout)


def _pty_deploy(project, answer: str, *args: str, ci: bool) -> tuple[int, str]:
    """``pampa deploy`` on a pseudo-terminal (stdin and stdout are a TTY), answering the canary's question."""
    env = {**os.environ}
    env.pop("CI", None)
    if ci:
        env["CI"] = "1"  # plain lines, still at a terminal
    env.update(COLUMNS="160", LINES="40", TERM="xterm")
    main, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pampa_deployer", "deploy", "test", *args], cwd=project.root,
                            env=env, stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    seen, asked, deadline = b"", False, time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the other side closed: pampa ended
                    break
                if not chunk:
                    break
                seen += chunk
                if not asked and b"[y/N]" in seen:
                    os.write(main, answer.encode() + b"\n")
                    asked = True
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=60), seen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)


def test_canary_pause_asks_at_the_terminal_and_no_leaves_the_rest_untouched(project, fleet):
    project.stage(trace=True)
    fleet.commit("A release the operator looks at before the rest")
    rest = ("kepler-2", "newton-2")
    before = untouched_state(fleet, rest)
    code, seen = _pty_deploy(project, "n", "--roles", "kepler,newton", "--canary", "1", "--canary-pause", ci=True)
    assert code == 1, seen
    assert "canary passed on kepler-1, newton-1. Deploy the other 2 hosts (kepler-2, newton-2)? [y/N]" in seen
    assert "stopped at the canary: the canary passed, but going on was not confirmed at the terminal" in seen
    assert untouched_state(fleet, rest) == before and all(trace(fleet, name) == [] for name in rest)

    release = fleet.commit("The same, confirmed this time")
    code, seen = _pty_deploy(project, "y", "--roles", "kepler,newton", "--canary", "1", "--canary-pause", ci=False)
    assert code == 0, seen  # the live view, paused for the question, then on to the end
    assert {head(fleet, h) for h in ("kepler-1", "kepler-2", "newton-1", "newton-2")} == {release}


def test_canary_bad_input_is_one_line(project, fleet):
    project.stage()
    for args, words in [(("--canary", "0"), "argument --canary: expected a positive count or a percentage"),
                        (("--canary-wait", "5"), "--canary-wait needs --canary N"),
                        (("--canary", "1", "--canary-pause"), "--canary-pause asks at a terminal, and there is none"),
                        (("--canary", "1", "--canary-wait", "-1"), "argument --canary-wait:"),
                        (("--canary", "1", "--canary-pause", "--canary-wait", "3"), "not both")]:
        result = project.pampa("deploy", "test", *args)
        assert result.returncode == 2 and words in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
