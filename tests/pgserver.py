"""A throwaway PostgreSQL server for the tests: initdb into a temp dir, listen on a free loopback port.

Debian's ``postgresql`` package (setup.sh installs it) brings the binaries; PostgreSQL refuses to
run as root, so as root the server runs as the package's ``postgres`` user. One server serves the
whole session; each test gets its own schema (``fresh_url``), which is much cheaper than a database.
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from urllib.parse import quote


def binaries() -> str | None:
    """The folder with initdb and pg_ctl, or None (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(os.path.realpath(initdb)) if initdb else None


def why_not() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    if binaries() is None:
        return "PostgreSQL is not installed (./setup.sh test installs Debian's postgresql package)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (./setup.sh test installs pampa-deployer[postgres])"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``start()`` a private cluster, ``fresh_url()`` per test, ``stop()`` drops it all."""

    def __init__(self):
        self.bin = binaries()
        # As root the server runs as 'postgres', which must reach the folder: /tmp, not a root-only $TMPDIR.
        self.dir = tempfile.mkdtemp(prefix="pampa-pg-", dir="/tmp" if os.geteuid() == 0 else None)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._schemas = itertools.count(1)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *argv: str, timeout: float = 120) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(prefix + list(argv), timeout=timeout, stdin=subprocess.DEVNULL, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.dir)
        if done.returncode:
            log = os.path.join(self.dir, "server.log")
            tail = open(log).read()[-1500:] if os.path.exists(log) else ""
            raise RuntimeError(f"{os.path.basename(argv[0])} failed ({done.returncode}): {done.stdout[-1500:]}{tail}")

    def start(self) -> "PostgresServer":
        self._run(f"{self.bin}/initdb", "-D", self.data, "-U", self.user, "--auth=trust", "--no-sync",
                  "--encoding=UTF8", "--locale=C")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60 "
                   "-c shared_buffers=16MB")
        self._run(f"{self.bin}/pg_ctl", "start", "-w", "-t", "60", "-D", self.data, "-l",
                  os.path.join(self.dir, "server.log"), "-o", options)
        return self

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def fresh_url(self) -> str:
        """A URL whose tables live in a new, empty schema: each test starts from nothing."""
        import psycopg
        schema = f"t{next(self._schemas)}"
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return f"{self.url}?options={quote(f'-csearch_path={schema}')}"

    def stop(self) -> None:
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self._run(f"{self.bin}/pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w", "-t", "30")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
