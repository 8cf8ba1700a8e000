"""Health checks and step order as pure builders: exact command strings, validation, the plan."""
from __future__ import annotations

import http.server
import re
import subprocess
import threading

import pytest

from pampa_deployer.errors import ConfigError, ConfigErrors
from pampa_deployer.inventory import stage_from_mapping
from pampa_deployer.plan import build_plan
from pampa_deployer.steps.health import command_script, http_script, spec_of

HOSTS = {"k1": {"address": "10.0.0.1", "roles": ["kepler"]},
         "e1": {"address": "10.0.0.2", "roles": ["euler"]},
         "n1": {"address": "10.0.0.3", "roles": ["newton"]}}
WEB = {"roles": ["kepler", "euler"], "url": "http://{address}:9292/", "contains": "revision={revision}",
       "retries": 2, "interval": 0.5}


def stage(**extra):
    return stage_from_mapping({"app": "shop", "repo": "git@example.com:shop.git", "hosts": HOSTS, **extra},
                              environ={})


def host_plan(plan, name):
    return next(h for h in plan.hosts if h.host.name == name)


def steps_of(plan, name):
    return [s.name for s in host_plan(plan, name).steps]


def test_http_check_is_one_exact_loop_run_on_the_host():
    plan = build_plan(stage(checks={"web": WEB}))
    step = next(s for s in host_plan(plan, "k1").steps if s.name == "health_check")
    (check,) = step.actions
    assert check.name == "web"
    assert check.display() == ("check web: GET http://10.0.0.1:9292/ -> 200, body contains 'revision={revision}' "
                               "(3 attempt(s) 0.5s apart, 5s each, from the host)")
    assert check.command.line() == (
        "cd ~/code/shop && { rev=$(git rev-parse HEAD 2>/dev/null); want=revision=\"$rev\"; i=0; ok=; "
        "while [ \"$i\" -lt 3 ]; do [ \"$i\" -gt 0 ] && sleep 0.5; i=$((i+1)); "
        "out=$(curl -sS -m 5 -w ' pampa-status=%{http_code}' http://10.0.0.1:9292/ 2>&1); "
        "code=${out##*pampa-status=}; body=${out% pampa-status=*}; "
        "if [ \"$code\" = 200 ] && case \"$body\" in *\"$want\"*) true;; *) false;; esac; then ok=1; break; fi; "
        "echo \"check web: attempt $i/3: status $code, body: $(printf '%s' \"$body\" | head -c 300 | tr '\\n' ' ')\"; "
        "done; if [ -n \"$ok\" ]; then echo \"check web: passed on attempt $i/3\"; "
        "else echo \"check web failed after 3 attempts: expected status 200 containing '$want'; last: status $code, "
        "body: $(printf '%s' \"$body\" | head -c 300 | tr '\\n' ' ')\" >&2; false; fi; }")
    assert check.command.timeout == 3 * (5 + 0.5) + 30


def test_command_check_quotes_its_command_and_bounds_each_attempt():
    plan = build_plan(stage(checks={"worker": {"roles": ["newton"], "run": "kill -0 $(cat ~/run/{app}.pid)",
                                               "retries": 0, "timeout": 2, "delay": 1}}))
    (check,) = next(s for s in host_plan(plan, "n1").steps if s.name == "health_check").actions
    assert check.display() == ("check worker: run 'kill -0 $(cat ~/run/shop.pid)' -> exit 0 "
                               "(1 attempt(s) 1s apart, 2s each, after 1s, from the host)")
    assert check.command.line() == (
        "cd ~/code/shop && { sleep 1; i=0; ok=; while [ \"$i\" -lt 1 ]; do [ \"$i\" -gt 0 ] && sleep 1; "
        "i=$((i+1)); out=$(timeout 2 sh -c 'kill -0 $(cat ~/run/shop.pid)' 2>&1); rc=$?; "
        "if [ \"$rc\" = 0 ]; then ok=1; break; fi; "
        "echo \"check worker: attempt $i/1: exit $rc: $(printf '%s' \"$out\" | tail -n 3 | tr '\\n' ' ')\"; done; "
        "if [ -n \"$ok\" ]; then echo \"check worker: passed on attempt $i/1\"; else echo \"check worker failed "
        "after 1 attempts: expected exit 0; last: exit $rc: $(printf '%s' \"$out\" | tail -n 3 | tr '\\n' ' ')\" "
        ">&2; false; fi; }")


def test_checks_follow_the_restarts_only_where_they_apply():
    plan = build_plan(stage(checks={"web": WEB}))
    assert steps_of(plan, "k1")[-4:] == ["restart_processes", "health_check", "report_version", "open_gate"]
    assert steps_of(plan, "e1") == ["bundle", "restart_puma", "health_check", "report_version"]
    assert "health_check" not in steps_of(plan, "n1")
    assert "health_check" not in steps_of(build_plan(stage()), "k1")  # no checks, no step
    rollback = build_plan(stage(checks={"web": WEB}), kind="rollback", revision="a" * 40)
    assert "health_check" in steps_of(rollback, "k1")  # a rollback proves itself too
    off = build_plan(stage(checks={"web": {**WEB, "enabled": False}}))
    assert "health_check" not in steps_of(off, "k1")


def test_expected_text_quotes_literal_parts_and_fills_the_revision_on_the_host():
    spec = spec_of("web", {"url": "http://x/", "contains": "it's {app} at {revision}!"})
    script = http_script(spec, "http://x/", {"app": "a b"})
    assert "want='it'\"'\"'s a b at '\"$rev\"'!';" in script


@pytest.mark.parametrize("checks, message", [
    ({"web": {"url": "http://x/", "run": "true"}}, "checks.web: give either `url:`"),
    ({"web": {"roles": ["kepler"]}}, "checks.web: give either `url:`"),
    ({"w": {"run": "true", "contains": "x"}}, "checks.w.contains: only HTTP checks"),
    ({"web": {"url": "http://x/", "roles": ["eular"]}}, "unknown role 'eular' (did you mean 'euler'?)"),
    ({"web": {"url": "http://x/", "retries": "many"}}, "checks.web.retries: expected an integer"),
])
def test_bad_checks_are_one_clear_line(checks, message):
    with pytest.raises((ConfigError, ConfigErrors), match=re.escape(message)):
        stage(checks=checks)


def test_unknown_variable_in_a_check_names_the_check():
    with pytest.raises(ConfigError, match=r"checks.web: unknown variable \{port\}"):
        build_plan(stage(checks={"web": {"url": "http://{address}:{port}/"}}))


def test_bundle_runs_before_migrate_unless_the_seed_order_is_asked_for():
    assert steps_of(build_plan(stage()), "k1")[3:5] == ["bundle", "migrate"]
    assert steps_of(build_plan(stage()), "n1")[3:5] == ["bundle", "migrate"]
    seed = build_plan(stage(bundler={"before_migrate": False}))
    assert steps_of(seed, "k1")[3:5] == ["migrate", "bundle"]
    assert steps_of(seed, "n1")[3:5] == ["migrate", "bundle"]


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 502 twice, then 200 with the revision."""

    answers: list = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        code, body = self.answers.pop(0) if self.answers else (200, "")
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("sh", ["sh", "bash"])
def test_http_loop_runs_in_a_posix_shell(server, sh, tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    rev = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    url = f"http://127.0.0.1:{server.server_port}/"
    spec = spec_of("web", {"url": url, "contains": "revision={revision}", "retries": 2, "interval": 0.1})
    _Flaky.answers[:] = [(502, "booting"), (200, "revision=old"), (200, f"revision={rev}")]
    ok = subprocess.run([sh, "-c", http_script(spec, url, {})], cwd=tmp_path, capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0 and "passed on attempt 3/3" in ok.stdout, ok.stdout + ok.stderr
    _Flaky.answers[:] = [(200, "revision=old")] * 3
    bad = subprocess.run([sh, "-c", http_script(spec, url, {})], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (f"check web failed after 3 attempts: expected status 200 containing "
                                  f"'revision={rev}'; last: status 200, body: revision=old")


def test_command_loop_reports_the_last_exit_and_output():
    spec = spec_of("w", {"run": "echo nope; exit 3", "retries": 1, "interval": 0.1, "timeout": 5})
    result = subprocess.run(["sh", "-c", command_script(spec, {})], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == "check w: attempt 1/2: exit 3: nope\ncheck w: attempt 2/2: exit 3: nope\n"
    assert result.stderr == "check w failed after 2 attempts: expected exit 0; last: exit 3: nope\n"


def test_pampa_check_looks_for_curl_and_the_check_command_not_for_shell_words():
    from pampa_deployer.commands.readiness import programs_used

    def commands_used(hp):
        return programs_used(c for step in hp.steps for action in step.actions for c in action.commands())
    plan = build_plan(stage(checks={"web": WEB, "worker": {"roles": ["newton"], "run": "pgrep -f worker"}}))
    assert "curl" in commands_used(host_plan(plan, "k1"))
    assert not {"while", "do", "done", "i=0"} & set(commands_used(host_plan(plan, "k1")))
    assert {"timeout", "pgrep"} <= set(commands_used(host_plan(plan, "n1")))
