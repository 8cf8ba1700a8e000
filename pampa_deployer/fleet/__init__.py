"""A local fleet of real OpenSSH servers on 127.0.x.y, for the tests, the demo and the benchmarks.

Each host is its own ``sshd`` in a private mount namespace, with the host's own
folder bind-mounted over ``/root``: every host has its own home, code path,
processes' pid files and host key, like a separate machine. An origin bare git
repository holds the demo Ruby app. Needs root (for ``unshare``) and
openssh-server, git, ruby, puma, ruby-sequel, ruby-sqlite3, ruby-bundler.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

APP_SOURCE = Path(__file__).parent / "app"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
HOST_HOME = "/root"  # what each host's own home is mounted over, inside its namespace


@dataclass(frozen=True)
class FleetHost:
    name: str
    roles: tuple[str, ...]
    address: str
    port: int


def _pids_in_namespace(namespace: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == namespace:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def _run(args, cwd=None, env=None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, check=True, text=True, capture_output=True)
    return result.stdout


def _git(args, cwd) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Pampa Demo", "GIT_AUTHOR_EMAIL": "demo@pampa.local",
           "GIT_COMMITTER_NAME": "Pampa Demo", "GIT_COMMITTER_EMAIL": "demo@pampa.local"}
    return _run(["git", *args], cwd=cwd, env=env).strip()


class AddressTaken(RuntimeError):
    """A fleet host's address:port already answers: another fleet or demo runs there."""


def listening(address: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at ``address:port`` now."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


class Fleet:
    """Create, start and stop a fleet under ``root``."""

    def __init__(self, root: Path | str, hosts: list[tuple[str, tuple[str, ...]]] | None = None,
                 subnet: str = "127.0.1", first: int = 11, port: int = 2222, app: str = "pampa-demo"):
        self.root = Path(root).resolve()
        self.app = app
        self.port = port
        if hosts is None and (self.root / "fleet.json").exists():
            saved = json.loads((self.root / "fleet.json").read_text())
            self.hosts = [FleetHost(h["name"], tuple(h["roles"]), h["address"], h["port"]) for h in saved["hosts"]]
            self.app = saved.get("app", app)
        else:
            self.hosts = [FleetHost(name, tuple(roles), f"{subnet}.{first + i}", port)
                          for i, (name, roles) in enumerate(hosts or [])]

    # -- paths -------------------------------------------------------------------------------
    @property
    def key(self) -> Path:
        return self.root / "client" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "client" / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        """The fleet's own ssh_config: empty, so the operator's ~/.ssh/config does not reach the fleet."""
        return self.root / "client" / "ssh_config"

    @property
    def origin(self) -> Path:
        return self.root / "origin.git"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def home(self, name: str) -> Path:
        """The host's home folder as seen from outside its namespace."""
        return self.root / "hosts" / name / "home"

    def code(self, name: str) -> Path:
        return self.home(name) / "code" / self.app

    #: The PATH a login shell on the fleet's hosts starts with (Debian's for root).
    PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    def path_without(self, name: str, *programs: str) -> str:
        """A PATH for host ``name`` that finds every program of the machine except ``programs``.

        The hosts share this machine's /usr, so what a host can run would depend on what the machine has
        installed (a test expecting "sudo is not installed" failed where sudo is). Under this PATH (set in
        the host's ``env``) the suite decides: a folder of links in the host's own home, one per program of
        ``PATH``, the hidden ones left out. Give a host a program with a folder of its own before it."""
        folder = self.home(name) / ".fleet-path"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for directory in self.PATH.split(":"):
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                link = folder / entry.name
                if entry.name not in programs and not link.is_symlink():
                    link.symlink_to(entry.path)
        return f"{HOST_HOME}/.fleet-path"

    def _sshd_dir(self, name: str) -> Path:
        return self.root / "hosts" / name / "sshd"

    # -- creating ----------------------------------------------------------------------------
    def create(self, provision: bool = True) -> None:
        """Keys, sshd configs, the origin repo with the demo app, and (optionally) a first checkout per host."""
        (self.root / "client").mkdir(parents=True, exist_ok=True)
        if not self.key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pampa-fleet", "-f", str(self.key)])
        if not self.ssh_config.exists():
            self.ssh_config.write_text("# The local fleet's ssh_config (ssh.config in its stages): empty on purpose, so\n"
                                       "# the operator's ~/.ssh/config (User, Port, ProxyJump...) does not apply.\n")
        known = []
        for host in self.hosts:
            sshd = self._sshd_dir(host.name)
            sshd.mkdir(parents=True, exist_ok=True)
            self.home(host.name).mkdir(parents=True, exist_ok=True)
            hostkey = sshd / "ssh_host_ed25519_key"
            if not hostkey.exists():
                _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(hostkey)])
            shutil.copy(f"{self.key}.pub", sshd / "authorized_keys")
            (sshd / "sshd_config").write_text(self._sshd_config(host, sshd))
            key_type, key_data = hostkey.with_suffix(".pub").read_text().split()[:2]
            known.append(f"[{host.address}]:{host.port} {key_type} {key_data}\n")
        self.known_hosts.write_text("".join(known))
        if not self.origin.exists():
            self._create_origin()
        if provision:
            for host in self.hosts:
                if not (self.code(host.name) / ".git").exists():
                    self.code(host.name).parent.mkdir(parents=True, exist_ok=True)
                    _git(["clone", "-q", str(self.origin), str(self.code(host.name))], cwd=self.root)
                    # Servers start on the first release; a deploy brings the newer one.
                    _git(["reset", "-q", "--hard", self.revisions()[-1]], cwd=self.code(host.name))
        self._save()

    def _sshd_config(self, host: FleetHost, sshd: Path) -> str:
        return "\n".join([
            f"ListenAddress {host.address}:{host.port}",
            f"HostKey {sshd / 'ssh_host_ed25519_key'}",
            f"PidFile {sshd / 'sshd.pid'}",
            f"AuthorizedKeysFile {sshd / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PrintMotd no",
            "X11Forwarding no", "AllowTcpForwarding yes", "MaxStartups 400:30:800", "MaxSessions 64",
            "Subsystem sftp internal-sftp", "LogLevel ERROR", "",
        ])

    def _create_origin(self) -> None:
        _git(["init", "-q", "--bare", "-b", "main", str(self.origin)], cwd=self.root)
        if self.work.exists():
            shutil.rmtree(self.work)
        _git(["clone", "-q", str(self.origin), str(self.work)], cwd=self.root)
        _git(["checkout", "-q", "-b", "main"], cwd=self.work)
        shutil.copytree(APP_SOURCE, self.work, dirs_exist_ok=True)
        (self.work / "bin" / "restart").chmod(0o755)  # a wheel install may not keep the executable bit
        # A Gemfile.lock from this machine's Debian gems makes `bundle install` work offline.
        if shutil.which("bundle"):
            _run(["bundle", "lock", "--local"], cwd=self.work)
        (self.work / ".gitignore").write_text("db/*.sqlite3\n")
        self.commit("Initial Pampa demo app")
        (self.work / "db" / "migrations" / "002_add_visit_host.rb").write_text(
            "Sequel.migration do\n  change do\n    add_column :visits, :host, String\n  end\nend\n")
        self.commit("Record the host of each visit")

    def commit(self, message: str, files: dict[str, str] | None = None) -> str:
        """Commit (and push) a change to the origin; returns the new revision."""
        for rel, text in (files or {}).items():
            target = self.work / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        _git(["add", "-A"], cwd=self.work)
        _git(["commit", "-q", "--allow-empty", "-m", message], cwd=self.work)
        _git(["push", "-q", "origin", "main"], cwd=self.work)
        return _git(["rev-parse", "HEAD"], cwd=self.work)

    def revisions(self) -> list[str]:
        """Origin's main, newest first."""
        return _git(["rev-list", "main"], cwd=self.origin).split()

    def _save(self) -> None:
        data = {"app": self.app, "hosts": [{"name": h.name, "roles": list(h.roles), "address": h.address,
                                            "port": h.port} for h in self.hosts]}
        (self.root / "fleet.json").write_text(json.dumps(data, indent=2))

    # -- running -----------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        """Start every host's sshd in its own mount namespace and wait until each accepts TCP."""
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        for host in self.hosts:
            self.start_host(host.name, wait=False)
        for host in self.hosts:
            self.wait_port(host, timeout)
            if not self._alive(host.name):  # someone else's sshd answered; ours could not bind
                raise AddressTaken(f"{host.address}:{host.port} is already taken by another process, "
                                   f"so {host.name} could not listen there")

    def start_host(self, name: str, wait: bool = True) -> None:
        host = self.host(name)
        sshd = self._sshd_dir(name)
        if self._alive(name):
            return
        if listening(host.address, host.port):
            # Another fleet (or a demo from another folder) answers there: connecting would meet
            # its host key, not ours. Say so instead.
            raise AddressTaken(f"{host.address}:{host.port} is already taken by another process "
                               f"(another demo or test fleet?), so {host.name} cannot listen there")
        log = open(sshd / "sshd.log", "ab")
        script = 'mount --bind "$1" "$2" && exec "$3" -D -e -f "$4"'
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
             str(self.home(name)), HOST_HOME, SSHD, str(sshd / "sshd_config")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        (sshd / "unshare.pid").write_text(str(proc.pid))
        if wait:
            self.wait_port(host)

    def wait_port(self, host: FleetHost, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((host.address, host.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    log = (self._sshd_dir(host.name) / "sshd.log").read_text(errors="replace")[-500:]
                    raise RuntimeError(f"sshd for {host.name} did not start on {host.address}:{host.port}: {log}")
                time.sleep(0.05)

    def host(self, name: str) -> FleetHost:
        return next(h for h in self.hosts if h.name == name)

    def _alive(self, name: str) -> bool:
        pidfile = self._sshd_dir(name) / "unshare.pid"
        if not pidfile.exists():
            return False
        try:
            os.kill(int(pidfile.read_text()), 0)
            return True
        except (OSError, ValueError):
            return False

    def stop_host(self, name: str) -> None:
        """Power the host off: stop every process in its mount namespace (sshd and all it started)."""
        pidfile = self._sshd_dir(name) / "unshare.pid"
        if not pidfile.exists():
            return
        try:
            namespace = os.readlink(f"/proc/{int(pidfile.read_text())}/ns/mnt")
        except (OSError, ValueError):
            namespace = None
        if namespace is not None and namespace != os.readlink("/proc/self/ns/mnt"):
            for pid in _pids_in_namespace(namespace):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        pidfile.unlink()

    def stop(self) -> None:
        for host in self.hosts:
            self.stop_host(host.name)

    # -- configuration for pampa ----------------------------------------------------------------
    def stage_data(self, **settings) -> dict:
        """A stage mapping for this fleet (hosts, key, known_hosts); ``settings`` override or add keys."""
        data = {
            "app": self.app,
            "repo": str(self.origin),
            "branch": "main",
            "user": "root",
            "key": str(self.key),
            "ssh": {"known_hosts": str(self.known_hosts), "config": str(self.ssh_config)},
            "env": {"DATABASE_URL": "sqlite://db/app.sqlite3"},
            "units": {"restart": "cd {path} && bin/restart {unit} {address}", "puma": ["puma"],
                      "processes": ["dispatcher", "jobs", "planner"], "workers": ["worker"],
                      # Zero downtime out of the box: puma runs in cluster mode (config/puma.rb) and is
                      # restarted one worker at a time; every service is drained through its pid file.
                      "puma_restart": "phased", "pid_file": "~/run/{unit}.pid", "puma_state": "~/run/{unit}.state"},
            "hosts": {h.name: {"address": h.address, "port": h.port, "roles": list(h.roles),
                               "env": {"PAMPA_HOST": h.name}} for h in self.hosts},
        }
        for key, value in settings.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return data

    def write_stage(self, stages_dir: Path | str, name: str, **settings) -> Path:
        stages_dir = Path(stages_dir)
        stages_dir.mkdir(parents=True, exist_ok=True)
        path = stages_dir / f"{name}.yml"
        path.write_text(yaml.safe_dump(self.stage_data(**settings), sort_keys=False))
        return path
