"""Where the access point keeps its state: a SQLite file (the default) or a PostgreSQL database.

The store (``store.py``) writes its SQL once, with ``?`` placeholders and the SQL both engines
share; this module is the seam between them and owns only what differs:

- opening the connection, the schema's id column and upgrading old tables;
- ``for_update``: the row lock PostgreSQL needs so that several server processes apply the
  gate rule one at a time (SQLite has one process and one lock, so it needs none);
- ``notify``/``listen``: PostgreSQL's LISTEN/NOTIFY, which carries "this request changed" to
  the long polls parked in the other processes;
- what a file needs that a server does not: SQLite's file is created 0600 (its ``-wal`` and ``-shm``
  take the same mode) and held by one process (an exclusive lock on ``FILE.lock``); PostgreSQL gives
  each worker thread its own connection, so a row lock one request waits for holds up no other.

The PostgreSQL driver (psycopg 3, the ``pampa-deployer[postgres]`` extra) is imported only
when a ``postgresql://`` URL is given, so SQLite users install nothing more.
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from contextlib import contextmanager
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError
from .change import EVERYTHING, Change, decode

#: The NOTIFY channel every access point process of one database listens on.
CHANNEL = "pampa_access_point"
#: Seconds a statement may wait for a lock or run before it fails (nothing hangs on a stuck peer).
STATEMENT_TIMEOUT = 10
POSTGRES_SCHEMES = ("postgresql", "postgres")


class DatabaseError(Exception):
    """The database could not be reached or refused a statement (answered 503, never a traceback).

    ``reason``: what a client is told (no path, no URL); the message, with them, goes to the server's log.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or "it is unavailable"


class DatabaseInUse(DatabaseError):
    """Another access point process holds this SQLite file (refused at start: one process per file)."""


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in POSTGRES_SCHEMES


def redacted(url: str) -> str:
    """The URL without its password: what may be printed or logged."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES or parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def open_database(url: str) -> "Sqlite | Postgres":
    """``postgresql://...`` (or ``postgres://``): PostgreSQL; anything else: a SQLite file path."""
    return Postgres(url) if is_postgres(url) else Sqlite(url)


class Sqlite:
    """One file, one process: every call is serialised by the store's lock, so no row locks.

    Opening it creates the file 0600 if it is new and takes an exclusive lock on ``FILE.lock`` for the
    life of the process: a second ``serve`` on the same file is refused (``DatabaseInUse``) rather than
    letting two processes apply the gate rule to one request each in its own memory.
    """

    id_column = "INTEGER PRIMARY KEY AUTOINCREMENT"
    for_update = ""
    workers = 1  # one connection: more threads would only queue on it
    one_process = True  # every write is made here, so this process knows of each change at once

    def __init__(self, path: str):
        self.url = path
        self._lock_fd = None
        try:
            if not os.path.isdir(path):
                self._hold(path)
                os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))  # a new file is 0600 (umask aside)
            self.conn = sqlite3.connect(path, check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
        except (sqlite3.Error, OSError) as e:
            self._release()
            if isinstance(e, DatabaseInUse):
                raise
            raise DatabaseError(f"cannot open the database {path}: {getattr(e, 'strerror', None) or e}") from None

    def _hold(self, path: str) -> None:
        try:
            fd, writable = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600), True
        except OSError:  # a read-only folder: a lock already there still works; none is needed to only read
            try:
                fd, writable = os.open(path + ".lock", os.O_RDONLY), False
            except OSError:
                return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise DatabaseInUse(
                f"another access point process (pid {holder or '?'}) serves {path}: one SQLite file takes one "
                "process; for several, use PostgreSQL (--database postgresql://..., docs/pull-mode.md)") from None
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the lock
            self._lock_fd = None

    def create(self, schema: str, columns: dict[str, dict[str, str]], indexes: str) -> None:
        try:
            self.conn.executescript(schema)
            for table, wanted in columns.items():
                have = {r["name"] for r in self.conn.execute(f"PRAGMA table_info({table})")}
                for column, decl in wanted.items():
                    if column not in have:
                        self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            self.conn.executescript(indexes)
            # WAL + NORMAL: a commit is a write to the log, not an fsync of the database (1,000 agents report).
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.commit()
        except sqlite3.Error as e:
            raise DatabaseError(f"cannot open the database {self.url}: {e}") from None

    def execute(self, sql: str, params=()):
        try:
            return self.conn.execute(sql, params)
        except sqlite3.Error as e:
            raise DatabaseError(f"database {self.url}: {_sqlite_reason(e)}", _sqlite_reason(e)) from None

    def executemany(self, sql: str, rows) -> None:
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.Error as e:
            raise DatabaseError(f"database {self.url}: {_sqlite_reason(e)}", _sqlite_reason(e)) from None

    @contextmanager
    def transaction(self):
        try:
            with self.conn:
                yield
        except sqlite3.Error as e:  # the commit itself (a full disk shows here)
            raise DatabaseError(f"database {self.url}: {_sqlite_reason(e)}", _sqlite_reason(e)) from None

    def notify(self, payload: str) -> None:
        """One process: the store already woke its own polls."""

    def listen(self, deliver: Callable[[Change], None]) -> None:
        """Nothing to listen to: no other process writes this file."""

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            self._release()


def _sqlite_reason(e: sqlite3.Error) -> str:
    """SQLite's words, with what an operator does about the two that happen in production."""
    text = str(e)
    if "readonly" in text:
        return f"{text} (the file or its folder is not writable by this process)"
    if "disk is full" in text or "disk I/O" in text:
        return f"{text} (free space on the disk that holds it)"
    return text


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise ConfigError("access-point serve: a postgresql:// database needs the PostgreSQL driver psycopg; "
                          "install pampa-deployer with its [postgres] extra (docs/pull-mode.md)") from None
    return psycopg


class Postgres:
    """Several processes on one database: row locks order the writes, NOTIFY wakes the others' polls.

    Each worker thread of the server has its own connection (``workers`` of them at most), so a write
    waiting on a row lock another process holds stalls one worker, not every client.
    """

    id_column = "BIGSERIAL PRIMARY KEY"
    for_update = " FOR UPDATE"
    workers = 4
    one_process = False  # other processes write too: their changes arrive later, by NOTIFY

    def __init__(self, url: str):
        self.url = url
        self.psycopg = _psycopg()
        self._local = threading.local()
        self._all: list = []
        self._pids: set[int] = set()
        self._guard = threading.Lock()
        self._connect_here()
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

    @property
    def conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or ((conn.broken or conn.closed) and not getattr(self._local, "in_transaction", False)):
            conn = self._connect_here()  # the server restarted: the next call works again (never mid-transaction)
        return conn

    def _connect_here(self):
        conn = self._connect()
        with self._guard:
            self._all.append(conn)
            self._pids.add(conn.info.backend_pid)
        self._local.conn = conn
        return conn

    def _connect(self):
        """A connection with timeouts: no statement waits on a lock or the network for ever."""
        from psycopg.conninfo import conninfo_to_dict
        from psycopg.rows import dict_row
        try:
            params = conninfo_to_dict(self.url)
            limits = f"-c lock_timeout={STATEMENT_TIMEOUT}s -c statement_timeout={STATEMENT_TIMEOUT}s"
            params["options"] = f"{params.get('options') or ''} {limits}".strip()  # keep the URL's own options
            params.setdefault("connect_timeout", 10)
            return self.psycopg.connect(**params, autocommit=True, row_factory=dict_row)
        except self.psycopg.Error as e:
            raise DatabaseError(f"cannot connect to {redacted(self.url)}: {_first_line(e)}") from None

    def create(self, schema: str, columns: dict[str, dict[str, str]], indexes: str) -> None:
        with self.transaction():
            # Two processes starting at once would race on CREATE TABLE: one at a time.
            self.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (CHANNEL,))
            for statement in _statements(schema):
                self.execute(statement)
            for table, wanted in columns.items():
                for column, decl in wanted.items():
                    self.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {decl}")
            for statement in _statements(indexes):  # after the columns they cover
                self.execute(statement)

    def execute(self, sql: str, params=()):
        try:
            return self.conn.execute(sql.replace("?", "%s"), params)
        except self.psycopg.Error as e:
            raise DatabaseError(f"database {redacted(self.url)}: {_first_line(e)}", _first_line(e)) from None

    def executemany(self, sql: str, rows) -> None:
        try:
            self.conn.cursor().executemany(sql.replace("?", "%s"), rows)
        except self.psycopg.Error as e:
            raise DatabaseError(f"database {redacted(self.url)}: {_first_line(e)}", _first_line(e)) from None

    @contextmanager
    def transaction(self):
        conn = self.conn
        self._local.in_transaction = True
        try:
            with conn.transaction():
                yield
        except self.psycopg.Error as e:
            raise DatabaseError(f"database {redacted(self.url)}: {_first_line(e)}", _first_line(e)) from None
        finally:
            self._local.in_transaction = False

    def notify(self, payload: str) -> None:
        """Sent when the transaction commits, so a woken poll in another process sees the change."""
        self.execute("SELECT pg_notify(?, ?)", (CHANNEL, payload))

    def listen(self, deliver: Callable[[Change], None]) -> None:
        """Call ``deliver(change)`` (from a thread) for every change another process commits."""
        self._listener = threading.Thread(target=self._listen, args=(deliver,), name="pampa-ap-listen",
                                          daemon=True)
        self._listener.start()

    def _listen(self, deliver) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    deliver(EVERYTHING)  # changes made while not listening: every poll re-checks once
                    delay = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.25):
                            if note.pid not in self._pids:  # this process woke its own polls
                                deliver(decode(note.payload))
            except (self.psycopg.Error, DatabaseError):
                self._stop.wait(delay)  # the database is down: retry, backing off up to 10 s
                delay = min(delay * 2, 10.0)

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
        with self._guard:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


def _statements(script: str) -> list[str]:
    return [s for s in script.split(";") if s.strip()]


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
