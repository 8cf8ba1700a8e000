"""Output at real sizes and outside a terminal: copyable plan lines, plain tables, --json, grammar."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pampa_deployer.cli import main
from pampa_deployer.engine import events as ev
from pampa_deployer.render.plain import PlainRenderer
from pampa_deployer.render.tables import plain
from pampa_deployer.render.telling import telling_line
from pampa_deployer.render.words import count

LONG = "bundle exec rake assets:precompile RAILS_ENV=production " + "--option-number-{} ".format(1) * 12
STAGE = f"""\
app: shop
repo: git@example.com:shop.git
vars: {{flags: [a, b]}}
steps:
  assets: {{run: '{LONG.strip()}', roles: [newton], after: bundle}}
hosts:
  kepler-1: {{address: 10.0.0.1, roles: [kepler]}}
  newton-1: {{address: 10.0.0.2, roles: [newton]}}
"""
BOX = set("│├└─┃┏┓┗┛━┡┩╇┳┻╋┠┨┯┷")


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "production.yml").write_text(STAGE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pampa(cwd, *args, columns="80"):
    env = {**os.environ, "COLUMNS": columns}
    return subprocess.run([sys.executable, "-m", "pampa_deployer", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)


def test_plan_lines_are_copyable_at_80_columns(project):
    """docs: `pampa plan` shows the exact commands an operator types; a long one stays one line, no tree."""
    out = pampa(project, "plan", "production").stdout
    assert not BOX & set(out)
    assert f"    cd ~/code/shop && {LONG.strip()}" in out.splitlines()
    assert "    cd ~/code/shop && git reset --hard origin/main" in out.splitlines()


def test_plan_json(project, capsys):
    assert main(["plan", "production", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stage"] == "production" and data["branch"] == "main"
    newton = next(h for h in data["hosts"] if h["name"] == "newton-1")
    assert newton["gated"] is False and newton["roles"] == ["newton"]
    assets = next(s for s in newton["steps"] if s["name"] == "assets")
    assert assets["custom"] is True and assets["actions"] == [f"cd ~/code/shop && {LONG.strip()}"]


def test_config_outside_a_terminal_is_plain_and_has_no_python_reprs(project):
    out = pampa(project, "config", "production").stdout
    assert not BOX & set(out)
    lines = out.splitlines()
    assert lines[1].split() == ["key", "value", "from"]
    flags = next(line for line in lines if line.startswith("vars.flags "))
    assert '["a", "b"]' in flags and "['a'" not in out
    assert next(line for line in lines if line.startswith("bundler.update ")).split()[1] == "false"


def test_config_json(project, capsys):
    assert main(["config", "production", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["key"]: r for r in data["rows"]}
    assert rows["vars.flags"]["value"] == ["a", "b"] and rows["port"]["value"] == 22
    assert rows["app"]["from"] == "stages/production.yml"


def test_config_shows_list_entries_that_are_mappings(project, capsys):
    """`secrets` is a list of mappings: `pampa config` shows each entry (paths are never masked), not `{}`."""
    (project / "stages" / "secrets").mkdir()
    (project / "stages" / "secrets" / "config.rb").write_text("API_TOKEN = 's3cret-value-123'\n")
    stage = project / "stages" / "production.yml"
    stage.write_text(stage.read_text() + "secrets:\n  - {local: secrets/config.rb, remote: config.rb}\n")
    assert main(["config", "production", "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    entry = rows["secrets"]["value"][0]
    assert entry["local"] == "secrets/config.rb" and entry["remote"] == "config.rb"
    line = next(line for line in pampa(project, "config", "production").stdout.splitlines()
                if line.startswith("secrets "))
    assert '"local": "secrets/config.rb"' in line and "[{}]" not in line and "s3cret" not in line


def test_stages_plain_and_json(project, capsys):
    out = pampa(project, "stages").stdout
    assert out.splitlines()[0].split() == ["stage", "file", "hosts", "roles"] and not BOX & set(out)
    assert main(["stages", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0] == {"stage": "production", "file": "stages/production.yml",
                                                             "hosts": 2, "roles": "kepler,newton"}


def test_output_closed_early_is_not_a_crash(project):
    """`pampa plan prod | head -1`: exit 141 without a word on stderr."""
    proc = subprocess.Popen(f"{sys.executable} -m pampa_deployer config production | head -1", shell=True,
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            executable="/bin/bash", env={**os.environ, "PAMPA_BIG": "1"})
    out, err = proc.communicate(timeout=60)
    assert out.startswith("stage production") and "internal error" not in err and "Traceback" not in err


def test_counts_say_one_host():
    assert count(1, "host") == "1 host" and count(0, "host") == "0 hosts" and count(3, "entry") == "3 entries"
    lines: list[str] = []

    class Out:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    PlainRenderer(Out())(ev.RunStarted(at=0.0, kind="deploy", stage="p", branch="main",
                                       hosts=(("kepler-1", "kepler", False),), dry_run=False))
    assert "to 1 host, 0 gated" in lines[0]


def test_plain_table_keeps_long_cells_whole():
    rows = plain(["a", "b"], [["x", "y" * 300], ["longer", "two\nlines"]])
    assert rows[1] == "x       " + "y" * 300 and rows[2] == "longer  two | lines"


def test_failing_git_shows_its_fatal_line_not_the_usage_hint():
    stderr = ("fatal: ambiguous argument 'origin/nope': unknown revision or path not in the working tree.\n"
              "Use '--' to separate paths from revisions, like this:\n"
              "'git <command> [<revision>...] -- [<file>...]'\n")
    assert telling_line(stderr).startswith("fatal: ambiguous argument 'origin/nope'")
    assert telling_line("compiling\nbundler: command not found: rake\nInstall missing gem\n") == \
        "bundler: command not found: rake"
    assert telling_line("just one line\n") == "just one line"
    assert telling_line("") == ""


def _live_screen(width: int, height: int, hosts: int = 60):
    import io
    import time

    from rich.console import Console

    from pampa_deployer.engine.results import HostResult
    from pampa_deployer.render.live import LiveView
    buf = io.StringIO()
    console = Console(file=buf, width=width, height=height, force_terminal=True, color_system=None)
    view = LiveView(console)
    names = [f"copernico-worker-{i:02d}" for i in range(1, hosts + 1)]
    now = time.time()
    view(ev.RunStarted(at=now, stage="production", kind="deploy", branch="main",
                       hosts=tuple((n, "copernico", True) for n in names)))
    for i, name in enumerate(names):
        view(ev.HostConnecting(at=now - 75, host=name))
        if i < 45:
            view(ev.StepStarted(at=now, host=name, step="git_reset"))
            view(ev.HostFinished(at=now, host=name, result=HostResult(name, "copernico", "ok", now - 75, now)))
        elif i < 50:
            view(ev.StepStarted(at=now, host=name, step="restart_processes"))
            view(ev.Output(at=now, host=name, step="restart_processes", stream="stdout",
                           line="HEAD is now at 3f2a9c1b7d4e6f8a9b0c1d2e3f4a5b6c7d8e9f01 Deploy"))
    for name in names[-3:]:  # the last hosts of the list fail: they must still be on screen
        view(ev.StepStarted(at=now, host=name, step="bundle"))
        view(ev.HostFinished(at=now, host=name, result=HostResult(name, "copernico", "failed", now - 75, now,
                                                                  failed_step="bundle", reason="exit code 5")))
    console.print(view.render())
    return buf.getvalue().splitlines(), names


@pytest.mark.parametrize("width,height", [(80, 24), (100, 30), (200, 50)])
def test_live_view_fits_the_terminal_failures_and_running_first(width, height):
    lines, names = _live_screen(width, height)
    assert len(lines) <= height - 1
    assert all(len(line) <= width for line in lines)
    body = "\n".join(lines)
    for name in names[-3:]:  # every failed host, in full, with its state, step and elapsed time
        row = next(line for line in lines if line.startswith(name + " "))
        words = row.split()
        assert words[words.index("failed"):words.index("failed") + 3] == ["failed", "bundle", "75.0s"], row
    running = [line for line in lines if " running " in line]
    assert running and all(line.split()[0] in names for line in running)
    first_ok = next((i for i, line in enumerate(lines) if " ok " in line), len(lines))
    assert all(i < first_ok for i, line in enumerate(lines) if " failed " in line or " running " in line)
    if len(names) > height:
        assert "more: " in body and "ok" in lines[-1]


def test_live_view_summary_counts_every_hidden_host():
    lines, names = _live_screen(80, 24)
    shown = [line for line in lines if line.split() and line.split()[0] in names]
    summary = lines[-1]
    import re
    hidden = int(re.search(r"\+ (\d+) more", summary).group(1))
    assert hidden + len(shown) == len(names)
    assert sum(int(n) for n in re.findall(r"(\d+) (?:ok|queued|running|failed)", summary.split(":", 1)[1])) == hidden


def test_run_directory_holds_a_host_log_open_only_while_the_host_runs(tmp_path):
    """Issue 24: open files follow the hosts in flight, not the fleet (a thousand finished hosts held a
    thousand files). A line after the host finished is still appended to its log."""
    from pampa_deployer.engine.results import HostResult
    from pampa_deployer.render.rundir import RunDirectory

    def open_logs() -> list[str]:
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                found.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                continue
        return [path for path in found if path.startswith(str(tmp_path)) and path.endswith(".log")
                and "/hosts/" in path]

    run = RunDirectory(tmp_path / "runs", "production", "deploy")
    for n in range(3):
        run(ev.CommandStarted(host=f"h{n}", step="git_fetch", display="git fetch"))
    assert len(open_logs()) == 3
    run(ev.HostFinished(host="h1", result=HostResult("h1", "newton", "ok", 0.0, 1.0)))
    assert sorted(path.rsplit("/", 1)[1] for path in open_logs()) == ["h0.log", "h2.log"]
    run(ev.Output(host="h1", step="report_version", stream="stdout", line="later"))
    run.close()
    assert open_logs() == []
    text = (run.path / "hosts" / "h1.log").read_text()
    assert "result: ok" in text and text.rstrip().endswith("[report_version] stdout: later")
