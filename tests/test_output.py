"""Output at real sizes and outside a terminal: copyable plan lines, plain tables, --json, grammar."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from pampa_deployer.cli import main
from pampa_deployer.commands import Command
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


def test_a_line_in_a_pipe_is_never_broken(capsys):
    """Issue 22: outside a terminal a long line (a lock status, a note) was cut at 160 columns; grep finds
    a line only whole."""
    import argparse

    from pampa_deployer.cli import output
    line = "stage production lock on kepler-1: held by ana@laptop (pid 4121) since 2026-11-26T08:27:21Z, " + "x" * 200
    output.console(argparse.Namespace(ci=True)).print(line)
    assert capsys.readouterr().out == line + "\n"


def test_config_in_a_pipe_pads_short_values_only_as_far_as_they_need(project):
    """Issue 22: one 300-character value padded every line of `pampa config` to 323 characters."""
    stage = project / "stages" / "production.yml"
    stage.write_text(stage.read_text() + "env: {LONG_FLAGS: '" + "--flag " * 40 + "'}\n")
    lines = pampa(project, "config", "production").stdout.splitlines()
    long_line = next(line for line in lines if line.startswith("env.LONG_FLAGS "))
    assert long_line.endswith("  stages/production.yml") and "--flag " * 40 in long_line
    branch = next(line for line in lines if line.startswith("branch "))
    assert branch.split() == ["branch", "main", "default"] and len(branch) < 100
    import re
    rows = [(line, re.split(r"  +", line)) for line in lines[2:] if not line.startswith("merge order")]
    assert all(len(line) <= 40 + 2 + 40 + 2 + len(cells[-1]) for line, cells in rows if len(cells[1]) <= 40)


# -- issue 22: output at 80 columns and in pipes --------------------------------------------------------
def _status_rows() -> list[dict]:
    base = {"reachable": True, "revision": "343cd0ecbe2a19a48c15fbcdb4e9c896a9c49a8a", "branch": "main",
            "subject": "Record the host of each visit in the database", "last_deploy": "2026-11-26T08:27:21Z",
            "last_result": "ok", "last_step": None, "last_user": "ana", "drift": False, "interrupted": False,
            "incomplete": None, "access_point_revision": "343cd0ecbe2a19a48c15fbcdb4e9c896a9c49a8a"}
    return [{**base, "host": "kepler-1", "roles": ["kepler"], "last_result": "failed", "last_step": "health_check"},
            {**base, "host": "copernico-1", "roles": ["copernico"]},
            {**base, "host": "newton-01", "roles": ["newton"], "access_point_revision": None,
             "incomplete": {"step": "migrate", "run": "c0ffee12ab34", "user": "bo", "started": "2026-11-26T09:00:00Z"}},
            {"host": "euler-1", "roles": ["euler"], "reachable": False, "branch": "main",
             "error": "euler-1 (10.0.1.1:22): connection refused; is sshd running and is the port right?"}]


def test_status_at_80_columns_cuts_no_host_revision_or_date():
    """Issue 22: `status` in a terminal cut revisions, dates and host names to `2026-1…`, `coperni…`."""
    from rich.console import Console

    from pampa_deployer.cli.status import _terminal
    from pampa_deployer.render import tables
    console = Console(width=80, record=True, force_terminal=True)
    columns, cells = _terminal(_status_rows(), {"kepler-1": {}}, console.width)
    tables.show(columns, cells, console=console, terminal=True, title="stage production: 1 unreachable",
                whole=("host", "branch", "revision", "last deploy", "access point"))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines()) and "…" not in text
    assert columns[:5] == ["host", "branch", "revision", "last deploy", "result"] and "access point" in columns
    for whole in ("copernico-1", "newton-01", "343cd0e", "2026-11-26 08:27Z"):
        assert any(whole in line for line in text.splitlines()), whole
    wide = Console(width=140, record=True, force_terminal=True)
    columns, cells = _terminal(_status_rows(), {}, wide.width)
    assert "roles" in columns and "343cd0e Record the host of each visit in the database" in cells[0]


def _failed_run():
    import time

    from pampa_deployer.engine.results import HostResult, RunResult, StepResult
    t = time.time()
    stderr = "compiling assets\nERROR: something went badly wrong with a long message about disk space on /dev/sda1"
    hosts = [HostResult(name, role, "failed", t, t + 1.2, (StepResult("migrate", False, t, t + 1.2, 7, stderr),),
                        failed_step="migrate", exit_code=7, stderr_tail=stderr, reason="exit code 7")
             for name, role in (("kepler-1", "kepler"), ("newton-01", "newton"))]
    hosts += [HostResult(name, role, "skipped", t, t + 0.1, reason="gate closed: kepler-1 failed at migrate; not touched",
                         gated=True) for name, role in (("copernico-1", "copernico"), ("euler-1", "euler"))]
    return RunResult("production", "deploy", "main", t, t + 2, tuple(hosts), gate="closed")


def test_a_failed_deploys_summary_at_80_columns_is_short_and_cuts_nothing_that_matters():
    """Issue 22: a failed deploy's summary wrapped a 13-character detail column: 86 lines for 4 hosts."""
    from rich.console import Console

    from pampa_deployer.render.summary import print_rich
    console = Console(width=80, record=True, force_terminal=True)
    print_rich(_failed_run(), console)
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines) and len(lines) <= 16, "\n".join(lines)
    joined = " ".join(" ".join(lines).split())
    assert "exit code 7: ERROR: something went badly wrong with a long message about disk space on /dev/sda1" in joined
    assert "compiling assets" not in joined  # the telling line, not the whole tail (that is in the run directory)
    rows = [line.split()[0] for line in lines if line.split() and line.split()[0] in
            ("kepler-1", "newton-01", "copernico-1", "euler-1")]
    assert rows == ["kepler-1", "newton-01", "copernico-1", "euler-1"]  # failures first, names whole


def test_the_timeline_legend_breaks_between_items_only():
    """Issue 22: the legend wrapped mid-item (`slowest step: git_fetch on` / `kepler-1 (0.1s)`)."""
    from rich.console import Console

    from pampa_deployer.render import timeline
    console = Console(width=80, record=True, force_terminal=True)
    console.print(timeline.build(_failed_run(), width=40, legend_width=80))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert any("slowest step: migrate on newton-01 (1.2s)" in line for line in text.splitlines())


HEALTH = "check web failed after 2 attempts: expected status 200 containing 'rev=abc'; last: status 503, body: down"


def test_a_failed_health_check_says_its_reason_once():
    """Issue 22: a failed health check repeated its reason three times on one line."""
    import io
    import time

    from pampa_deployer.engine.executor import perform
    from pampa_deployer.engine.results import CommandResult, HostResult, RunResult, StepFailed, StepResult
    from pampa_deployer.render.summary import print_plain
    from pampa_deployer.steps.actions import HealthCheck

    class Host:
        def run(self, command, on_line=None):
            return CommandResult(1, "", HEALTH + "\n")

    class Sink:
        def command_started(self, display):
            pass

        def output(self, stream, line):
            pass

    with pytest.raises(StepFailed) as failed:
        perform(HealthCheck(name="web", summary="check web", command=Command("true")), Host(), Sink())
    message = failed.value.message
    assert message == ("health check 'web' failed after 2 attempts: expected status 200 containing 'rev=abc'; "
                       "last: status 503, body: down")
    out = io.StringIO()
    PlainRenderer(out)(ev.StepFinished(host="k", result=StepResult("health_check", False, 0.0, 1.0, 1, HEALTH,
                                                                   message)))
    assert out.getvalue().count("last: status 503") == 1
    t = time.time()
    host = HostResult("k", "kepler", "failed", t, t, failed_step="health_check", exit_code=1, stderr_tail=HEALTH,
                      reason=message)
    lines: list[str] = []
    print_plain(RunResult("p", "deploy", "main", t, t, (host,)), lines.append)
    assert sum(line.count("last: status 503") for line in lines) == 1


def _refused_events():
    import time

    from pampa_deployer.engine.results import NOT_STARTED_REFUSED, HostResult
    t = time.time()
    names = ("kepler-1", "euler-1", "newton-1", "copernico-1")
    yield ev.RunStarted(at=t, kind="deploy", stage="p", branch="main", hosts=tuple((n, n[:-2], False) for n in names))
    yield ev.GateChanged(at=t, state="waiting", reason="waiting for kepler")
    for n in names:
        yield ev.HostConnecting(at=t, host=n)
        yield ev.HostConnected(at=t, host=n, seconds=0.1)
    for n in names:
        yield ev.HostFinished(at=t, host=n, result=HostResult(n, n[:-2], "skipped", t, t, reason=NOT_STARTED_REFUSED))


def test_a_lock_refusal_is_said_once():
    """Issue 22: a lock refusal printed four `connect ok`, four SKIPPED, a gate closed and four RESULT lines for
    one reason. The hosts' lines wait until the run goes ahead; a refused run has its headline and its error."""
    import io
    import time

    from pampa_deployer.engine.results import NOT_STARTED_REFUSED, HostResult, RunResult
    from pampa_deployer.render.summary import print_plain
    out = io.StringIO()
    plain = PlainRenderer(out)
    for event in _refused_events():
        plain(event)
    assert [line.split(" ", 1)[1] for line in out.getvalue().splitlines()] == [
        "- - deploy of stage p (branch main) to 4 hosts, 0 gated", "- gate waiting: waiting for kepler"]
    t = time.time()
    hosts = tuple(HostResult(n, "r", "skipped", t, t, reason=NOT_STARTED_REFUSED) for n in ("a", "b"))
    lines: list[str] = []
    print_plain(RunResult("p", "deploy", "main", t, t, hosts, refused="stage p is locked"), lines.append)
    assert lines == ["deploy of p refused: no host was touched"]


def test_connect_lines_are_printed_once_the_run_goes_ahead_in_their_order():
    import io
    out = io.StringIO()
    plain = PlainRenderer(out)
    events = [e for e in _refused_events() if not isinstance(e, ev.HostFinished)]
    for event in events + [ev.StepStarted(at=events[0].at, host="kepler-1", step="git_fetch")]:
        plain(event)
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines[2:] == ["kepler-1 connect ok (0.10s)", "euler-1 connect ok (0.10s)", "newton-1 connect ok (0.10s)",
                         "copernico-1 connect ok (0.10s)", "kepler-1 git_fetch start"]


def test_a_pull_mode_node_in_the_live_view_shows_the_time_it_has_run():
    """Issue 22: following a pull request, every node showed `elapsed 0.0s`: a node reports its steps, never a
    connect, and the live view counted time from the connect only."""
    import time

    from rich.console import Console

    from pampa_deployer.engine.results import HostResult
    from pampa_deployer.render.live import LiveView
    console = Console(width=100, record=True, force_terminal=True)
    view = LiveView(console)
    now = time.time()
    view(ev.RunStarted(stage="p", kind="deploy", branch="main", hosts=(("k", "kepler", False), ("n", "newton", False))))
    view(ev.StepStarted(host="k", step="migrate", at=now - 12))
    view(ev.HostFinished(host="n", at=now, result=HostResult("n", "newton", "ok", now - 7, now)))
    console.print(view.render())
    text = console.export_text()
    assert re.search(r"k\s+running\s+migrate\s+1[23]\.\ds", text), text
    assert re.search(r"n\s+ok\s+7\.0s", text), text


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
