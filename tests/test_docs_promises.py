"""Promises the docs make that can be checked without a fleet (the fleet ones live in the *_fleet tests)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pampa_deployer.cli import main
from pampa_deployer.engine import events as ev
from pampa_deployer.render.rundir import RunDirectory, runs_of

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_doc_installs_from_pypi():
    """pampa-deployer is not on PyPI: no recipe may say `pip install pampa-deployer`."""
    for doc in DOCS:
        assert not re.search(r"pip install +pampa-deployer\b", doc.read_text()), doc.name


def test_init_writes_the_secrets_folder_and_gitignore_the_ci_recipes_use(tmp_path, monkeypatch, capsys):
    """docs/ci.md writes stages/secrets/config.rb; docs/quickstart.md promises the .gitignore lines."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".gitignore").write_text("node_modules/")  # an app's own lines are kept
    assert main(["init", "--app", "shop"]) == 0
    assert (tmp_path / "stages" / "secrets").is_dir()
    assert (tmp_path / "stages" / "secrets").stat().st_mode & 0o077 == 0
    ignore = (tmp_path / ".gitignore").read_text().splitlines()
    assert ignore[0] == "node_modules/"
    assert {".pampa/", "stages/secrets/*", "!stages/secrets/*.example"} <= set(ignore)
    ci = (ROOT / "docs" / "ci.md").read_text()
    assert "> stages/secrets/config.rb" in ci and "cp \"$CONFIG_RB\" stages/secrets/config.rb" in ci
    (tmp_path / "stages" / "secrets" / "config.rb").write_text("X = 'y'\n")  # what the CI recipe does
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True)
    tracked = subprocess.run(["git", "-C", str(tmp_path), "ls-files"], capture_output=True, text=True).stdout
    assert "stages/secrets/config.rb" not in tracked and "stages/secrets/README.example" in tracked
    assert main(["init", "--app", "shop", "--force"]) == 0
    again = (tmp_path / ".gitignore").read_text().splitlines()
    assert again.count(".pampa/") == 1  # running init twice does not repeat the lines


def test_run_directories_keep_the_newest_runs_keep(tmp_path):
    """docs/ci.md: the newest `runs.keep` run directories of a stage are kept."""
    base = tmp_path / "runs"
    for stamp in ("20260101-000000", "20260102-000000", "20260103-000000"):
        (base / f"production-deploy-{stamp}" / "hosts").mkdir(parents=True)
    (base / "production-eu-deploy-20250101-000000").mkdir()  # another stage whose name starts alike
    (base / "notes").mkdir()
    run = RunDirectory(base, "production", "rollback", keep=2)
    run(ev.Notice(message="the folder is made at the run's first event", level="info"))
    run.close()
    names = sorted(p.name for p in runs_of(base, "production"))
    assert names == ["production-deploy-20260103-000000", run.path.name]
    assert (base / "production-eu-deploy-20250101-000000").is_dir() and (base / "notes").is_dir()


def test_runs_keep_is_validated(tmp_path, monkeypatch, capsys):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "p.yml").write_text("app: a\nruns: {keep: 0}\nhosts: {k: {roles: [kepler]}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "p"]) == 2
    assert "runs.keep: expected a positive number, got 0" in capsys.readouterr().err


def test_packaging_has_no_license_table():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', text, re.M) and "license = {" not in text


def test_secret_looking_keys_the_docs_name_are_masked(tmp_path, monkeypatch):
    """docs/configuration.md and operations.md name the secret-looking keys; each one masks its value."""
    from pampa_deployer.inventory import load_stage
    from pampa_deployer.redact import MASK
    (tmp_path / "stages").mkdir()
    values = {word: f"value-of-{word}-0123" for word in ("password", "secret", "token", "api_key", "private")}
    env = ", ".join(f"DB_{w.upper()}: {v}" for w, v in values.items())
    (tmp_path / "stages" / "p.yml").write_text(f"app: a\nenv: {{{env}}}\nhosts: {{k: {{roles: [kepler]}}}}\n")
    monkeypatch.chdir(tmp_path)
    red = load_stage("p").redactor
    for value in values.values():
        assert red.mask(f"echo {value}") == f"echo {MASK}", value
    ops = (ROOT / "docs" / "operations.md").read_text()
    assert "(`password`, `secret`, `token`, `api_key`, `private`)" in ops


def test_exit_codes_in_help_match_the_table(capsys):
    import pytest

    from pampa_deployer.errors import ExitCode
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code in ExitCode:
        if code is not ExitCode.INTERNAL:
            assert f"{int(code)} " in out, code


def test_repeated_rollbacks_go_further_back():
    """docs/operations.md: the default target is the revision before the current one, so rollback after
    rollback walks back through the releases instead of flipping between the last two."""
    from pampa_deployer.engine.rollback import previous_revision

    def entry(kind, before, after, result="ok"):
        return {"kind": kind, "before": before, "after": after, "result": result}

    log = [entry("deploy", None, "A"), entry("deploy", "A", "B"), entry("deploy", "B", "C")]
    assert previous_revision(log, "C") == "B"
    log.append(entry("rollback", "C", "B"))
    assert previous_revision(log, "B") == "A"
    log.append(entry("rollback", "B", "A"))
    assert previous_revision(log, "A") is None  # nothing older is known: the caller falls back to HEAD~1
    log.append(entry("deploy", "A", "D"))
    assert previous_revision(log, "D") == "A"
    failed = [entry("deploy", "A", "B"), entry("deploy", "B", "C", result="failed")]
    assert previous_revision(failed, "B") == "A"


def test_pull_rollbacks_go_back_in_the_access_points_history():
    """docs/pull-mode.md: without --to, the target is the revision before what the keplers run, among the
    stage's pull requests whose gate opened; a rollback pops, a request that never opened its gate is no history."""
    from pampa_deployer.engine.rollback import history_target

    def request(revision, kind="deploy", state="DONE", allowed=True, mode="pull"):
        return {"revision": revision, "kind": kind, "state": state, "allowed_at": 1.0 if allowed else None,
                "mode": mode}

    newest_first = [request("C"), request("B", state="FAILED"), request("A")]
    assert history_target(newest_first, "C") == "B"  # B opened its gate, then a newton failed
    assert history_target(newest_first, None) == "B"  # keplers disagree: the newest entry is current
    assert history_target([request("B", kind="rollback")] + newest_first, "B") == "A"
    assert history_target([request("A", kind="rollback"), request("B", kind="rollback")] + newest_first, "A") is None
    never_opened = [request(None, state="FAILED", allowed=False), request("A")]
    assert history_target(never_opened, "A") is None
    assert history_target([request("B", mode="push"), request("A")], "B") is None  # push deploys are not in it


def test_rollback_help_offers_no_branch_and_says_what_dry_run_does(capsys):
    import pytest
    with pytest.raises(SystemExit):
        main(["rollback", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--branch" not in text
    assert "--dry-run read the target revision from the hosts (read-only) and print what would run" in text
    assert "connect to nothing" not in text
    assert main(["rollback", "production", "--branch", "x"]) == 2


def test_dry_run_lines_claim_nothing_ran():
    """A --dry-run prints the commands, never `connect ok` or `ok` for a step it did not run."""
    import io

    from pampa_deployer.engine import events as ev
    from pampa_deployer.engine.results import HostResult, StepResult
    from pampa_deployer.render.plain import PlainRenderer
    out = io.StringIO()
    plain = PlainRenderer(out, verbose=True)
    plain(ev.RunStarted(at=0.0, stage="p", kind="deploy", branch="main", hosts=(("k", "kepler", False),),
                        dry_run=True))
    plain(ev.HostConnected(at=0.0, host="k", seconds=0.0))
    plain(ev.StepStarted(at=0.0, host="k", step="bundle"))
    plain(ev.StepFinished(at=0.0, host="k", result=StepResult("bundle", True, 0.0, 0.0)))
    plain(ev.HostFinished(at=0.0, host="k", result=HostResult("k", "kepler", "ok", 0.0, 0.0)))
    text = out.getvalue()
    assert "connect" not in text and " ok" not in text and "OK" not in text
    assert "bundle would run:" in text and "dry run: nothing was run" in text


def test_quickstart_as_written_plans(tmp_path, monkeypatch, capsys):
    """docs/quickstart.md steps 2 and 3: init, the documented hosts and settings, then `pampa plan`."""
    doc = (ROOT / "docs" / "quickstart.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    hosts, settings = blocks[0], blocks[1]
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--app", "mysaas", "--repo", "git@github.com:acme/mysaas.git"]) == 0
    stages = tmp_path / "stages"
    production = stages / "production.yml"
    production.write_text(production.read_text().split("hosts:")[0] + hosts)  # "Edit the hosts"
    assert "say so once, in\n`stages/common.yml` (these lines replace its `path:` line" in doc
    common = [line for line in (stages / "common.yml").read_text().splitlines() if not line.startswith("path:")]
    (stages / "common.yml").write_text("\n".join(common) + "\n" + settings)
    capsys.readouterr()
    assert main(["plan", "production"]) == 2  # until the secret file is there, with the path it looked for
    assert "looked for stages/secrets/config.rb" in capsys.readouterr().err
    assert "`stages/secrets/config.rb`" in doc
    (stages / "secrets" / "config.rb").write_text("DB_PASSWORD = 'from-the-secret-store'\n")
    assert main(["plan", "staging"]) == 0  # said once, for every stage
    assert "sudo systemctl restart mysaas_worker" in capsys.readouterr().out
    assert main(["plan", "production"]) == 0
    out = capsys.readouterr().out
    assert "newton-20 [newton] 10.0.2.20:22 (does not wait)" in out
    assert "euler-2 [euler] 10.0.1.2:22 (waits for the gate)" in out
    for line in ("    source /etc/profile.d/rvm.sh && sudo systemctl restart mysaas_worker",
                 "    source /etc/profile.d/rvm.sh && cd ~/code1/mysaas && git reset --hard origin/main"):
        assert line in out.splitlines()
    assert "from-the-secret-store" not in out


def test_fab_in_an_apps_repository_lists_the_documented_tasks(tmp_path):
    """docs/fab.md: the two-line fabfile.py in the app's folder gives `fab --list` exactly the tasks it names."""
    import shutil
    import sys
    doc = (ROOT / "docs" / "fab.md").read_text()
    fabfile = re.search(r"```python\n# fabfile.py\n(.*?)```", doc, re.S).group(1)
    (tmp_path / "fabfile.py").write_text(fabfile)
    exe = shutil.which("fab") or str(Path(sys.executable).parent / "fab")
    listing = subprocess.run([exe, "--list"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    listed = set(re.findall(r"^  ([a-z-]+)\s", listing.stdout, re.M))
    named = set(re.findall(r"`([a-z-]+)`", re.search(r"^Tasks: (.*?`)\.", doc, re.M | re.S).group(1)))
    assert listed == named, (sorted(listed - named), sorted(named - listed))
    ours = subprocess.run([exe, "-r", str(ROOT), "--list"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert set(re.findall(r"^  ([a-z-]+)\s", ours.stdout, re.M)) == named  # the same as the repository's own


def test_ci_md_names_every_report_kind():
    """docs/ci.md's report table names each `kind` a report can carry: the command that made the run."""
    import json as _json
    import time as _time

    from pampa_deployer.engine.results import RunResult
    from pampa_deployer.render.report import to_dict
    row = next(line for line in (ROOT / "docs" / "ci.md").read_text().splitlines()
               if line.startswith("| `stage`, `kind`, `branch` |"))
    named = set(re.findall(r"`(deploy|rollback|run|[a-z]+)`", row.split("|")[3]))
    assert {"deploy", "rollback", "run"} <= named
    for kind in ("deploy", "rollback", "run"):  # the commands whose run writes a report; each keeps its name
        now = _time.time()
        result = RunResult(stage="p", kind=kind, branch="main", started=now, ended=now, hosts=())
        assert _json.loads(_json.dumps(to_dict(result, 0)))["kind"] == kind


def test_ci_md_names_every_report_result():
    """docs/ci.md's report table names each top-level `result` a report can carry, and no other."""
    import time as _time

    from pampa_deployer.engine.results import FAILED, OK, HostResult, RunResult
    from pampa_deployer.render.report import to_dict
    row = next(line for line in (ROOT / "docs" / "ci.md").read_text().splitlines()
               if line.startswith("| `result` |"))
    named = set(re.findall(r"`([a-z]+)`", row.split("|")[3]))
    now = _time.time()
    bad = HostResult(host="h", roles="r", result=FAILED, started=now, ended=now)
    good = HostResult(host="h", roles="r", result=OK, started=now, ended=now)
    runs = [RunResult(stage="p", kind="deploy", branch="main", started=now, ended=now, hosts=hosts, **extra)
            for hosts, extra in [((good,), {}), ((bad,), {}), ((good,), {"interrupted_by": 2}),
                                 ((), {"refused": "stage p is locked"}), ((good,), {"dry_run": True})]]
    reports = [to_dict(run, 0) for run in runs]
    assert {r["result"] for r in reports} == named == {"ok", "failed", "interrupted", "refused", "planned"}
    assert [r["reason"] for r in reports] == [None, None, None, "stage p is locked", None]


def test_a_dry_runs_report_and_junit_claim_nothing(tmp_path, monkeypatch):
    """docs/ci.md, design.md: dry runs claim nothing. Issue 22: `--dry-run --report/--junit` wrote every host and
    step `ok` and the gate `open`, so CI showed green tests for a run that did nothing."""
    import json
    import xml.etree.ElementTree as ET
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "p.yml").write_text("app: a\nrepo: r\nhosts:\n  k: {address: 10.9.9.9, roles: [kepler]}\n"
                                               "  e: {address: 10.9.9.8, roles: [euler]}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["deploy", "p", "--dry-run", "--report", "r.json", "--junit", "r.xml"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["result"], report["dry_run"], report["exit_code"]) == ("planned", True, 0)
    assert report["gate"] == {"state": "planned", "opened": None} and report["revision"] is None
    assert {h["result"] for h in report["hosts"]} == {"planned"}
    assert {s["result"] for h in report["hosts"] for s in h["steps"]} == {"planned"}
    assert all(h["revision_after"] is None for h in report["hosts"])
    suite = ET.parse(tmp_path / "r.xml").getroot().find("testsuite")
    assert suite.get("tests") == suite.get("skipped") == "2" and suite.get("failures") == "0"
    assert {c.find("skipped").get("message") for c in suite.iter("testcase")} == {"dry run: planned, nothing was run"}


def test_init_without_answers_uses_the_folder_and_its_origin(tmp_path, monkeypatch, capsys):
    """docs/ci.md: no TTY, no --app/--repo: the folder's name and its git origin, or a placeholder it names."""
    app = tmp_path / "shop"
    app.mkdir()
    monkeypatch.chdir(app)
    assert main(["init"]) == 0
    assert "repo: git@github.com:you/shop.git" in (app / "stages" / "common.yml").read_text()
    assert "note: repo is a placeholder (git@github.com:you/shop.git); set `repo` in stages/common.yml" in \
        capsys.readouterr().out
    subprocess.run(["git", "init", "-q", str(app)], check=True)
    subprocess.run(["git", "-C", str(app), "remote", "add", "origin", "git@github.com:acme/shop.git"], check=True)
    assert main(["init", "--force"]) == 0
    common = (app / "stages" / "common.yml").read_text()
    assert "app: shop\n" in common and "repo: git@github.com:acme/shop.git\n" in common
    assert "placeholder" not in capsys.readouterr().out


def test_client_and_agent_numbers_in_the_docs_are_the_codes():
    """docs/pull-mode.md and docs/access-point.md quote the agent's and the codec's bounds: they are the code's.
    (The behaviour behind each is proved in tests/test_agent.py, test_hostile_client.py, test_report_retry.py.)"""
    from pampa_deployer.accesspoint import wire
    from pampa_deployer.agent import loop, reporter
    from pampa_deployer.engine.backends import local
    from pampa_deployer.inventory.schema import TOP
    pull = " ".join((ROOT / "docs" / "pull-mode.md").read_text().split())
    ap = " ".join((ROOT / "docs" / "access-point.md").read_text().split())
    assert loop.MIN_POLL == 1.0 and "two polls are at least 1 second apart" in pull
    assert loop.TOKEN_LOOK == 2.0 and "every 2 seconds while it waits" in pull
    assert reporter.HEARTBEAT == 10.0 and "a heartbeat goes every 10 seconds" in pull
    assert local.KILL_GRACE == 5.0 and "(TERM, then KILL after 5 seconds)" in pull
    retry = TOP["access_point"].children["report_retry"].default
    assert retry == 30.0 and "`access_point.report_retry` seconds (30)" in pull
    assert "`access_point.report_retry` seconds (30)" in ap
    assert wire.MAX_LINE == 2000 and wire.MAX_NAME == 128
    assert "at most 2,000 characters of a line, command or message (128 of a step name)" in ap
    assert wire.LATEST == 2 ** 32 and "outside 1970..2106" in ap  # 2**32 s is in February 2106


def test_the_client_messages_the_docs_quote_are_the_ones_it_prints(monkeypatch):
    from pampa_deployer.accesspoint import client as client_module
    said: list[str] = []
    monkeypatch.setattr(client_module, "_WARNED", set())
    client_module.AccessPointClient("http://ap.example.com:8750", "k", warn=said.append)._warn_if_plain()
    ap = " ".join((ROOT / "docs" / "access-point.md").read_text().split())
    assert said and said[0].split(" (docs/")[0] in ap
    # the follower's note, word for word as test_hostile_client.py sees `pampa request` print it
    assert "the access point sent N event(s) or page(s) that were not what the protocol says; they were left out" \
        in ap


def test_operations_md_names_where_each_strategy_keeps_its_log_and_start_record():
    """Issue 22: operations.md put the start record beside the revision log; with releases it is inside the
    deploy folder. The paths the doc names are the ones the engine writes (engine/pipeline.py)."""
    from pampa_deployer.commands import revlog
    from pampa_deployer.inventory import stage_from_mapping
    from pampa_deployer.steps.releases import layout_of, live_path
    doc = " ".join((ROOT / "docs" / "operations.md").read_text().split())
    for strategy, log, record in [("in_place", "~/code/mysaas.revisions.jsonl", "~/code/mysaas.deploying.json"),
                                  ("releases", "~/code/mysaas.revisions.jsonl", "~/code/mysaas/current.deploying.json")]:
        stage = stage_from_mapping({"app": "mysaas", "repo": "r", "strategy": strategy,
                                    "hosts": {"k": {"roles": ["kepler"]}}})
        host = stage.hosts[0]
        layout = layout_of(stage.settings, host.path, "")
        assert revlog.log_path(host.path) == log and revlog.state_path(live_path(host, layout)) == record
        assert f"`{log}`" in doc and f"`{record}`" in doc


def test_init_gives_a_range_of_hosts_their_own_names(tmp_path, monkeypatch, capsys):
    """Issue 22: `init` wrote `newton-[01:02]` with `address: newton-{n}.example.com`, so newton-01 was sent
    to newton-1.example.com."""
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--app", "shop", "--repo", "git@example.com:shop.git"]) == 0
    capsys.readouterr()
    assert main(["plan", "production", "--json"]) == 0
    import json
    hosts = {h["name"]: h["address"] for h in json.loads(capsys.readouterr().out)["hosts"]}
    assert hosts["newton-01"] == "newton-01.example.com" and hosts["newton-02"] == "newton-02.example.com"


def test_ci_md_report_table_names_every_top_level_field():
    """docs/ci.md's JSON report table has a row for each top-level field the report writes (issue 23 added
    `message` and `canary`), and the canary's documented results are the ones engine/canary.py sets."""
    import time as _time

    from pampa_deployer.engine import canary
    from pampa_deployer.engine.results import RunResult
    from pampa_deployer.render.report import to_dict
    text = (ROOT / "docs" / "ci.md").read_text()
    table = text.split("JSON report, schema version 1:", 1)[1].split("\n\n", 2)[1]
    named = {key for row in table.splitlines() if row.startswith("| `")
             for key in re.findall(r"`([a-z_]+)(?:\[\])?`", row.split("|")[1])}
    now = _time.time()
    report = to_dict(RunResult(stage="p", kind="deploy", branch="main", started=now, ended=now, hosts=()), 0)
    assert set(report) <= named, sorted(set(report) - named)
    row = next(line for line in table.splitlines() if line.startswith("| `canary` |"))
    documented = set(re.findall(r"`([a-z ]+)`", row.split("|")[3]))
    states = {canary.PASSED, canary.FAILED, canary.DECLINED, canary.INTERRUPTED, canary.WHOLE}
    assert states <= documented, sorted(states - documented)


def test_what_a_node_can_and_cannot_do_names_the_defaults_the_server_has_and_tests_that_exist():
    """docs/access-point.md: each row of the node's limits names a test that exists, and its numbers are the code's."""
    from pampa_deployer.accesspoint.wire import MAX_EVENTS, MAX_LINE
    from pampa_deployer.server.guard import Guard
    from pampa_deployer.server.http import Limits
    from pampa_deployer.server.store import Quotas

    doc = (ROOT / "docs" / "access-point.md").read_text()
    section = doc[doc.index("### What a node can and cannot do"):]
    limits = doc[doc.index("### Limits: what an outsider"):doc.index("### What a node can and cannot do")]
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    named = re.findall(r"`(test_[a-z0-9_]+)`", section)
    assert len(named) >= 13 and all(f"def {name}(" in sources for name in named), named
    q, lim, guard = Quotas(), Limits(), Guard()
    assert f"{q.events_per_run:,} events and {q.bytes_per_run // 1024 ** 2} MiB of them per run" in section
    assert f"its {q.keep} newest requests (`--keep`)" in section
    assert f"{MAX_EVENTS} events a call, {MAX_LINE:,} characters a line, {lim.max_body // 1024} KiB a body" in section
    assert f"{lim.max_per_source} from one address" in section
    assert f"{guard.burst} wrong ones, then one every {guard.refill:g} s" in section
    assert f"| open connections | {lim.max_connections} (`--max-connections`)" in limits
    assert f"| open connections from one address | {lim.max_per_source} (`--max-per-source`" in limits
    assert f"{lim.max_body // 1024} KiB with a node token; {lim.max_admin_body // 1024 ** 2} MiB with the API key" in limits
    assert f"| an answer not read by the client | {lim.write_timeout:g} s;" in limits
    assert f"| the listen backlog | {lim.backlog} " in limits
    assert f"`--keep N` (default {q.keep})" in doc
