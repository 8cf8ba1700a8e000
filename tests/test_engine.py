"""The engine without root and without SSH: scheduler, gate, batches, max-fail, interruption, the
preflight, session markers and whole deployments, driven through a fake backend that records every
command (pyinfra's fake channels are the model). The fleet tests prove the same over real sshd."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from pampa_deployer.commands import Command
from pampa_deployer.engine import events as ev
from pampa_deployer.engine import stop as stopping
from pampa_deployer.engine.backends.session import _MarkedStream
from pampa_deployer.engine.deployment import Deployment, DeployRequest
from pampa_deployer.engine.executor import perform
from pampa_deployer.engine.gate import CLOSED, OPEN, WAITING, Gate
from pampa_deployer.engine.results import FAILED, INTERRUPTED, OK, SKIPPED, CommandResult, StepFailed, failure_for
from pampa_deployer.engine.scheduler import Scheduler, parse_count
from pampa_deployer.engine.stop import StopSignal
from pampa_deployer.errors import (
    ConnectError,
    DeployFailed,
    Interrupted,
    LockHeld,
    PampaError,
    Refused,
    UsageError,
    exit_code_for,
)
from pampa_deployer.inventory import stage_from_mapping
from pampa_deployer.steps.actions import OpenGate, ReportVersion, Run, Upload


class Fleet:
    """Fake hosts sharing one ordered log of (host, script); rules make commands fail, hang or misbehave."""

    def __init__(self, fail: dict[str, str] | None = None, unreachable=(), on_run=None, lock_output=None):
        self.log: list[tuple[str, str]] = []
        self.fail = fail or {}            # host -> substring of the script that exits 1
        self.unreachable = set(unreachable)
        self.on_run = on_run              # called (host, script) before answering
        self.lock_output = lock_output or "PAMPA-LOCK-ACQUIRED\n"
        self.lock = threading.Lock()
        self.closed: list[str] = []

    def backend(self, host):
        return FakeBackend(host.name, self)


class FakeBackend:
    def __init__(self, name: str, fleet: Fleet):
        self.name, self.fleet = name, fleet

    def connect(self) -> None:
        if self.name in self.fleet.unreachable:
            raise ConnectError(f"{self.name}: connection refused", "refused")

    def run(self, command: Command, on_line=None) -> CommandResult:
        script = command.script
        with self.fleet.lock:
            self.fleet.log.append((self.name, script))
        if self.fleet.on_run:
            self.fleet.on_run(self.name, script)
        if "PAMPA-LOCK-ACQUIRED" in script:
            return CommandResult(0, self.fleet.lock_output)
        if "PAMPA-LOCK-RELEASED" in script:
            return CommandResult(0, "PAMPA-LOCK-RELEASED\n")
        if "rev-parse HEAD" in script:
            return CommandResult(0, "abc123\n")
        pattern = self.fleet.fail.get(self.name)
        if pattern and pattern in script:
            if on_line:
                on_line("stderr", "boom")
            return CommandResult(1, "", "boom")
        if on_line:
            on_line("stdout", f"ran {script[:20]}")
        return CommandResult(0, "")

    def put(self, upload) -> None:
        with self.fleet.lock:
            self.fleet.log.append((self.name, f"put {upload.remote}"))

    def abort(self) -> None:
        pass

    def close(self) -> None:
        self.fleet.closed.append(self.name)


def stage(**extra):
    data = {"app": "shop", "repo": "git@example.com:shop.git",
            "hosts": {"k1": {"roles": ["kepler"]}, "e1": {"roles": ["euler"]}, "e2": {"roles": ["euler"]},
                      "n1": {"roles": ["newton"]}}}
    data.update(extra)
    return stage_from_mapping(data, environ={})


def run_plan(fleet: Fleet, st=None, options=None, preflight=None, stop=None, bus=None):
    """A whole Deployment over the fake backend, without the lock (or with ``preflight`` in its place);
    ``options`` are the DeployRequest's run options (parallel, batch, max_fail, dry_run)."""
    events: list = []
    bus = bus or ev.EventBus()
    bus.subscribe(events.append)
    request = DeployRequest(stage=st or stage(), lock=False, handle_signals=False, **{"parallel": 8, **(options or {})})
    deployment = Deployment(request, bus, stop or StopSignal(), backends=fleet.backend)
    if preflight is not None:
        deployment.preflight = lambda plan, pool: preflight()
    return deployment.run().result, events


def host(result, name):
    return next(h for h in result.hosts if h.host == name)


def first(log, name, text=""):
    return next(i for i, (h, s) in enumerate(log) if h == name and text in s)


def last(log, name, text=""):
    return max(i for i, (h, s) in enumerate(log) if h == name and text in s)


# -- scheduler ----------------------------------------------------------------------------------

def test_parse_count():
    assert parse_count(None, 10, "--batch") is None
    assert parse_count(3, 10, "--batch") == 3
    assert parse_count("25%", 10, "--batch") == 3
    assert parse_count("1%", 10, "--batch") == 1
    for bad in ("0", "-1", "abc", "0%", "150%"):
        with pytest.raises(UsageError, match="--batch"):
            parse_count(bad, 10, "--batch")


def test_scheduler_bounds_parallelism():
    running, peak, lock = [0], [0], threading.Lock()

    def work(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return i * 2

    assert Scheduler(parallel=3).run(list(range(12)), work) == [i * 2 for i in range(12)]
    assert 1 <= peak[0] <= 3


def test_scheduler_batches_run_one_after_another():
    spans: dict[int, tuple[float, float]] = {}

    def work(i):
        start = time.monotonic()
        time.sleep(0.01)
        spans[i] = (start, time.monotonic())
        return i

    Scheduler(parallel=8, batch=2).run(list(range(6)), work)
    for later, earlier in ((2, 1), (3, 0), (4, 3), (5, 2)):
        assert spans[later][0] >= spans[earlier][1]


def test_scheduler_max_fail_stops_starting_new_items():
    s = Scheduler(parallel=1, max_fail=2)
    started = []

    def work(i):
        if s.should_start():
            return "skipped"
        started.append(i)
        s.record(failed=True)
        return "failed"

    assert s.run(list(range(5)), work) == ["failed", "failed", "skipped", "skipped", "skipped"]
    assert started == [0, 1] and "max-fail reached (2 failed hosts)" in s.halted_reason


def test_scheduler_batch_wait_is_cut_short_by_a_stop():
    stop = threading.Event()
    s = Scheduler(parallel=2, batch=1, batch_wait=60, stopping=stop.is_set)
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    assert s.run([1, 2], lambda i: i) == [1, 2]
    assert time.monotonic() - t0 < 30  # ended, not hung for the 60 s wait


# -- gate ---------------------------------------------------------------------------------------

def test_gate_opens_when_every_opener_arrived():
    changes = []
    gate = Gate(["k1", "k2"], lambda state, reason: changes.append(state))
    assert gate.state == WAITING
    gate.arrive("k1")
    assert gate.state == WAITING
    gate.arrive("k2")
    assert gate.state == OPEN and gate.wait() is True and changes == [OPEN]
    gate.fail("k1", "late")  # once open, it stays open
    assert gate.state == OPEN


def test_gate_closes_for_good_when_an_opener_fails():
    gate = Gate(["k1", "k2"])
    gate.fail("k1", "failed at migrate")
    gate.arrive("k2")
    assert gate.state == CLOSED and gate.wait() is False and gate.reason == "k1 failed at migrate"


def test_gate_without_openers_is_open_and_waiters_can_be_stopped():
    assert Gate([]).state == OPEN
    gate = Gate(["k1"])
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    assert gate.wait(stop.is_set) is False and gate.state == WAITING


def test_gate_releases_a_waiting_thread():
    gate = Gate(["k1"])
    got = []
    t = threading.Thread(target=lambda: got.append(gate.wait()))
    t.start()
    time.sleep(0.05)
    gate.arrive("k1")
    t.join(10)
    assert got == [True]


# -- whole runs over the fake backend -----------------------------------------------------------

def test_gated_hosts_run_only_after_every_kepler_finished():
    fleet = Fleet()
    result, events = run_plan(fleet)
    assert result.ok and result.gate == OPEN and result.gate_opened_at is not None
    log = fleet.log
    kepler_done = last(log, "k1", "rev-parse HEAD")  # its report_version
    for gated in ("e1", "e2"):
        assert first(log, gated, "bundle install") > kepler_done
    assert [s.name for s in host(result, "n1").steps][0] == "git_fetch"
    assert all(h.revision_after == "abc123" for h in result.hosts)
    # a gated host that found the gate closed says it waits, and only ever before the gate opens
    opened = next(i for i, e in enumerate(events) if isinstance(e, ev.GateChanged) and e.state == OPEN)
    assert all(i < opened for i, e in enumerate(events) if isinstance(e, ev.HostWaiting))
    # every host's revision log line was written, after its steps
    assert all(any("revisions.jsonl" in s for h, s in log if h == n) for n in ("k1", "e1", "e2", "n1"))


def test_a_failed_kepler_closes_the_gate_and_gated_hosts_are_not_touched():
    fleet = Fleet(fail={"k1": "sequel -m"})
    result, _ = run_plan(fleet)
    k1 = host(result, "k1")
    assert (k1.result, k1.failed_step, k1.exit_code, k1.stderr_tail) == (FAILED, "migrate", 1, "boom")
    assert result.gate == CLOSED
    for gated in ("e1", "e2"):
        h = host(result, gated)
        assert h.result == SKIPPED and h.reason.startswith("gate closed: k1 failed at migrate")
        assert not any("bundle install" in s for name, s in fleet.log if name == gated)
    assert host(result, "n1").result == OK  # ungated: it deploys regardless
    failure = failure_for(result)
    assert isinstance(failure, DeployFailed) and exit_code_for(failure) == 1
    assert "3 of 4 hosts: k1, e1, e2" in failure.message


def test_max_fail_skips_the_hosts_not_yet_started():
    st = stage(hosts={f"n{i}": {"roles": ["newton"]} for i in range(1, 6)})
    fleet = Fleet(fail={f"n{i}": "git fetch" for i in range(1, 6)})
    result, events = run_plan(fleet, st, dict(parallel=1, max_fail=2))
    assert [h.result for h in result.hosts] == [FAILED, FAILED, SKIPPED, SKIPPED, SKIPPED]
    assert "max-fail reached (2 failed hosts)" in result.notes[-1]
    assert sum(1 for e in events if isinstance(e, ev.Notice) and "max-fail" in e.message) == 1
    assert not any(name in ("n3", "n4", "n5") for name, _ in fleet.log)


def test_an_unreachable_host_fails_at_connect_and_the_rest_deploy():
    fleet = Fleet(unreachable={"n1"})
    result, _ = run_plan(fleet)
    n1 = host(result, "n1")
    # The host printed nothing: the reason is in the failure's detail, never presented as its stderr.
    assert (n1.result, n1.failed_step, n1.stderr_tail) == (FAILED, "connect", "")
    assert n1.reason == "n1: connection refused"
    assert host(result, "k1").ok and host(result, "e1").ok
    assert "n1" not in {name for name, _ in fleet.log}


def test_interruption_stops_new_steps_and_maps_to_exit_130():
    stop = StopSignal()

    def on_run(name, script):
        if name == "n1" and "bundle install" in script:
            stop.request(signal.SIGINT)

    fleet = Fleet(on_run=on_run)
    st = stage(hosts={"n1": {"roles": ["newton"]}})
    result, _ = run_plan(fleet, st, stop=stop)
    n1 = host(result, "n1")
    # Gems are installed before migrations (sequences.py): the step after bundle is migrate.
    assert n1.result == INTERRUPTED and n1.failed_step == "migrate" and n1.reason == "interrupted before migrate"
    assert not any("sequel -m" in s for _, s in fleet.log)
    assert result.interrupted_by == signal.SIGINT and not result.ok
    failure = failure_for(result)
    assert isinstance(failure, Interrupted) and exit_code_for(failure) == 130
    assert failure.message.startswith("deploy interrupted by SIGINT (Ctrl-C); `pampa status ")  # not "signal 2"


def test_a_failing_preflight_runs_nothing_and_is_raised():
    fleet = Fleet()

    def preflight():
        time.sleep(0.05)
        raise LockHeld("stage shop is locked")

    with pytest.raises(LockHeld):
        run_plan(fleet, preflight=preflight)
    assert fleet.log == []  # hosts connected, but no command ran


def test_dry_run_reads_and_logs_nothing():
    fleet = Fleet()
    result, _ = run_plan(fleet, options=dict(parallel=4, dry_run=True))
    assert result.ok and result.dry_run
    # No bookkeeping of its own (the step commands it shows read the log only when they run).
    steps = [s for _, s in fleet.log if "pampa-skip: " not in s]
    assert not any("revisions.jsonl" in s or "rev-parse HEAD 2>" in s for s in steps)


# -- the one executor ---------------------------------------------------------------------------

class Sink:
    def __init__(self):
        self.said, self.reported, self.gate = [], [], 0

    def command_started(self, display):
        self.said.append(display)

    def output(self, stream, line):
        self.said.append(f"{stream}: {line}")

    def gate_reached(self):
        self.gate += 1

    def report_version(self, action, revision):
        self.reported.append((action.node, revision))


def test_executor_runs_each_action_type():
    fleet, sink = Fleet(fail={"h": "false"}), Sink()
    be = fleet.backend(type("H", (), {"name": "h"}))
    perform(Run(Command("echo hi")), be, sink)
    perform(Upload("a", "~/x", 0o600, b"s3cret"), be, sink)
    perform(ReportVersion(Command("git rev-parse HEAD"), "http://ap", "h", ("kepler",)), be, sink)
    perform(OpenGate(), be, sink)
    assert fleet.log == [("h", "echo hi"), ("h", "put ~/x"), ("h", "git rev-parse HEAD")]
    assert sink.reported == [("h", "abc123")] and sink.gate == 1
    assert "s3cret" not in " ".join(sink.said)
    with pytest.raises(StepFailed) as failed:
        perform(Run(Command("false")), be, sink)
    assert (failed.value.exit_code, failed.value.stderr, failed.value.message) == (1, "boom", "exit code 1")


# -- a whole Deployment: lock, run, release, RunFinished --------------------------------------------

def test_deployment_takes_and_releases_the_lock_and_ends_with_run_finished():
    fleet = Fleet()
    bus, events = ev.EventBus(), []
    bus.subscribe(events.append)
    request = DeployRequest(stage=stage(), handle_signals=False, message="ship it")
    outcome = Deployment(request, bus, backends=fleet.backend).run()
    assert outcome.failure is None and outcome.exit_code == 0 and outcome.result.ok
    lock_cmds = [i for i, (h, s) in enumerate(fleet.log) if "PAMPA-LOCK" in s]
    assert {fleet.log[i][0] for i in lock_cmds} == {"k1"}  # the lock host is the kepler
    assert "PAMPA-LOCK-ACQUIRED" in fleet.log[lock_cmds[0]][1] and "ship it" in fleet.log[lock_cmds[0]][1]
    assert "PAMPA-LOCK-RELEASED" in fleet.log[lock_cmds[-1]][1]
    assert lock_cmds[0] < first(fleet.log, "k1", "git")  # locked before any step ran
    assert lock_cmds[-1] == len(fleet.log) - 1           # released after every host finished
    assert isinstance(events[-1], ev.RunFinished) and events[-1].exit_code == 0
    assert sorted(set(fleet.closed)) == ["e1", "e2", "k1", "n1"]  # every connection closed


def test_deployment_refused_by_a_held_lock_changes_nothing():
    fleet = Fleet(lock_output='PAMPA-LOCK-HELD\n{"user": "bo"}\n200 100\n')
    request = DeployRequest(stage=stage(), handle_signals=False)
    with pytest.raises(LockHeld, match="locked on k1: held by bo"):
        Deployment(request, backends=fleet.backend).run()
    assert all("PAMPA-LOCK" in s for _, s in fleet.log)


def test_deployment_failure_maps_to_exit_1_and_rejects_bad_options():
    fleet = Fleet(fail={"n1": "git fetch"})
    outcome = Deployment(DeployRequest(stage=stage(), handle_signals=False, lock=False),
                         backends=fleet.backend).run()
    assert outcome.exit_code == 1 and isinstance(outcome.failure, DeployFailed)
    assert not any("PAMPA-LOCK" in s for _, s in fleet.log)
    with pytest.raises(UsageError, match="max_fail: expected a positive count"):
        Deployment(DeployRequest(stage=stage(), handle_signals=False, max_fail="none"),
                   backends=Fleet().backend).run()


# -- signals and the shell session's markers ---------------------------------------------------------

def test_first_signal_is_soft_the_second_aborts():
    stop, notes, aborted = StopSignal(), [], threading.Event()
    stop.on_hard(aborted.set)
    restore = stopping.install(stop, grace=60, notify=notes.append)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.stopping and not stop.hard.is_set() and stop.signum == signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)
        assert aborted.wait(10)
    finally:
        restore()
    assert "starting no new steps" in notes[0] and "aborting running commands now" in notes[1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_grace_period_turns_a_soft_stop_hard():
    stop = StopSignal()
    restore = stopping.install(stop, grace=0.1, notify=lambda m: None)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.hard.wait(10) and stop.signum == signal.SIGTERM
    finally:
        restore()


def test_marked_stream_splits_output_and_reads_the_exit_code_across_chunks():
    marker = b"__PAMPA_abc__"
    lines = []
    s = _MarkedStream("stdout", Command("x"), lambda stream, line: lines.append(line), marker)
    for chunk in (b"one\ntw", b"o\n__PAM", b"PA_abc", b"__ 3", b"\n"):
        s.feed(chunk)
    assert s.done and s.exit_code == 3 and lines == ["one", "two"]
    assert s.text() == "one\ntwo\n"
    s.feed(b"late\n")  # after the marker, nothing belongs to this command
    assert lines == ["one", "two"]


def test_marked_stream_waits_for_the_whole_exit_code_and_stderr_has_none():
    marker = b"__PAMPA_m__"
    out = _MarkedStream("stdout", Command("x"), None, marker)
    out.feed(b"__PAMPA_m__ 12")
    assert not out.done
    out.feed(b"7\n")
    assert out.done and out.exit_code == 127
    err = _MarkedStream("stderr", Command("x"), None, marker)
    err.feed(b"warning\n__PAMPA_m__\n")
    assert err.done and err.exit_code == 255 and err.text() == "warning\n"


def test_an_unreachable_lock_host_refuses_the_run_with_exit_4():
    from pampa_deployer.errors import Refused
    fleet = Fleet(unreachable={"k1"})
    with pytest.raises(Refused, match="cannot take the deploy lock on k1; nothing was changed") as refused:
        Deployment(DeployRequest(stage=stage(), handle_signals=False), backends=fleet.backend).run()
    assert exit_code_for(refused.value) == 4 and fleet.log == []


def test_access_point_session_finishes_once_and_abandons_a_request_it_could_not_take():
    from pampa_deployer.engine.apsession import AccessPointSession
    from pampa_deployer.errors import AccessPointError

    class Client:
        def __init__(self, take_fails=False):
            self.calls, self.take_fails = [], take_fails

        def create_deploy(self, stage, branch, who, revision, message=None):
            self.calls.append(("create", stage, branch, who) + ((message,) if message else ()))
            return {"id": 7}

        def take(self, deploy_id, node):
            self.calls.append(("take", deploy_id, node))
            if self.take_fails:
                raise AccessPointError("409 taken")

        def allow(self, deploy_id):
            self.calls.append(("allow", deploy_id))

        def finish(self, deploy_id, result, detail):
            self.calls.append(("finish", deploy_id, result, detail))

    warnings: list = []
    client = Client()
    session = AccessPointSession(client, warnings.append)
    session.allow()  # nothing registered yet: nothing sent
    assert session.register("prod", "main", None, "ana", "k1") == 7
    assert AccessPointSession(Client(), warnings.append).register("prod", "main", None, "ana", "k1",
                                                                    message="hotfix 142") == 7
    session.allow()
    session.finish(True, "ignored when ok")
    session.abandon("too late")  # already finished: nothing sent
    assert client.calls == [("create", "prod", "main", "ana"), ("take", 7, "k1"), ("allow", 7),
                            ("finish", 7, "done", "")]
    failing = Client(take_fails=True)
    with pytest.raises(AccessPointError):
        AccessPointSession(failing, warnings.append).register("prod", "main", None, "ana", "k1")
    assert failing.calls[-1] == ("finish", 7, "failed", "abandoned: could not take the request: 409 taken")


def test_deploy_lock_waits_for_a_held_lock_then_takes_it_and_releases_only_its_own():
    from pampa_deployer.engine.lock import DeployLock

    class LockHost:
        name = "k1"

        def __init__(self):
            self.answers = ['PAMPA-LOCK-HELD\n{"user": "bo"}\n200 100\n', "PAMPA-LOCK-ACQUIRED\n"]
            self.scripts = []

        def run(self, command, on_line=None):
            self.scripts.append(command.script)
            if "PAMPA-LOCK-RELEASED" in command.script:
                return CommandResult(0, "PAMPA-LOCK-RELEASED\n")
            return CommandResult(0, self.answers.pop(0))

    host, waited = LockHost(), []
    lock = DeployLock(host, "~/.pampa/locks", "prod", {"user": "ana"}, 90)
    lock.acquire(wait=30, on_wait=waited.append)
    assert lock.held and len(waited) == 1 and waited[0].info == {"user": "bo"}
    assert lock.release() is True and not lock.held
    assert lock.token in host.scripts[-1]  # release names its own token
    assert lock.release() is False  # twice is harmless


def test_deploy_lock_held_without_wait_raises_lock_held_naming_the_holder():
    from pampa_deployer.engine.lock import DeployLock

    class Held:
        name = "k1"

        def run(self, command, on_line=None):
            return CommandResult(0, 'PAMPA-LOCK-HELD\n{"user": "bo", "machine": "ci"}\n200 100\n')

    with pytest.raises(LockHeld, match=r"stage prod is locked on k1: held by bo@ci .*pampa unlock prod"):
        DeployLock(Held(), "~/.pampa/locks", "prod", {}, 90).acquire()


def test_deploy_lock_release_that_did_not_complete_is_an_error_not_a_silent_false():
    """A release command that timed out (exit 124, no marker) must not pass for "released"."""
    from pampa_deployer.engine.lock import DeployLock

    class Stalls:
        name = "k1"

        def run(self, command, on_line=None):
            if "PAMPA-LOCK-RELEASED" in command.script:
                return CommandResult(124, "", "\n[pampa] timed out after 30s")
            return CommandResult(0, "PAMPA-LOCK-ACQUIRED\n")

    lock = DeployLock(Stalls(), "~/.pampa/locks", "prod", {}, 90)
    lock.acquire()
    with pytest.raises(PampaError, match=r"the release command did not complete \(exit code 124: "
                                         r"\[pampa\] timed out after 30s\)"):
        lock.release()


def test_batches_are_announced_at_their_boundaries():
    """docs: --batch deploys N hosts (or N%) at a time; each batch's start is printed with its hosts."""
    import io

    from pampa_deployer.render.plain import PlainRenderer
    told: list[tuple[int, int, list[int]]] = []
    Scheduler(parallel=8, batch=2).run(list(range(5)), lambda i: i,
                                       on_batch=lambda n, total, items: told.append((n, total, items)))
    assert told == [(1, 3, [0, 1]), (2, 3, [2, 3]), (3, 3, [4])]
    single: list = []
    Scheduler(parallel=8).run(list(range(5)), lambda i: i, on_batch=lambda *a: single.append(a))
    assert single == []  # one batch: nothing to announce
    out = io.StringIO()
    PlainRenderer(out)(ev.BatchStarted(number=2, total=3, hosts=("n3", "n4")))
    assert out.getvalue().endswith(" - batch 2/3 starts: 2 hosts (n3, n4)\n")


def test_host_waiting_is_never_told_after_the_gate_opened():
    """The gate tells "waiting" under its own lock, so it can never follow "gate open"."""
    import threading

    from pampa_deployer.engine.gate import Gate
    for _ in range(200):
        told: list[str] = []
        gate = Gate(["k1"], lambda state, reason: told.append(state))
        opener = threading.Thread(target=gate.arrive, args=("k1",))
        opener.start()
        assert gate.wait(on_wait=lambda: told.append("host waiting"))
        opener.join()
        assert told in (["open"], ["host waiting", "open"]), told
    opened = Gate([])
    assert opened.wait(on_wait=lambda: (_ for _ in ()).throw(AssertionError("an open gate never waits")))


# -- what runs around a Deployment: hooks and webhooks (engine/around/announce.py) --------------------------

class Around:
    """Records the Deployment's calls to its ``around`` (the Announcer's interface)."""

    def __init__(self, fleet, refuse: bool = False):
        self.fleet, self.refuse, self.calls = fleet, refuse, []

    def before(self, plan):
        self.calls.append(("before", len(self.fleet.log), [h.host.name for h in plan.hosts]))
        if self.refuse:
            raise Refused("pre-deploy said no")

    def after(self, plan, result=None, error=None):
        self.calls.append(("after", len(self.fleet.log), result.ok if result else type(error).__name__))


def test_deployment_announces_before_anything_is_contacted_and_after_run_finished():
    fleet = Fleet()
    around = Around(fleet)
    bus, events = ev.EventBus(), []
    bus.subscribe(lambda e: events.append((type(e).__name__, len(around.calls))))
    request = DeployRequest(stage=stage(), kind="run", steps=("bundle",), skip=None, handle_signals=False)
    Deployment(request, bus, backends=fleet.backend, around=around).run()
    assert around.calls[0] == ("before", 0, ["k1", "n1", "e1", "e2"])  # nothing ran on any host yet
    assert around.calls[1] == ("after", len(fleet.log), True)
    assert events[-1] == ("RunFinished", 1)  # after() came after the run's end was rendered
    assert all("bundle" in s or "PAMPA-LOCK" in s or "rev-parse" in s or "revisions" in s for _, s in fleet.log)


def test_a_refusing_pre_hook_contacts_no_host_and_a_refused_lock_is_announced():
    fleet = Fleet()
    with pytest.raises(Refused, match="pre-deploy said no"):
        Deployment(DeployRequest(stage=stage(), handle_signals=False), backends=fleet.backend,
                   around=Around(fleet, refuse=True)).run()
    assert fleet.log == []
    held = Fleet(lock_output='PAMPA-LOCK-HELD\n{"user": "bo"}\n200 100\n')
    around = Around(held)
    with pytest.raises(LockHeld):
        Deployment(DeployRequest(stage=stage(), handle_signals=False), backends=held.backend, around=around).run()
    assert [c[0] for c in around.calls] == ["before", "after"] and around.calls[1][2] == "LockHeld"
    dry = Around(Fleet())
    Deployment(DeployRequest(stage=stage(), handle_signals=False, dry_run=True), around=dry).run()
    assert dry.calls == []  # a dry run announces nothing


def test_a_refused_run_still_finishes_with_every_host_untouched_and_the_reason():
    """Lock held, lock host unreachable, pre-deploy hook: the run is refused, and RunFinished still carries a
    result (report, JUnit, run directory), each host skipped and not touched; the refusal is raised as before."""
    cases = [(Fleet(lock_output='PAMPA-LOCK-HELD\n{"user": "bo"}\n200 100\n'), None, LockHeld, 3),
             (Fleet(unreachable={"k1"}), None, Refused, 4),
             (Fleet(), "hook", Refused, 4)]
    for fleet, hook, error, code in cases:
        events: list = []
        bus = ev.EventBus()
        bus.subscribe(events.append)
        around = Around(fleet, refuse=True) if hook else None
        with pytest.raises(error) as refused:
            Deployment(DeployRequest(stage=stage(), handle_signals=False), bus, backends=fleet.backend,
                       around=around).run()
        finished = [e for e in events if isinstance(e, ev.RunFinished)]
        assert len(finished) == 1 and finished[0].exit_code == code == exit_code_for(refused.value)
        result = finished[0].result
        assert result.refused == refused.value.message and not result.ok
        assert sorted(h.host for h in result.hosts) == ["e1", "e2", "k1", "n1"]
        assert all(h.result == SKIPPED and h.steps == () and "refused" in h.reason for h in result.hosts)
        assert "refused" in result.headline()
        assert not any("PAMPA-LOCK" not in s for _, s in fleet.log)  # nothing but the lock attempt ran


# -- the canary (issue 23) ----------------------------------------------------------------------------------
def canary_stage(**extra):
    return stage(hosts={"k1": {"roles": ["kepler"]}, "k2": {"roles": ["kepler"]}, "e1": {"roles": ["euler"]},
                        "e2": {"roles": ["euler"]}, "n1": {"roles": ["newton"]}, "n2": {"roles": ["newton"]},
                        "n3": {"roles": ["newton"]}}, **extra)


def test_canary_takes_the_first_n_of_each_role_and_every_kepler_when_a_role_is_gated():
    from pampa_deployer.engine.canary import choose
    from pampa_deployer.plan import build_plan
    chosen = choose(build_plan(canary_stage()), 1)
    assert chosen.hosts == ("k1", "k2", "n1", "e1") and chosen.rest == ("n2", "n3", "e2")
    assert "every kepler host is in it (k1, k2)" in chosen.notes[0]
    ungated = choose(build_plan(canary_stage(), roles=["kepler", "newton"]), "50%")
    assert ungated.hosts == ("k1", "n1", "n2") and ungated.rest == ("k2", "n3")  # 50% of 3 newtons: 2
    whole = choose(build_plan(canary_stage(), roles=["euler"]), 5)
    assert whole.rest == () and "every host of this run is in the canary" in whole.notes[-1]
    with pytest.raises(ValueError):
        choose(build_plan(canary_stage()), "0")


def test_a_failing_canary_leaves_every_other_host_untouched():
    fleet = Fleet(fail={"n1": "bundle"})
    result, events = run_plan(fleet, canary_stage(), {"canary": 1})
    touched = {h for h, _ in fleet.log}
    assert touched == {"k1", "k2", "n1", "e1"}  # not one command to the rest, not even a connection's
    for name in ("n2", "n3", "e2"):
        assert host(result, name).result == SKIPPED
        assert host(result, name).reason == "not started: the deploy stopped at the canary (n1 failed at bundle)"
    assert result.canary == {"hosts": ["k1", "k2", "n1", "e1"], "rest": ["n2", "n3", "e2"], "result": "failed",
                             "reason": "n1 failed at bundle"}
    failure = failure_for(result)
    assert isinstance(failure, DeployFailed) and failure.message == (
        f"deploy of {result.stage} stopped at the canary: n1 failed at bundle; 3 hosts were not touched: n2, n3, e2")
    assert "the deploy stopped at the canary: n1 failed at bundle" in result.notes
    assert "stopped at the canary" in result.headline()
    states = [e.state for e in events if isinstance(e, ev.CanaryChanged)]
    assert states == ["started", "failed"]


def test_the_rest_starts_only_after_every_canary_host_finished_and_the_gate_still_holds():
    fleet = Fleet()
    result, events = run_plan(fleet, canary_stage(), {"canary": 1})
    assert result.ok and result.canary["result"] == "passed"
    log = fleet.log
    canary_end = max(last(log, h) for h in ("k1", "k2", "n1", "e1"))
    assert all(first(log, h) > canary_end for h in ("n2", "n3", "e2"))
    keplers_end = max(last(log, h) for h in ("k1", "k2"))
    assert first(log, "e1") > keplers_end  # the gated canary started after every kepler finished


def test_canary_wait_and_confirmation_decide_whether_the_rest_go():
    asked: list[str] = []
    fleet = Fleet()
    result, _ = run_plan(fleet, canary_stage(), {"canary": 1, "canary_confirm":
                                                 lambda question, stopping: asked.append(question) or False})
    assert {h for h, _ in fleet.log} == {"k1", "k2", "n1", "e1"} and len(asked) == 1
    assert asked[0].startswith("canary passed on k1, k2, n1, e1. Deploy the other 3 hosts (n2, n3, e2)?")
    assert result.canary["result"] == "declined" and not result.ok
    yes = Fleet()
    result, _ = run_plan(yes, canary_stage(), {"canary": 1, "canary_confirm": lambda q, s: True})
    assert result.ok and {h for h, _ in yes.log} == {"k1", "k2", "n1", "n2", "n3", "e1", "e2"}
    stop = StopSignal()
    waited = Fleet()
    timer = threading.Timer(0.5, lambda: stop.request(signal.SIGINT))
    timer.start()
    try:
        result, _ = run_plan(waited, canary_stage(), {"canary": 1, "canary_wait": 600}, stop=stop)
    finally:
        timer.cancel()
    assert result.canary["result"] == "interrupted" and not {"n2", "n3", "e2"} & {h for h, _ in waited.log}
    assert isinstance(failure_for(result), Interrupted)


def test_a_signal_while_the_main_thread_delivers_an_event_does_not_wait_for_itself():
    """The SIGINT handler runs in the main thread, maybe while it holds the bus's lock (delivering an event);
    its notice must not wait for that lock in the same thread (the second Ctrl-C hung pampa). In a child
    process, so a regression is a failure here, not a hung suite."""
    import subprocess
    import sys
    code = (
        "import os, signal, time\n"
        "from pampa_deployer.engine import events as ev\n"
        "from pampa_deployer.engine.stop import StopSignal, install\n"
        "bus = ev.EventBus(); seen = []; bus.subscribe(seen.append)\n"
        "stop = StopSignal(); install(stop, 30.0, lambda m: bus.emit(ev.Notice(message=m)))\n"
        "with bus._lock:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    for _ in range(100000): pass\n"
        "limit = time.monotonic() + 20\n"
        "while not seen and time.monotonic() < limit: time.sleep(0.05)\n"
        "print('told' if seen and stop.stopping else 'silent')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "told", done.stdout + done.stderr
