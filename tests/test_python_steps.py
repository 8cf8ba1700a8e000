"""Steps written in Python, without root: loading the tasks modules, the plan, the ``c`` a task gets, and
whole deployments over the local backend (real bash) and a recording fake. The fleet tests
(test_python_steps_fleet.py) prove the same over real sshd."""
from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from pampa_deployer.cli import main
from pampa_deployer.commands import Command
from pampa_deployer.engine import events as ev
from pampa_deployer.engine.backends.dryrun import DryRunBackend
from pampa_deployer.engine.backends.local import LocalBackend
from pampa_deployer.engine.deployment import Deployment, DeployRequest
from pampa_deployer.engine.executor import perform
from pampa_deployer.engine.results import CommandResult, StepFailed
from pampa_deployer.engine.tasks.context import TaskContext
from pampa_deployer.errors import ConfigErrors
from pampa_deployer.inventory import load_stage
from pampa_deployer.plan import build_plan, known_steps
from pampa_deployer.redact import MASK

TASKS = '''
from invoke import task
from pampa_deployer.tasks import migrate


@task
def stamp(c):
    """Write the revision the host is at into ~/stamp.txt."""
    print("stamping", c.config.pampa.host, ",".join(c.config.pampa.roles))
    c.run("echo {} {} > ~/stamp.txt".format(c.config.pampa.host, c.config.pampa.revision))


@task
def explode(c):
    """Fail on purpose."""
    c.run("echo before-the-bang")
    raise RuntimeError("no luck on " + c.config.pampa.host)


@task
def snooze(c):
    """Python that never returns in time."""
    time.sleep(30)


@task
def with_migrate(c):
    """A built-in step, called from a task."""
    migrate(c)


import time
'''


def project(tmp_path: Path, code: str = TASKS, **settings) -> Path:
    """A project folder: stages/t.yml for hosts k1 (kepler), n1 (newton), e1 (euler); deploy/tasks.py."""
    (tmp_path / "deploy").mkdir(exist_ok=True)
    (tmp_path / "deploy" / "tasks.py").write_text(textwrap.dedent(code))
    data = {"app": "shop", "repo": "/nonexistent.git", "path": "~/code", "tasks": "deploy/tasks.py",
            "steps": {"migrate": {"run": "echo migrating {name}"}},
            "hosts": {"k1": {"roles": ["kepler"]}, "n1": {"roles": ["newton"]}, "e1": {"roles": ["euler"]}}}
    data.update(settings)
    (tmp_path / "stages").mkdir(exist_ok=True)
    (tmp_path / "stages" / "t.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    return tmp_path / "stages"


def deploy(stages: Path, homes: Path, **request):
    """Deploy stage t with each host's commands in a local bash whose $HOME is homes/<host> (code in ~/code)."""
    stage = load_stage("t", stages)
    bus, events = ev.EventBus(), []
    bus.subscribe(events.append)

    def backend(host):
        if request.get("dry_run"):
            return DryRunBackend(host.name)
        (homes / host.name / "code").mkdir(parents=True, exist_ok=True)
        return LocalBackend(host.name, str(homes / host.name))

    outcome = Deployment(DeployRequest(stage=stage, handle_signals=False, lock=False, **request), bus,
                         backends=backend).run()
    return outcome, events


def lines(events, host=None, step=None) -> list[str]:
    return [e.line for e in events if isinstance(e, ev.Output) and (host is None or e.host == host)
            and (step is None or e.step == step)]


# -- loading and planning ------------------------------------------------------------------------------

def test_a_task_in_a_sequence_is_a_step_after_the_step_before_it(tmp_path):
    stages = project(tmp_path, sequences={"kepler": ["git_fetch", "git_reset", "stamp", "migrate", "open_gate"]},
                     steps={"explode": {"roles": ["kepler"], "after": "stamp"}})
    stage = load_stage("t", stages)
    plan = build_plan(stage)
    kepler = next(h for h in plan.hosts if h.host.name == "k1")
    assert [s.name for s in kepler.steps] == ["git_fetch", "git_reset", "stamp", "explode", "migrate", "open_gate"]
    stamp = kepler.steps[2]
    assert stamp.custom and stamp.actions[0].display() == \
        "task stamp (deploy/tasks.py): Write the revision the host is at into ~/stamp.txt."
    assert "stamp" not in [s.name for h in plan.hosts if h.host.name != "k1" for s in h.steps]
    assert known_steps(stage)[-5:] == ["open_gate", "explode", "stamp", "snooze", "with_migrate"]


def test_plan_lists_a_task_step_by_name_and_docstring(tmp_path, capsys):
    stages = project(tmp_path, sequences={"kepler": ["stamp", "open_gate"]})
    assert main(["plan", "t", "--stages", str(stages), "--hosts", "k1"]) == 0
    out = capsys.readouterr().out
    assert "stamp (custom)" in out
    assert "task stamp (deploy/tasks.py): Write the revision the host is at into ~/stamp.txt." in out


@pytest.mark.parametrize("tasks, settings, message", [
    (None, {"tasks": "deploy/missing.py"}, "tasks: no Python file deploy/missing.py"),
    ("def broken(:\n", {}, "tasks: cannot import deploy/tasks.py (line 1): SyntaxError"),
    ("import nothing_here_4401\n", {}, "cannot import deploy/tasks.py: ModuleNotFoundError"),
    ("x = 1\n", {}, "deploy/tasks.py has no Invoke task"),
    ("from invoke import task\n@task\ndef needs(c, who):\n    pass\n", {},
     "task needs in deploy/tasks.py needs who; a step is called with the connection `c` only"),
    ("from invoke import task\n@task\ndef migrate(c):\n    pass\n", {},
     "task migrate in deploy/tasks.py has the name of a built-in step; rename it"),
    (TASKS, {"sequences": {"kepler": ["stmap"]}}, "unknown step 'stmap' (did you mean 'stamp'?)"),
    (TASKS, {"steps": {"stmap": {"roles": ["kepler"]}}}, "steps.stmap: unknown step (did you mean 'stamp'?)"),
])
def test_bad_tasks_modules_are_one_clear_config_error(tmp_path, tasks, settings, message):
    stages = project(tmp_path, tasks if tasks is not None else TASKS, **settings)
    with pytest.raises(ConfigErrors) as e:
        load_stage("t", stages)
    assert any(message in m for m in e.value.messages), e.value.messages
    assert all(m.startswith("stages/t.yml: ") or "t.yml: " in m for m in e.value.messages)


def test_a_bad_tasks_module_exits_2_with_one_line(tmp_path, capsys):
    stages = project(tmp_path, "raise ValueError('half-written')\n")
    assert main(["plan", "t", "--stages", str(stages)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot import deploy/tasks.py: ValueError: half-written" in err[0]


def test_a_fabfile_with_pampas_collection_gives_only_its_own_tasks(tmp_path):
    fabfile = TASKS + "\nfrom pampa_deployer.tasks import collection\nns = collection(stamp, explode)\n"
    stages = project(tmp_path, fabfile)
    assert sorted(load_stage("t", stages).tasks) == ["explode", "stamp"]  # built-ins skipped, wrappers unwrapped


# -- the c a task gets ---------------------------------------------------------------------------------

class Recorder:
    """A backend that records each command line and answers ``rev-parse`` with a revision."""

    def __init__(self, fail: str | None = None):
        self.sent: list[Command] = []
        self.fail = fail

    def run(self, command, on_line=None):
        self.sent.append(command)
        if "rev-parse" in command.script:
            return CommandResult(0, "f00d\n")
        if self.fail and self.fail in command.script:
            return CommandResult(3, "", "it broke")
        return CommandResult(0, "out\n")

    def put(self, upload):
        self.sent.append(Command(f"put {upload.remote} {upload.mode:o} {upload.content!r}"))


class Sink:
    def __init__(self):
        self.said: list[str] = []
        self.abort = False

    def command_started(self, display):
        self.said.append(f"$ {display}")

    def output(self, stream, line):
        self.said.append(f"{stream}: {line}")

    def gate_reached(self):
        pass

    def report_version(self, action, revision):
        pass

    def aborted(self):
        return self.abort


def action_for(tmp_path, name, **settings):
    stages = project(tmp_path, prefix="source ~/.rvm", env={"RACK_ENV": "production"}, **settings)
    plan = build_plan(load_stage("t", stages), hosts=["k1"])
    stage = plan.stage
    from pampa_deployer.plan import build_step, step_context
    return build_step(stage, step_context(stage, stage.host("k1")), name, ("kepler",)).actions[0]


def test_c_run_builds_the_hosts_command_with_cd_prefix_env_and_the_deadline(tmp_path):
    action = action_for(tmp_path, "stamp")
    backend = Recorder()
    c = TaskContext(action, backend, Sink(), perform, deadline=time.monotonic() + 50, revision="f00d")
    with c.cd("db"), c.prefix("ulimit -n 4096"):
        c.run("ls", env={"LANG": "C"}, timeout=10)
    c.run("pwd")
    first, second = backend.sent
    assert first.line() == ("source ~/.rvm && export RACK_ENV=production && export LANG=C && cd ~/code/db && "
                            "ulimit -n 4096 && ls")
    assert first.timeout == 10
    assert second.cwd == "~/code" and 49 < second.timeout <= 50  # the step's remaining time
    assert c.config.pampa.host == "k1" and c.config.pampa.roles == ["kepler"] and c.config.pampa.revision == "f00d"
    assert c.config.pampa.settings["app"] == "shop" and c.config.pampa.branch == "main"
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        c.run("ls", env={"A;rm -rf /": "x"})
    with pytest.raises(TypeError, match="does not take watchers"):
        c.run("ls", watchers=[])


def test_c_run_raises_like_fabric_and_warn_returns_the_result(tmp_path):
    from invoke.exceptions import UnexpectedExit
    c = TaskContext(action_for(tmp_path, "stamp"), Recorder(fail="false"), Sink(), perform)
    assert c.run("true").stdout == "out\n"
    result = c.run("false", warn=True)
    assert (result.exited, result.ok, result.stderr) == (3, False, "it broke")
    with pytest.raises(UnexpectedExit):
        c.run("false")


def test_c_put_uploads_bytes_into_the_code_path(tmp_path):
    backend = Recorder()
    c = TaskContext(action_for(tmp_path, "stamp"), backend, Sink(), perform)
    c.put(b"hello", "public/robots.txt", mode=0o640)
    assert backend.sent[-1].script == "put ~/code/public/robots.txt 640 b'hello'"


# -- the executor's handler ------------------------------------------------------------------------------

def test_a_raising_task_fails_its_step_with_one_line_and_the_traceback_as_output(tmp_path):
    sink = Sink()
    with pytest.raises(StepFailed) as failed:
        perform(action_for(tmp_path, "explode"), Recorder(), sink)
    assert failed.value.message == "task explode raised RuntimeError: no luck on k1 (traceback in the host's log)"
    assert sink.said[0] == "$ call task explode (deploy/tasks.py): Fail on purpose."
    assert "stderr: Traceback (most recent call last):" in sink.said
    assert any('raise RuntimeError("no luck on " + c.config.pampa.host)' in s for s in sink.said)
    assert not any("taskcall.py" in s for s in sink.said)  # the traceback starts in the task


def test_a_failed_command_names_the_task_command_and_exit_code(tmp_path):
    tasks = "from invoke import task\n@task\ndef check(c):\n    c.run('test -f ready')\n"
    (tmp_path / "p").mkdir()
    stages = project(tmp_path / "p", tasks, sequences={"kepler": ["check"]})
    from pampa_deployer.plan import build_step, step_context
    stage = load_stage("t", stages)
    action = build_step(stage, step_context(stage, stage.host("k1")), "check", ("kepler",)).actions[0]
    with pytest.raises(StepFailed) as failed:
        perform(action, Recorder(fail="test -f"), Sink())
    assert (failed.value.exit_code, failed.value.stderr) == (3, "it broke")
    assert failed.value.message.startswith("task check: `") and failed.value.message.endswith("test -f ready` exited 3")


def test_python_that_outlives_the_timeout_fails_the_step_at_the_deadline(tmp_path):
    action = action_for(tmp_path, "snooze", steps={"snooze": {"timeout": 0.5}})
    t0 = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        perform(action, Recorder(), Sink())
    assert time.monotonic() - t0 < 20  # ended: far less than the task's 30 s
    assert (failed.value.exit_code, failed.value.message) == (124, "task snooze timed out after 0.5s")


def test_an_aborted_run_stops_waiting_for_the_task(tmp_path):
    sink = Sink()
    threading.Timer(0.3, lambda: setattr(sink, "abort", True)).start()
    with pytest.raises(StepFailed, match="task snooze stopped: the run was aborted"):
        perform(action_for(tmp_path, "snooze"), Recorder(), sink)


def test_a_dry_run_says_it_would_call_the_task_and_calls_nothing(tmp_path):
    sink = Sink()
    perform(action_for(tmp_path, "explode"), DryRunBackend("k1"), sink)
    assert sink.said == ["$ would call task explode (deploy/tasks.py): Fail on purpose."]


def test_a_task_calls_a_built_in_step_in_the_same_form(tmp_path):
    backend = Recorder()
    perform(action_for(tmp_path, "with_migrate"), backend, Sink())
    assert [c.script for c in backend.sent] == ["git rev-parse HEAD 2>/dev/null", "echo migrating k1"]


def test_print_in_a_task_is_its_hosts_output_and_other_threads_keep_stdout(tmp_path, capsys):
    sink = Sink()
    perform(action_for(tmp_path, "stamp"), Recorder(), sink)
    print("main thread line")
    assert "stdout: stamping k1 kepler" in sink.said
    out = capsys.readouterr().out
    assert "main thread line" in out and "stamping" not in out
    assert not type(sys.stdout).__name__ == "_Proxy"  # restored once no task runs


# -- whole deployments over real bash ----------------------------------------------------------------------

def test_deploy_runs_the_task_on_each_kepler_and_a_failure_fails_only_its_host(tmp_path):
    stages = project(tmp_path, sequences={"kepler": ["stamp", "open_gate"], "newton": ["stamp"],
                                          "euler": ["stamp"]},
                     hosts={"k1": {"roles": ["kepler"]}, "k2": {"roles": ["kepler"]}, "n1": {"roles": ["newton"]},
                            "e1": {"roles": ["euler"]}},
                     steps={"explode": {"roles": ["kepler"], "after": "stamp"}})
    (tmp_path / "deploy" / "tasks.py").write_text(TASKS.replace(
        '    c.run("echo before-the-bang")', '    if c.config.pampa.host != "k2":\n        return'))
    outcome, events = deploy(stages, tmp_path / "homes")
    by_host = {h.host: h for h in outcome.result.hosts}
    assert outcome.exit_code == 1
    assert by_host["k1"].ok and by_host["n1"].ok
    assert (by_host["k2"].result, by_host["k2"].failed_step) == ("failed", "explode")
    assert by_host["k2"].reason == "task explode raised RuntimeError: no luck on k2 (traceback in the host's log)"
    assert by_host["e1"].result == "skipped" and "gate closed" in by_host["e1"].reason
    for host in ("k1", "k2", "n1"):
        assert (tmp_path / "homes" / host / "stamp.txt").read_text().startswith(f"{host} ")
    assert not (tmp_path / "homes" / "e1" / "stamp.txt").exists()
    assert "stamping k1 kepler" in lines(events, "k1", "stamp")


def test_dry_run_deploy_calls_no_task(tmp_path):
    stages = project(tmp_path, sequences={"kepler": ["stamp"]})
    outcome, events = deploy(stages, tmp_path / "homes", dry_run=True)
    assert outcome.exit_code == 0
    assert "would call task stamp (deploy/tasks.py): Write the revision the host is at into ~/stamp.txt." in \
        [e.display for e in events if isinstance(e, ev.CommandStarted)]
    assert not (tmp_path / "homes").exists() or not list((tmp_path / "homes").rglob("stamp.txt"))


def test_the_working_directory_is_left_alone(tmp_path):
    before = os.getcwd()
    stages = project(tmp_path, sequences={"kepler": ["stamp"]})
    deploy(stages, tmp_path / "homes", hosts=("k1",))
    assert os.getcwd() == before


def test_c_sudo_never_prompts_and_c_run_step_runs_a_step_of_the_stage(tmp_path):
    backend = Recorder()
    c = TaskContext(action_for(tmp_path, "stamp"), backend, Sink(), perform)
    c.sudo("systemctl restart shop_app", user="deploy")
    c.run_step("migrate")
    assert [cmd.script for cmd in backend.sent] == ["sudo -n -u deploy -- sh -c 'systemctl restart shop_app'",
                                                    "echo migrating k1"]
    assert (c.host, c.port) == ("k1", 22)
    with pytest.raises(ValueError, match="unknown step; steps of stage t: git_fetch"):
        c.run_step("migrat")


class Slow(Recorder):
    """A backend whose commands run until their timeout, then answer 124 (as the SSH backend does)."""

    def run(self, command, on_line=None):
        if "rev-parse" in command.script:
            return super().run(command, on_line)
        time.sleep(command.timeout)
        return CommandResult(124, "", f"[pampa] timed out after {command.timeout:g}s")


def test_a_command_timeout_raises_command_timed_out_in_the_task(tmp_path):
    from invoke.exceptions import CommandTimedOut
    c = TaskContext(action_for(tmp_path, "stamp"), Slow(), Sink(), perform)
    with pytest.raises(CommandTimedOut):
        c.run("sleep 5", timeout=0.3)


def test_a_command_that_runs_into_the_steps_deadline_is_the_steps_timeout(tmp_path):
    tasks = "from invoke import task\n@task\ndef wait(c):\n    c.run('sleep 60')\n"
    stages = project(tmp_path, tasks, sequences={"kepler": ["wait"]}, steps={"wait": {"timeout": 0.5}})
    from pampa_deployer.plan import build_step, step_context
    stage = load_stage("t", stages)
    action = build_step(stage, step_context(stage, stage.host("k1")), "wait", ("kepler",)).actions[0]
    with pytest.raises(StepFailed) as failed:
        perform(action, Slow(), Sink())
    assert (failed.value.exit_code, failed.value.message) == (124, "task wait timed out after 0.5s")


def test_invoke_exit_fails_the_step_with_its_code_and_message(tmp_path):
    tasks = "from invoke import task, Exit\n@task\ndef gate(c):\n    raise Exit('not today', code=3)\n"
    stages = project(tmp_path, tasks, sequences={"kepler": ["gate"]})
    from pampa_deployer.plan import build_step, step_context
    stage = load_stage("t", stages)
    action = build_step(stage, step_context(stage, stage.host("k1")), "gate", ("kepler",)).actions[0]
    with pytest.raises(StepFailed) as failed:
        perform(action, Recorder(), Sink())
    assert (failed.value.exit_code, failed.value.message) == (3, "task gate exited: not today")


def test_two_tasks_modules_and_a_name_defined_twice(tmp_path):
    stages = project(tmp_path, tasks=["deploy/tasks.py", "deploy/more.py"])
    (tmp_path / "deploy" / "more.py").write_text("from invoke import task\n@task\ndef notify(c):\n    pass\n")
    assert {"stamp", "notify"} <= set(load_stage("t", stages).tasks)
    (tmp_path / "deploy" / "more.py").write_text("from invoke import task\n@task\ndef stamp(c):\n    pass\n")
    with pytest.raises(ConfigErrors, match="task stamp is defined in both deploy/tasks.py and deploy/more.py"):
        load_stage("t", stages)


def test_secrets_are_masked_in_a_tasks_print_and_traceback(tmp_path):
    tasks = ("from invoke import task\n@task\ndef leak(c):\n    key = c.config.pampa.settings['vars']['api_token']\n"
             "    print('token is', key)\n    raise RuntimeError('bad token ' + key)\n")
    stages = project(tmp_path, tasks, sequences={"kepler": ["leak"]}, vars={"api_token": "tok-4501-secret"})
    from pampa_deployer.plan import build_step, step_context
    stage = load_stage("t", stages)
    action = build_step(stage, step_context(stage, stage.host("k1")), "leak", ("kepler",)).actions[0]
    sink = Sink()
    with pytest.raises(StepFailed) as failed:
        perform(action, Recorder(), sink)
    assert "tok-4501-secret" not in " ".join(sink.said) + failed.value.message
    assert f"stdout: token is {MASK}" in sink.said
    assert failed.value.message == f"task leak raised RuntimeError: bad token {MASK} (traceback in the host's log)"


class Broken(Recorder):
    """A backend whose connection drops on the task's first command."""

    def run(self, command, on_line=None):
        if "rev-parse" in command.script:
            return super().run(command, on_line)
        raise ConnectionResetError("connection reset by peer")


def test_a_lost_connection_in_c_run_reaches_the_engine_as_itself(tmp_path):
    with pytest.raises(ConnectionResetError):  # the host's pipeline classifies it, as for any step
        perform(action_for(tmp_path, "stamp"), Broken(), Sink())


def test_pampa_run_narrows_a_plan_to_a_task_step_by_name(tmp_path):
    from pampa_deployer.narrow import narrow
    stages = project(tmp_path, sequences={"kepler": ["git_fetch", "stamp", "open_gate"]})
    plan = narrow(build_plan(load_stage("t", stages)), only=["stamp"])
    assert [(h.host.name, [s.name for s in h.steps]) for h in plan.hosts] == [("k1", ["stamp"])]
    assert plan.hosts[0].steps[0].actions[0].display().startswith("task stamp (deploy/tasks.py)")
