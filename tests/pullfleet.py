"""The pull-mode fleet machinery the pull fleet tests share: an access point in the test process, node
tokens, and agents started inside the hosts from the unit `pampa agent install` wrote (see
tests/test_pull_fleet.py for how). Not a test module: the tests import ``Pull`` and the fixtures."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pytest

from pampa_deployer.accesspoint.client import AccessPointClient
from pampa_deployer.errors import AccessPointError
from pampa_deployer.fleet import HOST_HOME
from pampa_deployer.server.app import make_server

KEY = "pull-admin-k3y-fleet"
KEPLERS = ["kepler-1", "kepler-2"]
GATED = ["euler-1", "copernico-1"]
NEWTONS = ["newton-1", "newton-2"]
#: What systemd gives a service: a clean environment (plus the unit's Environment= lines).
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class AccessPoint:
    """The reference server in a thread; ``stop()`` and ``start()`` again on the same port and database."""

    def __init__(self, db: Path, stall_after: float = 30):
        self.db, self.port, self.stall_after = db, 0, stall_after
        self.start()

    def start(self) -> None:
        self.server = make_server("127.0.0.1", self.port, str(self.db), KEY, stall_after=self.stall_after)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Pull:
    """The access point, the stage, the node tokens and the running agents of one test."""

    def __init__(self, project, fleet, tmp_path: Path, stall_after: float = 30):
        self.project, self.fleet, self.tmp = project, fleet, tmp_path
        self.ap = AccessPoint(tmp_path / "ap.sqlite3", stall_after)
        self.admin = AccessPointClient(self.ap.url, KEY)
        self.agents: dict[str, subprocess.Popen] = {}
        self.units: dict[str, dict] = {}
        self.env = {"PAMPA_AP_KEY": KEY}

    def stage(self, **settings) -> None:
        self.project.stage(trace=True, access_point={"url": self.ap.url, "api_key": "${PAMPA_AP_KEY}"}, **settings)

    def pampa(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.project.pampa(*args, env=self.env, timeout=timeout)

    def install(self) -> None:
        """Tokens on the developer's machine; stage files, token and unit on each host (over SSH)."""
        out = self.pampa("access-point", "token", "test", "--out", "tokens")
        assert out.returncode == 0, out.stdout + out.stderr
        self.publish()
        for host in self.fleet.hosts:
            home = self.fleet.home(host.name)
            agent_dir = home / ".pampa" / "agent"
            agent_dir.mkdir(parents=True, exist_ok=True)
            for stale in agent_dir.glob("test-*"):
                stale.unlink()
            token = agent_dir / f"test-{host.name}.token"
            shutil.copy(self.project.root / "tokens" / f"test-{host.name}.token", token)
            token.chmod(0o600)
            command = (f"cd /root/pampa && {shlex.quote(self.python)} -m pampa_deployer --stages /root/pampa/stages "
                       f"agent install test --node {host.name} --unit-dir /root/units")
            done = self.ssh(host, command)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "wrote /root/units/pampa-agent-test.service" in done.stdout
            self.units[host.name] = parse_unit((home / "units" / "pampa-agent-test.service").read_text())

    def publish(self) -> None:
        """Copy the stage folder to every host, as an operator updates the nodes' copy of stages/."""
        for host in self.fleet.hosts:
            home = self.fleet.home(host.name)
            shutil.rmtree(home / "pampa" / "stages", ignore_errors=True)
            shutil.copytree(self.project.stages, home / "pampa" / "stages")

    def ssh(self, host, command: str) -> subprocess.CompletedProcess:
        f = self.fleet
        return subprocess.run(["ssh", "-i", str(f.key), "-o", f"UserKnownHostsFile={f.known_hosts}",
                               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                               "-p", str(host.port), f"root@{host.address}", command],
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    def start(self, name: str) -> subprocess.Popen:
        """Start the unit's ExecStart inside the host, as systemd would (clean env, its WorkingDirectory)."""
        unit = self.units[name]
        namespace_pid = (self.fleet.root / "hosts" / name / "sshd" / "unshare.pid").read_text().strip()
        env = ["env", "-i", f"PATH={SYSTEMD_PATH}", *unit["Environment"]]
        argv = ["nsenter", "--target", namespace_pid, "--mount", "--", *env, "sh", "-c", 'cd "$0" && exec "$@"',
                unit["WorkingDirectory"], *unit["ExecStart"]]
        log = open(self.tmp / f"agent-{name}.log", "a")
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.agents[name] = proc
        return proc

    def start_all(self) -> None:
        for host in self.fleet.hosts:
            self.start(host.name)

    def log(self, name: str) -> str:
        path = self.tmp / f"agent-{name}.log"
        return path.read_text() if path.exists() else ""

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        proc = self.agents.pop(name)
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(30)

    def stop_all(self) -> None:
        for name in list(self.agents):
            self.stop(name)

    def wait_for(self, deploy_id: int, pred, what: str, bound: float = 240.0) -> dict:
        deadline = time.monotonic() + bound
        while True:
            try:
                d = self.admin.deploy(deploy_id)
                if pred(d):
                    return d
            except AccessPointError:
                d = None
            if time.monotonic() > deadline:
                raise AssertionError(f"never happened: {what}; last seen {d}")
            time.sleep(0.2)


def parse_unit(text: str) -> dict:
    unit: dict = {"Environment": []}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or line.startswith("#"):
            continue
        if key == "Environment":
            unit["Environment"].append(shlex.split(value)[0])
        elif key == "ExecStart":
            unit["ExecStart"] = shlex.split(value)
        elif key == "WorkingDirectory":
            unit["WorkingDirectory"] = shlex.split(value)[0]
        else:
            unit[key] = value
    return unit


@pytest.fixture(scope="module")
def node_python(tmp_path_factory) -> str:
    """The Python the nodes run pampa with.

    Each host's /root is its own, so an interpreter living under /root (pyenv) is invisible on the
    hosts. Like installing pampa on a node, build a venv outside /root from the system Python that
    shares this interpreter's packages (same minor version, so compiled wheels load).
    """
    if not str(Path(sys.executable).resolve()).startswith(HOST_HOME + "/"):
        return sys.executable
    base = "/usr/bin/python3"
    version = subprocess.run([base, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True).stdout.strip() if os.path.exists(base) else ""
    if version != str(sys.version_info[:2]):
        pytest.skip(f"{sys.executable} lives under /root and {base} is not Python {sys.version_info[:2]}")
    venv = tmp_path_factory.mktemp("node-venv")
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = sysconfig.get_paths()["purelib"]
    site_dir = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    (site_dir / "pampa-test.pth").write_text(f"import site; site.addsitedir({purelib!r})\n")
    return str(venv / "bin" / "python")


@pytest.fixture
def pull(request, project, fleet, tmp_path, node_python):
    p = Pull(project, fleet, tmp_path, getattr(request, "param", 30))
    p.python = node_python
    yield p
    p.stop_all()
    try:
        p.ap.stop()
    except Exception:  # noqa: BLE001 - a test may have stopped it already
        pass


def starts(fleet, name: str) -> int:
    """Commands started on the host so far (its trace's start lines; a killed one may never end)."""
    path = fleet.home(name) / "trace.log"
    return path.read_text().count(" start\n") if path.exists() else 0


def states(d: dict) -> dict:
    return {n["node"]: n["state"] for n in d["nodes"]}


