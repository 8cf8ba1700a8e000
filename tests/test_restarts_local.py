"""Restarts (issue 21) for real: the drain and the hot and phased restart scripts, and `pampa check`'s puma
probe, run in a local shell against real puma processes in a temporary home (no root, no sshd)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_restarts import stage, step_actions

from pampa_deployer.commands.command import Command
from pampa_deployer.commands.service import Service, drain
from pampa_deployer.engine.backends.local import LocalBackend
from pampa_deployer.engine.executor import perform
from pampa_deployer.engine.results import StepFailed
from pampa_deployer.plan import build_plan
from pampa_deployer.steps.actions import Restart

needs_puma = pytest.mark.skipif(not (shutil.which("puma") and shutil.which("curl")), reason="needs puma and curl")

CONFIG_RU = 'rev = File.read("REVISION").strip\nrun ->(_env) { [200, {}, ["revision=#{rev}\\n"]] }\n'


def puma_rb(home: Path, workers: int = 2, control: bool = True, directory: bool = True) -> str:
    run = home / "run"
    lines = ['directory ENV.fetch("PWD")'] if directory else []
    lines += [f"workers {workers}", "threads 1, 2", f'bind "unix://{run}/app.sock"',
              f'pidfile "{run}/puma.pid"', f'state_path "{run}/puma.state"']
    if control:
        lines.append(f'activate_control_app "unix://{run}/control.sock"')
    return "\n".join(lines) + "\n"


class LocalPuma:
    """An app folder in a temporary home, a puma started from it, and the restart step's command for it."""

    def __init__(self, home: Path, folder: str = "app", **config):
        self.home, self.app = home, home / folder
        (home / "run").mkdir(parents=True, exist_ok=True)
        self.app.mkdir(parents=True, exist_ok=True)
        (self.app / "puma.rb").write_text(puma_rb(home, **config))
        (self.app / "config.ru").write_text(CONFIG_RU)
        self.release("one")

    def release(self, name: str, where: Path | None = None) -> None:
        (where or self.app).joinpath("REVISION").write_text(name + "\n")

    def start_command(self, folder: str) -> str:
        return (f"cd ~/{folder} && (setsid nohup puma -C puma.rb >> ~/run/puma.log 2>&1 < /dev/null &)")

    def action(self, mode: str, path: str = "app", start_in: str = "app", timeout: float = 60,
               **settings) -> Restart:
        units = {"puma_restart": mode, "pid_file": "~/run/{unit}.pid", "puma": ["puma"],
                 "puma_state": "~/run/{unit}.state", "restart_timeout": timeout,
                 "restart": self.start_command(start_in)}
        plan = build_plan(stage(units, path=f"~/{path}", **settings))
        (restart,) = step_actions(plan, "k1", "restart_puma")
        return restart

    def run(self, action) -> tuple[str, StepFailed | None]:
        lines: list[str] = []

        class Sink:
            def command_started(self, display): pass
            def output(self, stream, line): lines.append(f"{stream}: {line}")
            def gate_reached(self): pass
            def report_version(self, action, revision): pass
            def aborted(self): return False

        try:
            perform(action, LocalBackend("local", home=str(self.home)), Sink())
            return "\n".join(lines), None
        except StepFailed as e:
            return "\n".join(lines), e

    def master(self) -> int:
        return int((self.home / "run" / "puma.pid").read_text())

    def workers(self) -> set[int]:
        children = Path(f"/proc/{self.master()}/task/{self.master()}/children").read_text().split()
        return {int(c) for c in children}

    def wait_up(self, workers: int = 2) -> None:
        """Until puma wrote its state file and runs ``workers`` workers (a bound that tells slow from hung)."""
        for _ in range(600):
            try:
                if (self.home / "run" / "puma.state").exists() and len(self.workers()) == workers:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError("puma did not come up within 60 s")

    def get(self) -> str:
        return subprocess.run(["curl", "-sS", "-m", "5", "--unix-socket", str(self.home / "run" / "app.sock"),
                               "http://app/"], capture_output=True, text=True).stdout

    def stop(self) -> None:
        try:
            pid = self.master()
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    return
                time.sleep(0.05)
            os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


@pytest.fixture
def local_puma(tmp_path):
    made: list[LocalPuma] = []

    def make(**kwargs) -> LocalPuma:
        made.append(LocalPuma(tmp_path, **kwargs))
        return made[-1]
    yield make
    for p in made:
        p.stop()


@needs_puma
def test_phased_restart_starts_puma_then_replaces_every_worker_and_keeps_the_master(local_puma):
    app = local_puma()
    out, failed = app.run(app.action("phased"))
    assert failed is None, out
    assert "stdout: puma: not running: starting it" in out and out.endswith("phased restart done: 2 workers on the new code")
    assert app.get() == "revision=one\n"
    master, workers = app.master(), app.workers()
    app.release("two")

    out, failed = app.run(app.action("phased"))

    assert failed is None, out
    assert f"stdout: puma: phased restart asked (USR1 to pid {master})" in out
    assert app.master() == master and app.workers().isdisjoint(workers) and len(app.workers()) == 2
    assert app.get() == "revision=two\n"
    assert "pampa-note" not in out  # one at a time: puma's phase went up


@needs_puma
def test_hot_restart_keeps_the_pid_and_replaces_the_workers(local_puma):
    app = local_puma()
    assert app.run(app.action("hot"))[1] is None
    master, workers = app.master(), app.workers()
    app.release("two")

    out, failed = app.run(app.action("hot"))

    assert failed is None, out
    assert f"stdout: puma: hot restart asked (USR2 to pid {master})" in out
    assert app.master() == master and app.workers().isdisjoint(workers)
    assert app.get() == "revision=two\n"


@needs_puma
def test_new_code_that_cannot_boot_fails_the_phased_restart_and_the_old_workers_keep_serving(local_puma):
    app = local_puma()
    assert app.run(app.action("phased"))[1] is None
    (app.app / "config.ru").write_text('raise "boom: cannot boot"\n' + CONFIG_RU)
    t0 = time.monotonic()

    out, failed = app.run(app.action("phased", timeout=120))

    took = time.monotonic() - t0
    assert failed is not None and failed.exit_code == 1, out
    assert failed.message.startswith("puma: the phased restart failed: 3 new workers exited before they booted")
    assert took < 100, "the deaths end the wait, not the 120 s timeout"  # a bound telling the two apart
    assert app.get() == "revision=one\n"  # the old worker still answers


@needs_puma
def test_a_puma_without_control_app_is_not_signalled_and_the_step_says_what_to_add(local_puma):
    app = local_puma(control=False)
    out, failed = app.run(app.action("phased", timeout=2))  # it starts, but the wait has nothing to read
    assert failed is not None and "puma's control app does not answer" in failed.message, out
    app.wait_up()
    master, workers = app.master(), app.workers()

    out, failed = app.run(app.action("phased"))

    assert failed.message == ("puma: cannot tell when a phased restart is done: puma's control app does not answer "
                              f"(the puma state file {app.home}/run/puma.state names no control app (control_url)); "
                              "add state_path and activate_control_app to config/puma.rb (docs/operations.md, "
                              "Zero-downtime restarts), or set units.puma_restart: full").replace(str(app.home), "~")
    assert app.master() == master and app.workers() == workers  # nothing was signalled


@needs_puma
def test_single_mode_puma_is_named(local_puma):
    app = local_puma(workers=0)
    out, failed = app.run(app.action("hot"))
    assert failed is not None and failed.message.startswith("puma: puma runs in single mode (no workers): a hot "
                                                            "restart needs cluster mode"), out


@needs_puma
def test_a_puma_started_in_a_release_folder_does_not_follow_current(local_puma, tmp_path):
    app = local_puma(folder="shop/releases/1")
    second = tmp_path / "shop" / "releases" / "2"
    second.mkdir()
    for name in ("puma.rb", "config.ru"):
        shutil.copy(app.app / name, second / name)
    app.release("two", second)
    current = tmp_path / "shop" / "current"
    current.symlink_to(app.app)
    releases = {"path": "shop", "strategy": "releases"}
    assert app.run(app.action("phased", start_in="shop/releases/1", **releases))[1] is None  # not running: started
    current.unlink()
    current.symlink_to(second)  # a deploy switched current

    out, failed = app.run(app.action("phased", start_in="shop/current", **releases))

    assert failed is not None, out
    assert failed.message == (f"puma: the new workers run in {tmp_path}/shop/releases/1, not in the live code "
                              f"~/shop/current ({second}): puma restarts into the folder it was started from; set "
                              "directory to ~/shop/current in config/puma.rb")
    assert app.get() == "revision=one\n"


@needs_puma
def test_a_puma_running_from_another_code_path_is_restarted_fully_with_a_note(local_puma, tmp_path):
    app = local_puma(folder="old")
    assert app.run(app.action("phased", path="old", start_in="old"))[1] is None
    master = app.master()
    (tmp_path / "new").mkdir()
    for name in ("puma.rb", "config.ru"):
        shutil.copy(app.app / name, tmp_path / "new" / name)
    app.release("two", tmp_path / "new")

    out, failed = app.run(app.action("phased", path="new", start_in="new"))

    assert failed is None, out
    assert (f"stdout: pampa-note: puma: ran from {tmp_path}/old, outside this stage's code {tmp_path}/new: restarted "
            "fully, as a phased restart would have kept the old code") in out
    assert app.master() != master and app.get() == "revision=two\n"


def test_drain_terms_then_kills_what_ignores_term_and_says_so(tmp_path):
    start = ("(setsid nohup bash -c \"trap '' TERM; touch ~/ready; while :; do sleep 0.1; done\" >/dev/null 2>&1 "
             "</dev/null & echo $! > ~/w.pid)")
    quick = Service("worker", start, pid_file="~/w.pid")
    backend = LocalBackend("local", home=str(tmp_path))
    try:
        first = backend.run(drain_command(quick, 0.5))
        assert first.ok and first.stdout.startswith("worker: was not running"), first
        before = int((tmp_path / "w.pid").read_text())
        for _ in range(100):  # until it ignores TERM (a TERM before its trap would end it)
            if (tmp_path / "ready").exists():
                break
            time.sleep(0.05)

        second = backend.run(drain_command(quick, 0.5))

        assert second.ok, second
        assert "pampa-note: worker: still running 0.5s after TERM: killed (KILL)" in second.stdout
        assert not Path(f"/proc/{before}/cmdline").exists() or not Path(f"/proc/{before}/cmdline").read_bytes()
        polite = Service("worker", "(setsid nohup sleep 30 >/dev/null 2>&1 </dev/null & echo $! > ~/w.pid)",
                         pid_file="~/w.pid")
        third = backend.run(drain_command(polite, 5))
        assert third.ok
        fourth = backend.run(drain_command(polite, 5))
        assert fourth.ok and "worker: stopped 0." in fourth.stdout and "after TERM" in fourth.stdout
        assert "pampa-note" not in fourth.stdout
    finally:
        subprocess.run(["bash", "-c", f"kill -9 -- -$(cat {tmp_path}/w.pid) 2>/dev/null"], check=False)


def drain_command(svc: Service, stop_timeout: float) -> Command:
    return Command(drain(svc, stop_timeout), timeout=60)


@needs_puma
def test_check_probe_reads_a_real_puma_and_the_live_config(local_puma, tmp_path):
    app = local_puma(folder="shop/releases/1", control=False)
    (tmp_path / "shop" / "current").symlink_to(app.app)
    action = app.action("phased", start_in="shop/current", path="shop", strategy="releases", timeout=1)
    backend = LocalBackend("local", home=str(tmp_path))

    def said() -> list[str]:
        return backend.run(Command(action.probe, timeout=60)).stdout.splitlines()

    assert said() == ["puma:puma=not-running", "puma:puma.config=missing"]
    app.run(action)  # started; no control app to wait on
    app.wait_up()
    (app.app / "config").mkdir()
    (app.app / "config" / "puma.rb").write_text("workers 2\n")
    (app.app / "Gemfile").write_text('gem "puma"\n')
    assert said()[1:] == ["puma:puma.directory=missing", "puma:puma.prune_bundler=missing"]
    assert said()[0].startswith("puma:puma=no-control:the puma state file ")
    (app.app / "config" / "puma.rb").write_text('directory "/x/current"\nworkers 2\nprune_bundler\n')
    assert len(said()) == 1


