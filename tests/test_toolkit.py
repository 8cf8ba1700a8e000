"""Unit tests (no root, no fleet) of the toolkit's pure command builders, hooks and webhooks."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pampa_deployer.cli import main
from pampa_deployer.cli.exec import HostOutput, block, summary
from pampa_deployer.commands import logs as logcmds
from pampa_deployer.commands import readiness
from pampa_deployer.commands.adhoc import adhoc_command
from pampa_deployer.commands.watch import stoppable
from pampa_deployer.engine.around.hooks import Hooks, hook_env
from pampa_deployer.engine.around.notify import Notifier, finished_payload, started_payload
from pampa_deployer.errors import Refused
from pampa_deployer.inventory import stage_from_mapping
from pampa_deployer.plan import build_plan, template_variables
from pampa_deployer.readiness import probe_for, sudo_commands
from pampa_deployer.redact import MASK, Redactor
from pampa_deployer.steps.actions import Command


def stage(**extra):
    data = {"app": "shop", "repo": "git@example.com:shop.git",
            "hosts": {"k1": {"address": "10.0.0.1", "roles": ["kepler"], "env": {"RACK_ENV": "production"}},
                      "n1": {"address": "10.0.0.3", "roles": ["newton"]}}}
    data.update(extra)
    return stage_from_mapping(data, environ={})


# -- command builders, exact strings ---------------------------------------------------------------
def test_stoppable_kills_its_process_group_when_stdin_closes():
    cmd = stoppable(Command("sleep 5", cwd="~/code/shop", timeout=9))
    assert cmd.script == (
        "exec 3<&0 </dev/null; { cat <&3 >/dev/null 2>&1; kill -TERM 0; } >/dev/null 2>&1 & w=$!; "
        "\"${SHELL:-/bin/sh}\" -c 'cd ~/code/shop && sleep 5'; rc=$?; kill $w 2>/dev/null; exit $rc")
    assert cmd.timeout == 9 and cmd.cwd is None and cmd.prefix is None


def test_adhoc_command_runs_like_a_deploy_step_and_masks():
    s = stage(prefix="source /etc/profile.d/rvm.sh")
    host = s.host("k1")
    red = Redactor().with_values("hunter2-pass")
    cmd = adhoc_command(host, ["echo", "hunter2-pass", "|", "wc", "-c"], red, timeout=30)
    inner = "source /etc/profile.d/rvm.sh && export RACK_ENV=production && cd ~/code/shop && echo hunter2-pass | wc -c"
    assert cmd.script == stoppable(Command(inner)).script
    assert "hunter2-pass" not in cmd.display() and MASK in cmd.display() and cmd.timeout == 30


def test_log_commands_and_sources():
    s = stage()
    assert logcmds.host_units(s, s.host("k1"), template_variables(s, s.host("k1"))) == ["shop_app", "shop_dispatcher", "shop_jobs", "shop_planner"]
    assert logcmds.host_units(s, s.host("n1"), template_variables(s, s.host("n1"))) == ["shop_worker"]
    assert logcmds.journal_command(["shop_worker"], 20, False).script == \
        "journalctl --no-pager --output=short-iso -n 20 -u shop_worker"
    assert logcmds.journal_command(["a b"], 5, True).script == stoppable(
        Command("journalctl --no-pager --output=short-iso -n 5 -u 'a b' -f")).script
    assert logcmds.tail_command(["~/log/x.log", "/var/log/a b"], 3, False).script == \
        "tail -n 3 ~/log/x.log '/var/log/a b'"
    assert logcmds.tail_command(["/l"], 3, True).script == stoppable(Command("tail -n 3 -F /l")).script
    files = stage(logs={"files": ["log/{unit}.log", "/var/log/shop.log"]})
    assert logcmds.log_files(files, files.host("n1"), template_variables(files, files.host("n1")), ["shop_worker"]) == \
        ["~/code/shop/log/shop_worker.log", "/var/log/shop.log"]


def test_check_probe_lists_programs_but_not_paths_or_app_scripts():
    s = stage(units={"restart": "cd {path} && bin/restart {unit}"},
              steps={"tool": {"run": "FOO=1 frobnicate --x | grep y", "roles": ["kepler"]}})
    hp = next(h for h in build_plan(s).hosts if h.host.name == "k1")
    assert readiness.programs_used(c for st in hp.steps for a in st.actions for c in a.commands()) == \
        ["git", "bundle", "frobnicate", "grep"]
    assert sudo_commands(hp) == []
    sudo = next(h for h in build_plan(stage()).hosts if h.host.name == "k1")
    assert sudo_commands(sudo)[0] == "sudo systemctl restart shop_app"
    assert readiness.parse("git=ok:abc\npath=creatable\nnoise\ndisk=100:/root") == \
        {"git": "ok:abc", "path": "creatable", "disk": "100:/root"}
    probe = probe_for(stage(), sudo)
    assert "git ls-remote --exit-code --heads git@example.com:shop.git refs/heads/main" in probe.script
    assert "sudo -n true" in probe.script and "mkdir" not in probe.script  # a check creates nothing


def test_secrets_step_creates_a_folder_outside_the_code_path(tmp_path):
    (tmp_path / "c.rb").write_text("X = 'abcdef'\n")
    s = stage_from_mapping({"app": "shop", "repo": "r", "hosts": {"k1": {"roles": ["kepler"]}},
                            "secrets": [{"local": str(tmp_path / "c.rb"), "remote": "/etc/shop/c.rb"},
                                        {"local": str(tmp_path / "c.rb"), "remote": "c.rb"}]}, environ={})
    step = next(st for st in build_plan(s).hosts[0].steps if st.name == "secrets")
    assert [a.display() for a in step.actions] == [
        "mkdir -p /etc/shop", "upload " + str(tmp_path / "c.rb") + " -> /etc/shop/c.rb (mode 0600, 13 bytes, "
        "content masked)", "upload " + str(tmp_path / "c.rb") + " -> ~/code/shop/c.rb (mode 0600, 13 bytes, "
        "content masked)"]


def test_exec_blocks_and_summary():
    ok = HostOutput("k1", ("kepler",), exit_code=0, lines=[("stdout", "hi")], seconds=0.25)
    bad = HostOutput("n1", ("newton",), exit_code=3, lines=[("stderr", "boom")], seconds=1)
    gone = HostOutput("e1", ("euler",), error="e1 (10.0.0.2:22): connection refused")
    assert block(ok) == ["=== k1 [kepler] ok (exit 0, 0.25s)", "hi"]
    assert block(bad) == ["=== n1 [newton] FAILED (exit 3, 1.00s)", "boom"]
    assert block(gone) == ["=== e1 [euler] UNREACHABLE: e1 (10.0.0.2:22): connection refused"]
    assert summary([ok, bad, gone]) == "exec on 3 hosts: 1 ok, 2 failed (n1 exit 3, e1 unreachable)"
    assert summary([bad]) == "exec on 1 host: 0 ok, 1 failed (n1 exit 3)"  # not "1 hosts"
    assert bad.as_json()["stderr"] == "boom\n" and not bad.as_json()["ok"]


def test_exec_command_after_double_dash_is_never_read_as_options(capsys):
    assert main(["stages", "--", "ls"]) == 2
    assert "only `pampa exec` takes a command after `--`" in capsys.readouterr().err


# -- hooks -----------------------------------------------------------------------------------------
def write_hook(folder, name, body):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def test_hooks_get_the_run_in_env_and_a_failing_pre_hook_refuses(tmp_path):
    hooks_dir = tmp_path / "stages" / "hooks"
    write_hook(hooks_dir, "pre-deploy", 'echo "$PAMPA_HOOK $PAMPA_STAGE $PAMPA_BRANCH $PAMPA_HOSTS"; exit 1')
    write_hook(hooks_dir, "post-deploy", 'echo "$PAMPA_RESULT $PAMPA_REVISION $PAMPA_DURATION $PAMPA_REPORT"')
    lines = []
    hooks = Hooks(hooks_dir, on_line=lambda name, line: lines.append((name, line)))
    env = hook_env("prod", "deploy", "main", "ana", ["k1", "n1"])
    with pytest.raises(Refused, match="pre-deploy exited 1; the deploy did not start"):
        hooks.pre("deploy", env)
    assert lines == [("pre-deploy", "pre-deploy prod main k1,n1")]
    result = hooks.post("deploy", True, hook_env("prod", "deploy", "main", "ana", ["k1"], revision="abc123",
                                                  result="ok", report="/r.json", duration=2.04))
    assert result.ok and lines[-1] == ("post-deploy", "ok abc123 2.0 /r.json")
    assert hooks.post("deploy", False, env) is None  # no on-failure hook: nothing runs
    assert hooks.pre("rollback", env) is None


def test_a_hook_that_is_not_executable_is_a_failed_guard_not_skipped(tmp_path):
    """A pre-deploy hook without +x stops the deploy; its line must not say it was skipped."""
    hooks_dir = tmp_path / "stages" / "hooks"
    write_hook(hooks_dir, "pre-deploy", "exit 0").chmod(0o644)
    lines = []
    hooks = Hooks(hooks_dir, on_line=lambda name, line: lines.append(line))
    with pytest.raises(Refused, match="pre-deploy exited 126; the deploy did not start"):
        hooks.pre("deploy", hook_env("prod", "deploy", "main", "ana", ["k1"]))
    assert lines == [f"{hooks_dir / 'pre-deploy'} is not executable; `chmod +x` it (it counts as failed: exit 126)"]


def test_a_hook_that_hangs_is_stopped_with_everything_it_started(tmp_path):
    marker = tmp_path / "child-alive"
    write_hook(tmp_path, "pre-deploy", f"(sleep 30; touch {marker}) & sleep 30")
    hooks = Hooks(tmp_path, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(Refused, match="timed out after 0.5s"):
        hooks.pre("deploy", {})
    assert time.monotonic() - t0 < 20
    (tmp_path / "pre-deploy").unlink()
    assert not marker.exists()


# -- webhooks --------------------------------------------------------------------------------------
class Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((self.path, json.loads(body)))
        self.send_response(500 if self.path == "/broken" else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_payloads_are_posted_and_failures_are_masked_warnings():
    Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        warnings = []
        notifier = Notifier([f"{base}/hooks/T0KEN-abc", f"{base}/broken"], timeout=5, warn=warnings.append)
        start = started_payload("prod", "deploy", "main", "ana", ["k1", "n1"])
        end = finished_payload("prod", "deploy", "main", "ana", ["k1", "n1"], "failed", ["n1"], 12.3, "3f2a9c1abcdef0")
        notifier.send(start)
        notifier.send(end)
        said = [started_payload("prod", "deploy", "main", "ana", ["k1"], message="hotfix 142"),
                finished_payload("prod", "deploy", "main", "ana", ["k1"], "ok", [], 3.0, "3f2a9c1abcdef0",
                                 message="hotfix 142")]
    finally:
        server.shutdown()
    assert [p for p, _ in Receiver.received] == ["/hooks/T0KEN-abc", "/broken"] * 2
    assert Receiver.received[0][1]["text"] == "ana started deploy of main to prod (2 hosts)"
    got = Receiver.received[2][1]
    assert got["text"] == "deploy of main 3f2a9c1abcde to prod by ana: failed in 12s; failed: n1"
    assert got["result"] == "failed" and got["failed_hosts"] == ["n1"] and got["duration"] == 12.3
    assert got["message"] is None  # no -m: the field is there, empty
    # issue 22/23: the run's -m is in the payload and in the text Slack shows
    assert said[0]["message"] == "hotfix 142" and said[0]["text"] == "ana started deploy of main to prod (1 hosts): hotfix 142"
    assert said[1]["text"] == "deploy of main 3f2a9c1abcde to prod by ana (hotfix 142): ok in 3s"
    assert len(warnings) == 2 and all("HTTP 500" in w and "broken" not in w and MASK in w for w in warnings)


def test_webhook_that_never_answers_times_out_as_a_warning():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    try:
        t0 = time.monotonic()
        warnings = Notifier([f"http://127.0.0.1:{silent.getsockname()[1]}/x"], timeout=0.5).send({"text": "hi"})
        assert time.monotonic() - t0 < 20
    finally:
        silent.close()
    assert len(warnings) == 1 and "failed" in warnings[0] and "127.0.0.1" not in warnings[0]


# -- narrowing a plan ------------------------------------------------------------------------------
def test_narrow_to_steps_keeps_the_gate_and_drops_hosts_without_them():
    from pampa_deployer.errors import ConfigError
    from pampa_deployer.narrow import narrow
    s = stage_from_mapping({"app": "shop", "repo": "r", "hosts": {
        "k1": {"roles": ["kepler"]}, "e1": {"roles": ["euler"]}, "n1": {"roles": ["newton"]}}}, environ={})
    plan = narrow(build_plan(s), only=["restart_puma"], kind="run")
    assert plan.kind == "run" and [(h.host.name, [st.name for st in h.steps], h.gated) for h in plan.hosts] == \
        [("k1", ["restart_puma"], False), ("e1", ["restart_puma"], True)]
    eulers = narrow(build_plan(s, roles=["euler"]), only=["restart_puma"])
    assert [h.gated for h in eulers.hosts] == [False]
    assert "no kepler host in this run: gated roles start without waiting" in eulers.notes
    skipped = narrow(build_plan(s), skip=["migrate", "bundle"])
    assert [st.name for st in next(h for h in skipped.hosts if h.host.name == "n1").steps] == ["git_fetch", "git_reset", "secrets", "restart_workers",
                                                           "report_version"]
    assert "skipped steps: bundle, migrate" in skipped.notes
    with pytest.raises(ConfigError, match=r"--skip: unknown step 'migrat' \(did you mean 'migrate'\?\)"):
        narrow(build_plan(s), skip=["migrat"])
    with pytest.raises(ConfigError, match="no selected host runs restart_workers"):
        narrow(build_plan(s, roles=["euler"]), only=["restart_workers"])


def test_webhook_urls_are_masked_in_config(tmp_path, monkeypatch, capsys):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "prod.yml").write_text(
        "app: shop\nrepo: r\nhosts: {k1: {roles: [kepler]}}\n"
        "notify: {webhooks: ['https://hooks.slack.com/services/T000/B000/XXXXSECRET']}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["config", "prod"]) == 0
    out = capsys.readouterr().out
    assert "notify.webhooks" in out and "XXXXSECRET" not in out and MASK in out


def test_check_probe_exact_string():
    s = stage(units={"restart": "sudo systemctl restart {unit}"}, sequences={"newton": ["git_fetch", "restart_workers"]})
    hp = next(h for h in build_plan(s).hosts if h.host.name == "n1")
    # The plan's walk gives the builder its plain data: the same probe as with the data written out.
    plain = readiness.probe_command(hp.host, "git@example.com:shop.git", sudo=True, programs=["git", "systemctl"])
    assert probe_for(s, hp).line() == plain.line()
    assert plain.line() == (
        "echo probe=started ; "
        'out=$(GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="${GIT_SSH_COMMAND:-ssh -o BatchMode=yes}" timeout 30 '
        "git ls-remote --exit-code --heads git@example.com:shop.git refs/heads/main 2>&1); rc=$?; "
        'if [ $rc -eq 0 ]; then echo git=ok:$(echo "$out" | cut -c1-12); elif [ $rc -eq 2 ]; then echo git=no-branch; '
        "elif [ $rc -eq 127 ]; then echo git=not-installed; "
        "else echo git=unreachable:$(echo \"$out\" | grep -v '^$' | head -n 1); fi ; "
        'p=~/code/shop; if [ -d "$p" ]; then if [ -w "$p" ]; then echo path=ok; else echo path=not-writable:"$p"; '
        'fi; else d="$p"; while [ ! -e "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done; '
        'if [ -d "$d" ] && [ -w "$d" ]; then echo path=creatable; else echo path=blocked:"$d"; fi; fi ; '
        'if [ -d ~/code/shop ] && [ ! -d ~/code/shop/.git ] && [ -n "$(ls -A ~/code/shop 2>/dev/null)" ]; '
        "then echo checkout=not-a-checkout; fi ; "
        'd=~/code/shop; while [ ! -e "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done; '
        "echo disk=$(df -Pk \"$d\" 2>/dev/null | awk 'NR==2 {print $4}'):\"$d\" ; "
        'if command -v sudo >/dev/null; then e=$(sudo -n true 2>&1) && echo sudo=ok || '
        'echo sudo=needs-password:$(echo "$e" | head -n 1); else echo sudo=not-installed; fi ; '
        "command -v git >/dev/null 2>&1 && echo cmd:git=ok || echo cmd:git=missing ; "
        "command -v systemctl >/dev/null 2>&1 && echo cmd:systemctl=ok || echo cmd:systemctl=missing")


def test_run_and_skip_dry_runs_show_only_the_chosen_steps(tmp_path, monkeypatch, capsys):
    (tmp_path / "stages" / "hooks").mkdir(parents=True)
    (tmp_path / "stages" / "prod.yml").write_text(
        "app: shop\nrepo: r\nhosts: {k1: {roles: [kepler]}, e1: {roles: [euler]}, n1: {roles: [newton]}}\n")
    hook = tmp_path / "stages" / "hooks" / "pre-deploy"
    hook.write_text("#!/bin/sh\nexit 1\n")  # a dry run runs no hook: this one would refuse
    hook.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "prod", "restart_puma", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sudo systemctl restart shop_app" in out and "n1" not in out and "bundle install" not in out
    assert main(["deploy", "prod", "--skip", "bundle", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "git reset --hard origin/main" in out and "bundle install" not in out
    assert main(["deploy", "prod", "--skip", "bundel"]) == 2
    assert "--skip: unknown step 'bundel' (did you mean 'bundle'?)" in capsys.readouterr().err
