"""The CLI without a fleet: exit code table, help and suggestions, init -> plan, the TTY view, docs."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from pampa_deployer.cli import main
from pampa_deployer.engine import events as ev
from pampa_deployer.engine.results import HostResult, RunResult, StepResult
from pampa_deployer.errors import (
    ConfigError,
    ConnectError,
    DeployFailed,
    ExitCode,
    Interrupted,
    LockHeld,
    Refused,
    UsageError,
    exit_code_for,
)
from pampa_deployer.inventory import reference, schema
from pampa_deployer.render import summary, timeline
from pampa_deployer.render.live import LiveView

ROOT = Path(__file__).resolve().parent.parent


def test_exit_code_table():
    assert exit_code_for(DeployFailed("x")) == 1
    assert exit_code_for(ConnectError("x", "refused")) == 1
    assert exit_code_for(ConfigError("x")) == 2
    assert exit_code_for(UsageError("x")) == 2
    assert exit_code_for(LockHeld("x")) == 3
    assert exit_code_for(Refused("x")) == 4
    assert exit_code_for(Interrupted("x", signal.SIGINT)) == 130
    assert exit_code_for(Interrupted("x", signal.SIGTERM)) == 143
    assert exit_code_for(RuntimeError("bug")) == 70
    assert exit_code_for(KeyboardInterrupt()) == 130


def test_exit_code_table_is_documented():
    text = (ROOT / "docs" / "ci.md").read_text()
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \| `{code.name}` \|", text, re.M), code


def test_misspelled_subcommand_and_option_get_suggestions(capsys):
    assert main(["deplyo", "production"]) == 2
    assert "unknown command 'deplyo'; did you mean 'deploy'?" in capsys.readouterr().err
    assert main(["deploy", "production", "--paralel", "3"]) == 2
    assert "unknown option '--paralel'; did you mean '--parallel'?" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["deploy", "rollback", "plan", "check", "status", "init", "demo", "config",
                                     "exec", "logs", "run", "lock", "unlock"])
def test_every_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "example:\n  pampa " in capsys.readouterr().out


def test_main_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "pampa deploy production" in out and "exit codes:" in out


def test_init_then_plan_without_a_tty(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--app", "shop"]) == 0
    for name in ("common.yml", "production.yml", "staging.yml"):
        assert (tmp_path / "stages" / name).read_text().lstrip().startswith("#")
    capsys.readouterr()
    assert main(["plan", "production"]) == 0
    out = capsys.readouterr().out
    for role in ("kepler", "euler", "newton", "copernico"):
        assert f"[{role}]" in out
    assert "git reset --hard origin/main" in out and "~/code/shop" in out
    assert main(["init"]) == 2  # refuses to overwrite
    assert main(["stages"]) == 0 and "production" in capsys.readouterr().out


def test_production_plan_is_what_an_operator_types(tmp_path, monkeypatch, capsys):
    import shutil
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    secrets = tmp_path / "stages" / "secrets"
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "`install -m 600 stages/secrets/config.rb.example stages/secrets/config.rb`" in readme
    subprocess.run(["install", "-m", "600", str(secrets / "config.rb.example"), str(secrets / "config.rb")],
                   check=True)  # as an operator does first, as the README says
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "production", "--hosts", "kepler-1"]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # kept 0600: no warning
    expected = [
        "&& git fetch origin",  # after setting origin to the stage's repo (tests/test_commands.py)
        "source /etc/profile.d/rvm.sh && cd ~/code1/mysaas && git reset --hard origin/main",
        "upload secrets/config.rb -> ~/code1/mysaas/config.rb (mode 0600",
        "source /etc/profile.d/rvm.sh && cd ~/code1/mysaas && bundle install",
        "source /etc/profile.d/rvm.sh && cd ~/code1/mysaas && bundle exec sequel -m db/migrations $DATABASE_URL",
        "source /etc/profile.d/rvm.sh && sudo systemctl restart mysaas_app",
        "source /etc/profile.d/rvm.sh && sudo systemctl restart mysaas_dispatcher",
        "source /etc/profile.d/rvm.sh && sudo systemctl restart mysaas_jobs",
        "source /etc/profile.d/rvm.sh && sudo systemctl restart mysaas_planner",
        "check web: GET http://127.0.0.1:3000/ -> 200 (31 attempt(s) 1s apart, 5s each",
        "check processes: run 'systemctl is-active --quiet mysaas_dispatcher && ",
    ]
    positions = [out.index(line) for line in expected]
    assert positions == sorted(positions)


def _result() -> RunResult:
    t = time.time()
    ok = HostResult("kepler-1", "kepler", "ok", t, t + 2, (StepResult("git_fetch", True, t, t + 1),
                                                              StepResult("bundle", True, t + 1, t + 2)))
    bad = HostResult("newton-1", "newton", "failed", t, t + 1.5, (StepResult("migrate", False, t, t + 1.5, 3),),
                     failed_step="migrate", exit_code=3, stderr_tail="PG::ConnectionBad", reason="exit code 3")
    gated = HostResult("euler-1", "euler", "skipped", t + 2, t + 2, reason="gate closed: kepler-1 failed", gated=True)
    return RunResult("production", "deploy", "main", t, t + 3, (ok, bad, gated), gate="closed")


def test_tty_live_view_renders_with_rich_recording_console():
    console = Console(record=True, width=120, force_terminal=True, color_system="truecolor")
    view = LiveView(console)
    t = time.time()
    view(ev.RunStarted(stage="production", kind="deploy", branch="main",
                       hosts=(("kepler-1", "kepler", False), ("euler-1", "euler", True))))
    view(ev.GateChanged(state="waiting", reason="waiting for kepler"))
    view(ev.HostConnecting(host="kepler-1"))
    view(ev.StepStarted(host="kepler-1", step="migrate"))
    view(ev.Output(host="kepler-1", step="migrate", stream="stdout", line="== 2 AddVisitHost: migrating"))
    view(ev.HostWaiting(host="euler-1"))
    console.print(view.render())
    text = console.export_text()
    assert "gate: waiting for kepler" in text and "0/2 hosts done" in text
    assert re.search(r"kepler-1\W+kepler\W+running\W+migrate\W.*== 2 AddVisitHost: migrating", text)
    assert re.search(r"euler-1\W+euler\W+waiting\W+gate\W", text)
    del t


def test_summary_puts_failures_first_and_timeline_marks_slowest():
    result = _result()
    console = Console(record=True, width=140)
    summary.print_rich(result, console)
    console.print(timeline.build(result, width=60))
    text = console.export_text()
    rows = [line for line in text.splitlines() if re.match(r"^(kepler|newton|euler)", line)]
    assert rows[0].startswith("newton-1") and "exit code 3: PG::ConnectionBad" in text
    assert "slowest step: git_fetch on kepler-1" in text or "slowest step: migrate on newton-1" in text
    lines: list[str] = []
    summary.print_plain(result, lines.append)
    assert lines[1].startswith("RESULT newton-1 [newton] failed at migrate exit 3")


def test_configuration_reference_lists_every_key():
    """docs/configuration.md documents exactly the keys the validator knows, with type and default."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", text, re.M))
    known = {path for path, _ in schema.walk()}
    assert documented == known, (sorted(known - documented), sorted(documented - known))
    for path, key in schema.walk():
        row = re.search(rf"^\| `{re.escape(path)}` \| `((?:[^`])+)` \|", text, re.M)
        assert row, path
        assert row.group(1).replace("\\|", "|") == key.type, path
    # The table is generated (python -m pampa_deployer.inventory.reference): rules and choices included.
    assert reference.table() in text, "regenerate the table: python -m pampa_deployer.inventory.reference"


def test_committed_demo_stage_is_what_pampa_demo_writes():
    from pampa_deployer.cli.demo import demo_fleet, demo_stage_text
    assert (ROOT / "stages" / "demo.yml").read_text() == demo_stage_text(demo_fleet())


def test_connect_failures_are_classified_and_only_transient_ones_retried():
    import socket

    import paramiko

    from pampa_deployer.engine.backends.hostkeys import UnknownHostKey
    from pampa_deployer.engine.backends.ssh import SSHSettings, classify
    from pampa_deployer.inventory.model import Host
    host = Host("k1", "10.0.0.1", ("kepler",), 22, "root", None, "~/code/x", "main", None)
    key = paramiko.ECDSAKey.generate()
    settings = SSHSettings()
    cases = [
        (ConnectionRefusedError(111, "refused"), "refused", True),
        (socket.timeout("timed out"), "timed out", True),
        (paramiko.AuthenticationException("no"), "auth failed", False),
        (paramiko.SSHException("Error reading SSH protocol banner"), "no SSH banner", True),
        (paramiko.SSHException("Error reading SSH protocol banner[Errno 104] reset"), "no SSH banner", True),
        (paramiko.SSHException("No existing session"), "unresponsive", False),
        (paramiko.SSHException("kex failed"), "handshake failed", True),
        (socket.gaierror(-2, "Name or service not known"), "name not resolved", False),
    ]
    for error, reason, retry in cases:
        got = classify(error, host, settings)
        assert (got.reason, got.retryable) == (reason, retry), error
        assert got.message.startswith("k1 (10.0.0.1:22): ")
    # A banner that never came within the connect timeout: a frozen host or not an SSH port; no retry.
    slow = classify(paramiko.SSHException("Error reading SSH protocol banner"), host, settings, elapsed=10.0)
    assert (slow.reason, slow.retryable) == ("no SSH banner", False)
    assert "(is this port an SSH server?" in slow.message
    unknown = classify(UnknownHostKey("[10.0.0.1]:22", key, "kh"), host, settings)
    assert unknown.reason == "unknown host key" and not unknown.retryable
    changed = classify(paramiko.BadHostKeyException("h", key, key), host, settings)
    assert changed.reason == "host key mismatch" and not changed.retryable


def test_production_plan_without_the_secret_file_says_what_to_do(monkeypatch, capsys):
    import shutil
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(ROOT / "stages", f"{tmp}/stages", ignore=shutil.ignore_patterns("config.rb"))
        monkeypatch.chdir(tmp)
        assert main(["plan", "production"]) == 2
    assert ("stages/production.yml: secrets[0].local: secret file 'secrets/config.rb' not found "
            "(looked for stages/secrets/config.rb); create it or fix the path") in capsys.readouterr().err


def test_run_finished_stops_the_live_view_then_the_summary_prints_below_it(tmp_path):
    """Renderers are subscribers all the way: the end of the run reaches each through the bus."""
    import io

    from pampa_deployer.render.report import ReportWriter
    from pampa_deployer.render.summary import SummaryPrinter

    out = io.StringIO()
    console = Console(file=out, width=140, force_terminal=True, color_system=None)
    bus = ev.EventBus()
    view = LiveView(console)
    bus.subscribe(view)
    bus.subscribe(SummaryPrinter(console, plain=False))
    bus.subscribe(ReportWriter(tmp_path / "r.json", tmp_path / "r.xml"))
    result = _result()
    with view:
        bus.emit(ev.RunStarted(stage="production", kind="deploy", branch="main",
                               hosts=(("kepler-1", "kepler", False),)))
        assert view.live.is_started
        bus.emit(ev.RunFinished(result=result, exit_code=1))
        assert not view.live.is_started
    text = out.getvalue()
    assert text.rindex("deploy of production: 1 ok, 1 failed, 1 skipped") > text.rindex("0/1 host done")
    assert "slowest step" in text
    assert json.loads((tmp_path / "r.json").read_text())["exit_code"] == 1
    assert 'failures="1"' in (tmp_path / "r.xml").read_text()


def test_usr1_prints_where_every_thread_waits_and_pampa_goes_on(tmp_path):
    """docs/operations.md: `kill -USR1 PID` shows where a stuck pampa waits, without stopping it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def catches_usr1(pid: int) -> bool:
        caught = next(line for line in open(f"/proc/{pid}/status") if line.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) & (1 << (signal.SIGUSR1 - 1)))

    import threading
    proc = subprocess.Popen([sys.executable, "-m", "pampa_deployer", "access-point", "serve", "--port", "0",
                             "--db", str(tmp_path / "ap.sqlite3")], env={**os.environ, "PAMPA_AP_KEY": "k" * 24},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    try:
        assert "pampa access point on http://" in proc.stdout.readline()  # printed just before it serves
        limit = time.monotonic() + 60
        while not catches_usr1(proc.pid) and time.monotonic() < limit:  # a USR1 before that would end it
            time.sleep(0.05)
        # Each USR1 prints every thread's stack; the main thread is in its serving loop once it is there
        # (on a busy machine that can take a moment after the line above): ask until it is, within a bound.
        while "serve_forever" not in "".join(err) and proc.poll() is None and time.monotonic() < limit:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
        assert proc.poll() is None  # it goes on
    finally:
        proc.terminate()
        proc.wait(30)
    text = "".join(err)
    assert "most recent call first" in text and "serve_forever" in text, text


def test_each_command_is_declared_by_the_function_its_entry_names():
    """COMMANDS names each command's module and declaring function; that function declares that command only."""
    from pampa_deployer.cli import COMMANDS, build_parser
    for name in COMMANDS:
        parser = build_parser(only=name)
        assert list(parser.commands) == [name], name
        assert callable(parser.commands[name].get_default("handler")), name
    assert list(build_parser().commands) == list(COMMANDS)  # `pampa --help` lists them in this order


def test_a_light_command_imports_only_its_own_module(tmp_path):
    """`pampa stages` starts without the SSH, server, agent, engine and Invoke modules (start-up time)."""
    code = ("import sys; from pampa_deployer.cli import main; main(['stages']); "
            "print('LOADED', *(m for m in sys.modules if m.startswith(('paramiko', 'fabric', 'pampa_deployer.server', "
            "'pampa_deployer.agent', 'pampa_deployer.engine.deployment', 'invoke'))))")
    (tmp_path / "stages").mkdir()
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "LOADED", done.stdout + done.stderr
