"""Ordinary mistakes are one line with a documented exit code, never exit 70 or a traceback (no fleet)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pampa_deployer.cli import build_parser, main
from pampa_deployer.inventory.validate import RULES

ROOT = Path(__file__).resolve().parent.parent
STAGE = """\
app: shop
repo: /nonexistent/shop.git
ssh: {{known_hosts: known_hosts, connect_retries: 0, connect_timeout: 5}}
hosts:
  kepler-1: {{address: 127.0.0.1, port: {port}, roles: [kepler]}}
"""


def pampa(cwd, *args, env=None):
    return subprocess.run([sys.executable, "-m", "pampa_deployer", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def fab(cwd, *args):
    exe = shutil.which("fab") or str(Path(sys.executable).parent / "fab")
    return subprocess.run([exe, "-r", str(ROOT), *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def one_line(result, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project(tmp_path, port: int) -> Path:
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "t.yml").write_text(STAGE.format(port=port))
    (tmp_path / "known_hosts").write_text("")
    return tmp_path


def test_help_shows_percent_signs_once(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--batch 25% " in out and "%%" not in out
    deploy = build_parser().commands["deploy"].format_help()
    assert "%%" not in deploy and "N%" in deploy


@pytest.mark.parametrize("args,expected", [
    (["deploy", "t", "--parallel", "0"], "argument --parallel: expected a positive number, got 0"),
    (["deploy", "t", "--grace", "-1"], "argument --grace: expected a number of 0 or more, got -1"),
    (["deploy", "t", "--lock-wait", "soon"], "argument --lock-wait: expected a number of 0 or more, got 'soon'"),
    (["access-point", "serve", "--port", "70000"], "argument --port: expected a port number from 1 to 65535, "
                                                   "got 70000"),
])
def test_command_line_values_use_the_stage_files_words(capsys, args, expected):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err
    rule_words = [words for _, words in RULES.values()]
    assert any(words in expected for words in rule_words)


@pytest.mark.parametrize("args,expected", [
    (["deploy", "t", "--max-fail", "none"], "argument --max-fail: expected a positive count or a percentage like "
                                            "25%, got 'none'"),
    (["rollback", "t", "--batch", "150%"], "argument --batch: expected a positive count or a percentage like 25%, "
                                           "got '150%'"),
])
def test_counts_of_hosts_are_checked_on_the_command_line(capsys, args, expected):
    """The engine checks them too, in the request's words (an agent has no flags); the CLI names the flag."""
    assert main(args) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("args,expected", [
    (["deploy", "t", "--to", "abc"], "pampa deploy: unknown option '--to' (`pampa rollback` and `pampa request` "
                                     "take it); see `pampa deploy --help`"),
    (["deploy", "t", "--follow", "3"], "pampa deploy: unknown option '--follow' (`pampa logs` and `pampa request` "
                                       "take it); see `pampa deploy --help`"),
    (["deploy", "t", "--brnach", "x"], "pampa deploy: unknown option '--brnach'; did you mean '--branch'?"),
    (["status", "t", "--xyz"], "pampa status: unknown option '--xyz'; see `pampa status --help`"),
])
def test_an_option_of_another_command_is_named_as_such(capsys, args, expected):
    """Never "unknown option '--to'; did you mean '--to'?": say which command takes it."""
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == expected


def test_access_point_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = pampa(tmp_path, "access-point", "serve", "--port", str(port), env={"PAMPA_AP_KEY": "k" * 16})
    line = one_line(result, 2)
    assert line == (f"pampa: error: access-point serve: cannot listen on 127.0.0.1:{port}: the address is taken "
                    "(another access point?); pick another --port")
    assert list(tmp_path.iterdir()) == []  # issue 22: it left an empty access-point.sqlite3 behind


def test_access_point_database_that_is_a_folder(tmp_path):
    result = pampa(tmp_path, "access-point", "serve", "--port", "0", "--db", str(tmp_path),
                   env={"PAMPA_AP_KEY": "k" * 16})
    assert "cannot open the database" in one_line(result, 2)


def test_a_postgresql_database_without_the_driver_is_one_line(tmp_path):
    blocked = tmp_path / "blocked"
    (blocked / "psycopg").mkdir(parents=True)
    (blocked / "psycopg" / "__init__.py").write_text("raise ImportError('psycopg is not installed here')\n")
    result = pampa(tmp_path, "access-point", "serve", "--port", "0", "--database", "postgresql://ap@127.0.0.1/pampa",
                   env={"PAMPA_AP_KEY": "k" * 16, "PYTHONPATH": str(blocked)})
    assert one_line(result, 2) == ("pampa: error: access-point serve: a postgresql:// database needs the PostgreSQL "
                                   "driver psycopg; install pampa-deployer with its [postgres] extra (docs/pull-mode.md)")


def test_an_unreachable_postgresql_database_is_one_line_without_its_password(tmp_path, psycopg_driver):
    url = f"postgresql://ap:hunter2-secret@127.0.0.1:{free_port()}/pampa"
    result = pampa(tmp_path, "access-point", "serve", "--port", "0", env={"PAMPA_AP_KEY": "k" * 16,
                                                                          "PAMPA_AP_DATABASE": url})
    line = one_line(result, 2)
    assert line.startswith("pampa: error: access-point serve: cannot connect to postgresql://ap:***@127.0.0.1:")
    assert "hunter2" not in result.stdout + result.stderr


def test_a_port_that_is_not_ssh_gives_no_paramiko_tracebacks(tmp_path):
    """A web server where sshd was expected: one classified line per host, no library tracebacks."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def answer():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        result = pampa(project(tmp_path, server.getsockname()[1]), "check", "t")
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "Exception (client)" not in result.stderr
    assert "no SSH banner (is this port an SSH server?)" in result.stdout


# -- fab -------------------------------------------------------------------------------------------------
def test_fab_without_hosts_refuses_instead_of_running_here(tmp_path):
    project(tmp_path, free_port())
    result = fab(tmp_path, "deploy", "--stage", "t")
    assert one_line(result, 2) == ("pampa: error: fab: give the hosts with -H host1,host2; pampa's tasks never "
                                   "run on this machine")
    assert result.stdout == ""  # no step was started


def test_fab_without_a_stage_is_one_line(tmp_path):
    result = fab(tmp_path, "-H", "127.0.0.1", "deploy")
    assert one_line(result, 2) == ("pampa: error: fab: give --stage NAME (a file in stages/) or at least "
                                   "--app NAME (and --repo URL)")


@pytest.mark.parametrize("option", ["--role", "--roles"])
def test_fab_unknown_role_is_one_line(tmp_path, option):
    project(tmp_path, free_port())
    result = fab(tmp_path, "-H", "kepler-1", "deploy", "--stage", "t", option, "nwton")
    assert one_line(result, 2) == ("pampa: error: --roles: unknown role 'nwton' (did you mean 'newton'?); "
                                   "known: kepler, euler, newton, copernico")


def test_fab_host_named_like_a_stage_host_uses_its_address_and_port(tmp_path):
    """``-H kepler-1`` reaches the stage's address and port (here a closed one), not a host called kepler-1."""
    port = free_port()
    project(tmp_path, port)
    result = fab(tmp_path, "-H", "kepler-1", "report-version", "--stage", "t")
    assert one_line(result, 1) == (f"pampa: error: kepler-1 (127.0.0.1:{port}): connection refused; "
                                   "is sshd running and is the port right?")


@pytest.mark.fleet
def test_demo_on_taken_addresses_says_so_and_touches_nothing(tmp_path):
    """Another demo (or fleet) answers on SUBNET.11:2222: `pampa demo` refuses instead of meeting its host key."""
    from conftest import FLEET_SUBNET, _can_run_fleet

    from pampa_deployer.fleet import listening
    why = _can_run_fleet()
    if why:
        pytest.skip(why)
    address = f"{FLEET_SUBNET}.11"
    holder = None
    if not listening(address, 2222):  # the test fleet may already be there; if not, take the port ourselves
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((address, 2222))
        holder.listen()
    try:
        result = pampa(tmp_path, "demo", "--dir", str(tmp_path / "demo"), "--subnet", FLEET_SUBNET)
    finally:
        if holder is not None:
            holder.close()
    line = one_line(result, 4)
    assert line.startswith(f"pampa: error: demo: {address}:2222") and "already taken by another process" in line
    assert "--subnet" in line and "pampa demo down --dir" in line
    assert not (tmp_path / "demo").exists()  # refused before creating anything
    import re
    suggested = re.search(r"--subnet (127\.0\.\d+) \(free now\)", line).group(1)
    assert suggested != FLEET_SUBNET and not listening(f"{suggested}.11", 2222)  # issue 22: never the taken one


def test_the_demos_subnet_hint_never_names_the_subnet_it_refused(tmp_path):
    """Issue 22: the hint was always `--subnet 127.0.5`, also when 127.0.5 was the taken one."""
    from pampa_deployer.cli.demo import _free_subnet_hint, demo_fleet
    hint = _free_subnet_hint(demo_fleet(tmp_path, 1, "127.0.5"))
    assert hint.startswith(", e.g. --subnet 127.0.") and "127.0.5 " not in hint and hint.endswith("(free now)")


def test_demo_down_with_another_dir_claims_nothing(tmp_path):
    """`pampa demo down` where no demo was started says so instead of "stopped"."""
    result = pampa(tmp_path, "demo", "down", "--dir", str(tmp_path / "elsewhere"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"no demo fleet in {tmp_path / 'elsewhere'}: nothing to stop (pass the --dir "
                                      "the demo was started with)")


def test_demo_hint_names_its_dir():
    """The demo's last line must stop *this* demo: it carries --dir unless the demo is in the default one."""
    from pampa_deployer.cli.demo import DEFAULT_DIR, next_steps
    assert next_steps(Path(DEFAULT_DIR))[-1] == "stop it: pampa demo down"
    assert next_steps(Path("/tmp/d")) == ["try: pampa --stages /tmp/d/stages status demo",
                                          "stop it: pampa demo down --dir /tmp/d"]


def test_demo_subnet_is_checked(capsys):
    assert main(["demo", "--subnet", "10.0.0"]) == 2
    assert "expected three octets of a loopback address such as 127.0.5" in capsys.readouterr().err


def test_check_json_names_the_hosts_not_ready(tmp_path):
    """docs/ci.md: `pampa check STAGE --json | jq '.hosts[] | select(.ready | not) | .host'`."""
    import json
    port = free_port()
    result = pampa(project(tmp_path, port), "check", "t", "--json")
    assert result.returncode == 4
    data = json.loads(result.stdout)
    assert [(h["host"], h["ready"]) for h in data["hosts"]] == [("kepler-1", False)]
    problem = data["hosts"][0]["problems"][0]["message"]
    assert f"127.0.0.1:{port}" in problem and "connection refused" in problem
    assert result.stderr.strip() == "pampa: error: check t: 1 of 1 host is not ready: kepler-1"


def test_check_names_a_missing_key_file_once_per_host(tmp_path):
    """A `key` that does not exist: one line per host, the host named once, the key and what to fix."""
    project(tmp_path, free_port())
    stage = tmp_path / "stages" / "t.yml"
    stage.write_text(stage.read_text() + "key: /nonexistent/id_ed25519\n")
    result = pampa(tmp_path, "check", "t")
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == ("kepler-1: key file /nonexistent/id_ed25519 not found; check `key` for "
                                             "this host (or the stage)")


def test_status_prints_plain_columns_outside_a_terminal(tmp_path):
    """docs/ci.md: outside a terminal nothing is drawn with boxes (status too); an unreachable host is named."""
    port = free_port()
    result = pampa(project(tmp_path, port), "status", "t")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "stage t: 1 unreachable (not seen): kepler-1"
    assert lines[1].split() == ["host", "roles", "branch", "revision", "last", "deploy", "result", "note"]
    assert lines[2].startswith("kepler-1  kepler") and "unreachable" in lines[2]
    assert not set("│─┏┃") & set(result.stdout)


# -- issue 22: values that passed `plan` and crashed later; paths and files that were silently ignored ----
def test_notifier_never_echoes_a_url_it_cannot_send_to():
    """Defence behind the schema's `url` rule: a URL urllib refuses is a warning that does not repeat it."""
    from pampa_deployer.engine.around.notify import Notifier
    said = []
    warnings = Notifier(["hooks.slack.com/services/T0/B0/topsecret123"], 1.0, warn=said.append).send({"event": "x"})
    assert warnings == said == ["notification x to ******** failed: not an http:// or https:// URL"]


def test_access_point_client_with_a_url_it_cannot_use_is_an_access_point_error():
    from pampa_deployer.accesspoint.client import AccessPointClient
    from pampa_deployer.errors import AccessPointError
    with pytest.raises(AccessPointError, match="not an http:// or https:// URL; fix the stage's `access_point.url`"):
        AccessPointClient("not a url", "k").nodes("p")


def test_a_named_ssh_config_that_does_not_exist_is_one_line(tmp_path):
    """The demo stage named a missing ssh_config and it was silently ignored: now connecting commands say so;
    `plan` (which connects nowhere) still works, like a missing key file."""
    project(tmp_path, free_port())
    stage = tmp_path / "stages" / "t.yml"
    stage.write_text(stage.read_text().replace("ssh: {", "ssh: {config: /nonexistent/ssh_config, "))
    assert pampa(tmp_path, "plan", "t").returncode == 0
    for command in (["check", "t"], ["status", "t"], ["deploy", "t"]):
        assert one_line(pampa(tmp_path, *command), 2) == (
            "pampa: error: stages/t.yml: ssh.config: /nonexistent/ssh_config does not exist; create it, fix the "
            "path, or leave `ssh.config` out to use ~/.ssh/config")


@pytest.mark.parametrize("name,meant", [("pre_deploy", "pre-deploy"), ("pre-deploy.sh", "pre-deploy"),
                                        ("Pre-Rollback", "pre-rollback"), ("on_failure", "on-failure")])
def test_a_misnamed_hook_refuses_the_run_instead_of_never_guarding(tmp_path, name, meant):
    project(tmp_path, free_port())
    hooks = tmp_path / "stages" / "hooks"
    hooks.mkdir()
    (hooks / name).write_text("#!/bin/sh\nexit 1\n")
    (hooks / name).chmod(0o755)
    (hooks / "README.md").write_text("helpers live here too\n")  # not a hook's name: left alone
    (hooks / "post-deploy.sample").write_text("#!/bin/sh\n")  # switched off on purpose
    result = pampa(tmp_path, "deploy", "t")
    assert one_line(result, 2) == (f"pampa: error: stages/hooks/{name}: not a hook name, so it would never run; "
                                   f"rename it to {meant} (hooks are named exactly pre-deploy, post-deploy, "
                                   "pre-rollback, post-rollback, on-failure; add .sample to keep it off)")
    assert result.stdout == ""  # refused before the run started: no host was contacted


# -- issue 22: the first hour -----------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(capsys, flag):
    from pampa_deployer import __version__
    with pytest.raises(SystemExit) as done:
        main([flag])
    assert done.value.code == 0 and capsys.readouterr().out == f"pampa {__version__}\n"


def test_help_command_prints_what_help_flags_print(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert main(["help"]) == 0 and capsys.readouterr().out == top
    assert "pampa help deploy" in top
    with pytest.raises(SystemExit):
        main(["deploy", "--help"])
    deploy = capsys.readouterr().out
    assert main(["help", "deploy"]) == 0 and capsys.readouterr().out == deploy
    assert main(["help", "dploy"]) == 2
    assert capsys.readouterr().err.strip() == "pampa help: unknown command 'dploy'; did you mean 'deploy'?"


@pytest.mark.parametrize("args,expected", [
    (["deploy", "production", "extra"], "pampa deploy: unexpected argument 'extra'; see `pampa deploy --help`"),
    (["lock", "release", "production"], "pampa lock: unknown action 'release'; to release a lock, run "
                                        "`pampa unlock STAGE -m WHY`"),
    (["lock", "stat", "production"], "pampa lock: unknown action 'stat'; did you mean 'status'?"),
    (["dploy", "production"], "pampa: unknown command 'dploy'; did you mean 'deploy'?"),
])
def test_a_word_too_many_or_a_wrong_action_is_named_as_such(capsys, args, expected):
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == expected


def test_stages_given_a_file_says_to_give_its_folder(tmp_path):
    project(tmp_path, free_port())
    assert one_line(pampa(tmp_path, "--stages", "stages/t.yml", "plan", "t"), 2) == (
        "pampa: error: stages/t.yml: a file, not a folder; --stages takes the folder of stage files, here "
        "--stages stages (and the stage by name: t)")


class _Stage:
    name = "p"


class _AccessPoint:
    """What `status` reads from an access point: the stage's requests (newest first) and node versions."""

    def __init__(self, deploys):
        self.found = deploys

    def deploys(self, stage):
        return self.found

    def deploy(self, deploy_id):
        d = next(d for d in self.found if d["id"] == deploy_id)
        return {**d, "requested_by": "ana", "stalled": False, "nodes": [{"node": "k", "state": "failed", "stalled": None}]}

    def nodes(self, stage):
        return [{"node": "k", "revision": "abc", "seen_at": 1764664041.25}]


def test_status_shows_a_pull_request_only_while_it_is_the_stages_state(monkeypatch):
    """Issue 22: `status` kept showing an old failed pull request after later push deploys."""
    from pampa_deployer.accesspoint import client
    from pampa_deployer.cli import status
    pull = {"id": 3, "mode": "pull", "state": "FAILED", "branch": "main"}
    cases = [([pull], 3), ([{"id": 4, "mode": "push", "state": "DONE"}, pull], None),
             ([{"id": 4, "mode": "push", "state": "DONE"}, {**pull, "state": "TAKEN"}], 3)]
    for deploys, shown in cases:
        monkeypatch.setattr(client.AccessPointClient, "from_stage", classmethod(lambda cls, stage: _AccessPoint(deploys)))
        found, error = status._last_pull_request(_Stage())
        assert error is None and (found or {}).get("id") == shown, deploys


def test_status_json_gives_every_time_as_iso(monkeypatch):
    """Issue 22: `status --json` mixed ISO times with the access point's Unix floats."""
    from pampa_deployer.accesspoint import client
    from pampa_deployer.cli import status
    open_push = {"id": 5, "mode": "push", "state": "TAKEN", "created_at": 1764664041.5, "updated_at": 1764664042.0}
    monkeypatch.setattr(client.AccessPointClient, "from_stage", classmethod(lambda cls, stage: _AccessPoint([open_push])))
    versions, requests, error = status._access_point(_Stage())
    assert requests[0]["created_at"] == "2025-12-02T08:27:21Z" and requests[0]["updated_at"] == "2025-12-02T08:27:22Z"

    class Host:
        name, roles, branch = "k", ("kepler",), "main"

    row = status._row(Host(), {"revision": "abc", "subject": "s", "last": None, "incomplete": None}, versions,
                      False, "abc")
    assert row["agent_seen_at"] == "2025-12-02T08:27:21Z"
