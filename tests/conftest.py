"""Fixtures: a session fleet of real OpenSSH hosts on 127.0.1.x, stage files for it, and CLI runners.

Integration tests never mock SSH: every host is a real ``sshd`` in its own mount
namespace, with its own home (bind-mounted over /root), host key and processes.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from pampa_deployer.cli import main
from pampa_deployer.fleet import Fleet, _pids_in_namespace

#: The pull-mode fixtures (``pull``, ``node_python``), for the tests that use them.
pytest_plugins = ["pullfleet"]

HOSTS = [
    ("kepler-1", ("kepler",)),
    ("kepler-2", ("kepler",)),
    ("euler-1", ("euler",)),
    ("newton-1", ("newton",)),
    ("newton-2", ("newton",)),
    ("copernico-1", ("copernico",)),
]

#: Each remote step command appends "start"/"end" timestamps to ~/trace.log on its host.
TRACE_PREFIX = ("trap 'echo \"$(date +%s.%N) end\" >> ~/trace.log' EXIT; "
                "echo \"$(date +%s.%N) start\" >> ~/trace.log")

SECRET = "s3cr3t-Pampa-9f8e7d"

#: Loopback subnet of the session fleet; set PAMPA_TEST_SUBNET (e.g. 127.0.21) to run two suites at once.
FLEET_SUBNET = os.environ.get("PAMPA_TEST_SUBNET", "127.0.1")


def _can_run_fleet() -> str | None:
    if os.geteuid() != 0:
        return "the test fleet needs root (mount namespaces)"
    for tool in ("git", "unshare", "ruby", "bundle", "puma", "ssh-keygen"):
        if not shutil.which(tool):
            return f"{tool} is not installed (run ./setup.sh test)"
    if not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")):
        return "openssh-server is not installed (run ./setup.sh test)"
    return None


def pytest_collection_modifyitems(config, items):
    # `-m 'not fleet'` must leave out every test that needs root and sshd (README: Tests).
    unmarked = [item.nodeid for item in items if "fleet" in getattr(item, "fixturenames", ())
                and "fleet" not in item.keywords]
    if unmarked:
        raise pytest.UsageError(f"tests using the fleet fixture must be marked fleet: {', '.join(unmarked)}")
    why = _can_run_fleet()
    if why and not os.environ.get("CI"):
        skip = pytest.mark.skip(reason=why)
        for item in items:
            if "fleet" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    """Six real sshd hosts covering the four roles, with a bare origin holding the demo Ruby app."""
    why = _can_run_fleet()
    if why:
        pytest.fail(f"cannot start the test fleet: {why}") if os.environ.get("CI") else pytest.skip(why)
    f = Fleet(tmp_path_factory.mktemp("fleet"), HOSTS, subnet=FLEET_SUBNET, first=11, port=2222)
    f.create()
    f.start()
    yield f
    f.stop()


class Project:
    """A project folder with stages/ for the test fleet, and ways to run pampa in it."""

    def __init__(self, root: Path, fleet: Fleet):
        self.root, self.fleet = root, fleet
        self.stages = root / "stages"
        self.stages.mkdir(parents=True, exist_ok=True)
        (self.stages / "secrets").mkdir(exist_ok=True)
        (self.stages / "secrets" / "config.rb").write_text(f"DB_PASSWORD = '{SECRET}'\n")
        (self.stages / "secrets" / "config.rb").chmod(0o600)  # as an operator keeps a secret (else: a warning)

    def stage(self, name: str = "test", trace: bool = False, **settings) -> Path:
        """Write a stage for the fleet. ``trace``: record each command's start/end in ~/trace.log.

        Tracing rides on the prefix, which a shell session runs once per host, so traced stages run
        each command on its own channel (``ssh.shell_session: false``); the others use the default.
        """
        base = {"secrets": [{"local": "secrets/config.rb", "remote": "config.rb"}]}
        if trace:
            base.update(prefix=TRACE_PREFIX, ssh={"shell_session": False})
        base.update(settings)
        return self.fleet.write_stage(self.stages, name, **base)

    def edit(self, name: str, fn) -> None:
        path = self.stages / f"{name}.yml"
        data = yaml.safe_load(path.read_text())
        fn(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    def pampa(self, *args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run the real ``pampa`` command (no TTY, so CI mode) in this project."""
        full_env = {**os.environ, **(env or {})}
        full_env.pop("COLUMNS", None)
        return subprocess.run([sys.executable, "-m", "pampa_deployer", *args], cwd=self.root, env=full_env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def popen(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "pampa_deployer", *args], cwd=self.root,
                                env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    def run_main(self, *args: str) -> int:
        old = os.getcwd()
        os.chdir(self.root)
        try:
            return main(list(args))
        finally:
            os.chdir(old)


@pytest.fixture(scope="session")
def postgres():
    """One private PostgreSQL server for the session (tests/pgserver.py), started on first use.

    Skipped only where PostgreSQL is missing and this is not CI: in CI (CI=true) a missing
    server is a failure, so a green CI always means the PostgreSQL tests ran.
    """
    from pgserver import PostgresServer, why_not
    why = why_not()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {why}")
        pytest.skip(why)
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def psycopg_driver():
    """The PostgreSQL driver, for a test that needs it but no server: skipped without it, except in CI."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        why = "psycopg is not installed (./setup.sh test installs pampa-deployer[postgres])"
        pytest.fail(f"CI must run the PostgreSQL tests: {why}") if os.environ.get("CI") else pytest.skip(why)


@pytest.fixture(params=["sqlite", "postgresql"])
def ap_database(request, tmp_path):
    """Where an access point under test keeps its state: each backend in turn (a file, or a fresh schema)."""
    if request.param == "sqlite":
        return str(tmp_path / "ap.sqlite3")
    return request.getfixturevalue("postgres").fresh_url()


@pytest.fixture
def access_point(tmp_path):
    """The reference access point on a free loopback port, key ``ap-test-key``; its URL."""
    from pampa_deployer.server.app import make_server
    server = make_server("127.0.0.1", 0, str(tmp_path / "ap.sqlite3"), "ap-test-key")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def project(tmp_path, fleet):
    """A fresh project for the fleet; clears every host's trace, so each test reads only its own."""
    for host in fleet.hosts:
        (fleet.home(host.name) / "trace.log").unlink(missing_ok=True)
    return Project(tmp_path, fleet)


# -- reading what happened on the hosts ---------------------------------------------------------------
def head(fleet: Fleet, name: str) -> str:
    return subprocess.run(["git", "-C", str(fleet.code(name)), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def trace(fleet: Fleet, name: str) -> list[tuple[float, float]]:
    """(start, end) of every traced command on the host, in order."""
    path = fleet.home(name) / "trace.log"
    if not path.exists():
        return []
    starts, spans = [], []
    for line in path.read_text().splitlines():
        stamp, kind = line.split()
        if kind == "start":
            starts.append(float(stamp))
        else:
            spans.append((starts.pop(0), float(stamp)))
    return spans


def pid(fleet: Fleet, name: str, service: str) -> int | None:
    path = fleet.home(name) / "run" / f"{service}.pid"
    return int(path.read_text()) if path.exists() else None


def puma_workers(fleet: Fleet, name: str) -> set[int]:
    """The host's puma workers: a phased or hot restart replaces them, not the master (whose pid stays)."""
    master = pid(fleet, name, "puma")
    try:
        return {int(c) for c in Path(f"/proc/{master}/task/{master}/children").read_text().split()}
    except (OSError, ValueError):
        return set()


def restarted(fleet: Fleet, name: str, service: str, before) -> bool:
    """``service`` runs anew since ``before`` (``served(...)``): new puma workers, or a new pid."""
    after = served(fleet, name, service)
    if service == "puma":
        return bool(after) and not after & before
    return after is not None and after != before and alive(after)


def served(fleet: Fleet, name: str, service: str):
    """What ``restarted`` compares: puma's worker pids, or the service's pid."""
    return puma_workers(fleet, name) if service == "puma" else pid(fleet, name, service)


def alive(process_id: int | None) -> bool:
    if not process_id:
        return False
    try:
        status = Path(f"/proc/{process_id}/status").read_text()
    except OSError:
        return False
    return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status.splitlines())


def migrations(fleet: Fleet, name: str) -> list[str]:
    db = fleet.code(name) / "db" / "app.sqlite3"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT filename FROM schema_migrations ORDER BY filename")] \
            if conn.execute("SELECT name FROM sqlite_master WHERE name='schema_migrations'").fetchone() else \
            [str(r[0]) for r in conn.execute("SELECT version FROM schema_info")]


def host_pids(fleet, name: str) -> list[int]:
    """Every process of the host: those in its sshd's mount namespace."""
    unshare = int((fleet.root / "hosts" / name / "sshd" / "unshare.pid").read_text())
    namespace = os.readlink(f"/proc/{unshare}/ns/mnt")
    return _pids_in_namespace(namespace)  # the unshare pid itself became the host's sshd


def running(fleet, name: str, needle: str) -> list[str]:
    """Command lines of the host's live (not zombie) processes that contain ``needle``."""
    found = []
    for pid in host_pids(fleet, name):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        zombie = any(line.startswith("State:") and "Z" in line.split()[1] for line in status.splitlines())
        if not zombie and needle in cmdline:
            found.append(cmdline)
    return found


# -- docs' example outputs ---------------------------------------------------------------------------------
DOCS = Path(__file__).resolve().parent.parent / "docs"


def doc_block(doc: str, marker: str) -> str:
    """The fenced block right after ``<!-- marker -->`` in ``docs/DOC``, its list indentation removed."""
    after = (DOCS / doc).read_text().split(f"<!-- {marker} -->", 1)[1]
    return textwrap.dedent(after.split("```", 2)[1].split("\n", 1)[1])


def doc_normal(line: str) -> str:
    """A line without what changes from run to run: timestamps, revisions, durations, who and where."""
    line = re.sub(r"^\d\d:\d\d:\d\d\.\d{3} ", "", line.strip())
    line = re.sub(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b", "<time>", line)
    line = re.sub(r"\b\d{4}-\d\d-\d\d \d\d:\d\d(:\d\dZ)?(?!\d)", "<time>", line)  # pending, history
    line = re.sub(r"\b\d{14}-(?=[0-9a-f]{7}\b)", "<stamp>-", line)  # release names
    line = re.sub(r"\b\d{8}-\d{6}\b", "<stamp>", line)  # run directories
    line = re.sub(r"\b(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b", "<rev>", line)
    line = re.sub(r"\b\d+\.\d+s\b", "<t>s", line)
    line = re.sub(r"(?<=  )\d+s(?=  |$)", "<t>s", line)  # whole seconds in a column (history's "took")
    line = re.sub(r"\bby [\w.-]+@[\w.-]+ since\b", "by <who> since", line)
    line = re.sub(r" {2,}", "  ", line)  # aligned columns: their widths follow the values
    return line.lstrip("├│└─ ").strip()


def doc_shows(doc: str, marker: str, output: str) -> None:
    """Every line of the doc's output block (but ``$ command`` lines and ``...``) is in the real output."""
    got = {doc_normal(line) for line in output.splitlines()}
    for line in doc_block(doc, marker).splitlines():
        if line.startswith("$ ") or line.strip() in ("", "..."):
            continue
        assert doc_normal(line) in got, f"docs/{doc} shows {line!r}; the real output was:\n{output}"


def kill_leftovers(fleet, name: str, needle: str) -> None:
    """SIGKILL the host's processes whose command line contains ``needle`` (a test's own cleanup)."""
    for pid in host_pids(fleet, name):
        try:
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def ended_or_say_where_it_waits(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for a pampa process to end; if it has not after ``timeout`` (hung, not slow), fail with where
    every thread of it waits (``kill -USR1``: cli.dump_stacks_on_usr1) instead of a bare timeout."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        proc.wait(10)
        stacks = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"pampa had not ended {timeout:g}s later; its threads were at:\n{stacks[-6000:]}")


def read_until(proc: subprocess.Popen, needle: str, seen: list[str]) -> None:
    """Read ``proc``'s stdout into ``seen`` up to the first line containing ``needle``."""
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"never saw {needle!r}: {''.join(seen)}")


@contextlib.contextmanager
def frozen(fleet, name: str):
    """SIGSTOP every process of the host (it accepts TCP but answers nothing); always SIGCONT them again."""
    pids = host_pids(fleet, name)
    try:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
        yield pids
    finally:
        for pid in host_pids(fleet, name):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)


class Background:
    """A pampa command running in the background: what it printed so far, signals, and how it ended.

    ``took`` is measured from ``mark()`` (or the first ``interrupt()``) to the end: a generous bound
    on it tells "ended" from "hung"; it is never a timing to meet.
    """

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.seen: list[str] = []
        self.out = self.err = ""
        self.t0: float | None = None
        self.took: float | None = None

    def read_until(self, needle: str) -> None:
        read_until(self.proc, needle, self.seen)

    def read_until_all(self, needles: set[str]) -> None:
        """Read on until every one of ``needles`` has appeared in a line, in any order."""
        missing = set(needles)
        for line in self.proc.stdout:
            self.seen.append(line)
            missing -= {n for n in missing if n in line}
            if not missing:
                return
        raise AssertionError(f"never saw {sorted(missing)}: {''.join(self.seen)}")

    def mark(self) -> None:
        self.t0 = time.monotonic()

    def interrupt(self, times: int = 1) -> None:
        """SIGINT, ``times`` times (0.3 s apart: the operator pressing Ctrl-C again)."""
        if self.t0 is None:
            self.mark()
        for n in range(times):
            if n:
                time.sleep(0.3)
            self.proc.send_signal(signal.SIGINT)

    def finish(self, timeout: float = 60) -> str:
        """Wait for the end (a hang fails the test); returns everything it printed on stdout."""
        self.out, self.err = self.proc.communicate(timeout=timeout)
        if self.t0 is not None:
            self.took = time.monotonic() - self.t0
        return self.output

    @property
    def output(self) -> str:
        return "".join(self.seen) + self.out

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode


@contextlib.contextmanager
def in_background(project, fleet, *args: str, until: str, leftovers: tuple[str, str] | None = None):
    """``pampa ARGS`` started and read up to the line containing ``until``; on the way out it is killed
    if still running, and the host's ``leftovers`` (host, command-line needle) are killed too."""
    run = Background(project.popen(*args))
    try:
        run.read_until(until)
        yield run
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.communicate()
        if leftovers is not None:
            kill_leftovers(fleet, *leftovers)
