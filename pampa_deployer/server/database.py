"""Where the access point keeps its state: a SQLite file (the default) or a PostgreSQL database.

The store (``store.py``) writes its SQL once, with ``?`` placeholders and the SQL both engines
share; this module is the seam between them and owns only what differs:

- opening the connection, the schema's id column and upgrading old tables;
- ``for_update``: the row lock PostgreSQL needs so that several server processes apply the
  gate rule one at a time (SQLite has one process and one lock, so it needs none);
- ``notify``/``listen``: PostgreSQL's LISTEN/NOTIFY, which carries "this request changed" to
  the long polls parked in the other processes.

The PostgreSQL driver (psycopg 3, the ``pampa-deployer[postgres]`` extra) is imported only
when a ``postgresql://`` URL is given, so SQLite users install nothing more.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError

#: The NOTIFY channel every access point process of one database listens on.
CHANNEL = "pampa_access_point"
#: Seconds a statement may wait for a lock or run before it fails (nothing hangs on a stuck peer).
STATEMENT_TIMEOUT = 10
POSTGRES_SCHEMES = ("postgresql", "postgres")


class DatabaseError(Exception):
    """The database could not be reached or refused a statement (answered 503, never a traceback)."""


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
    """One file, one process: every call is serialised by the store's lock, so no row locks."""

    id_column = "INTEGER PRIMARY KEY AUTOINCREMENT"
    for_update = ""

    def __init__(self, path: str):
        self.url = path
        try:
            self.conn = sqlite3.connect(path, check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
        except sqlite3.Error as e:
            raise DatabaseError(f"cannot open the database {path}: {e}") from None

    def create(self, schema: str, columns: dict[str, str]) -> None:
        try:
            self.conn.executescript(schema)
            have = {r["name"] for r in self.conn.execute("PRAGMA table_info(deploys)")}
            for column, decl in columns.items():
                if column not in have:
                    self.conn.execute(f"ALTER TABLE deploys ADD COLUMN {column} {decl}")
            # WAL + NORMAL: a commit is a write to the log, not an fsync of the database (1,000 agents report).
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.commit()
        except sqlite3.Error as e:
            raise DatabaseError(f"cannot open the database {self.url}: {e}") from None

    def execute(self, sql: str, params=()):
        return self.conn.execute(sql, params)

    @contextmanager
    def transaction(self):
        with self.conn:
            yield

    def notify(self, payload: str) -> None:
        """One process: the store already woke its own polls."""

    def listen(self, deliver: Callable[[set, bool], None]) -> None:
        """Nothing to listen to: no other process writes this file."""

    def close(self) -> None:
        self.conn.close()


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise ConfigError("access-point serve: a postgresql:// database needs the PostgreSQL driver psycopg; "
                          "install pampa-deployer with its [postgres] extra (docs/pull-mode.md)") from None
    return psycopg


class Postgres:
    """Several processes on one database: row locks order the writes, NOTIFY wakes the others' polls."""

    id_column = "BIGSERIAL PRIMARY KEY"
    for_update = " FOR UPDATE"

    def __init__(self, url: str):
        self.url = url
        self.psycopg = _psycopg()
        self.conn = self._connect()
        self._in_transaction = False
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

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

    def create(self, schema: str, columns: dict[str, str]) -> None:
        statements = [s for s in schema.split(";") if s.strip()]
        with self.transaction():
            # Two processes starting at once would race on CREATE TABLE: one at a time.
            self.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (CHANNEL,))
            for statement in statements:
                self.execute(statement)
            for column, decl in columns.items():
                self.execute(f"ALTER TABLE deploys ADD COLUMN IF NOT EXISTS {column} {decl}")

    def execute(self, sql: str, params=()):
        if not self._in_transaction and (self.conn.broken or self.conn.closed):
            self.conn = self._connect()  # the server restarted: the next call works again (never mid-transaction)
        try:
            return self.conn.execute(sql.replace("?", "%s"), params)
        except self.psycopg.Error as e:
            raise DatabaseError(f"database {redacted(self.url)}: {_first_line(e)}") from None

    @contextmanager
    def transaction(self):
        if self.conn.broken or self.conn.closed:
            self.conn = self._connect()
        self._in_transaction = True
        try:
            with self.conn.transaction():
                yield
        except self.psycopg.Error as e:
            raise DatabaseError(f"database {redacted(self.url)}: {_first_line(e)}") from None
        finally:
            self._in_transaction = False

    def notify(self, payload: str) -> None:
        """Sent when the transaction commits, so a woken poll in another process sees the change."""
        self.execute("SELECT pg_notify(?, ?)", (CHANNEL, payload))

    def listen(self, deliver: Callable[[set, bool], None]) -> None:
        """Call ``deliver(deploy ids, moved)`` (from a thread) for every change another process commits."""
        self._listener = threading.Thread(target=self._listen, args=(deliver,), name="pampa-ap-listen",
                                          daemon=True)
        self._listener.start()

    def _listen(self, deliver) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    deliver(set(), True)  # changes made while not listening: every poll re-checks once
                    delay = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.25):
                            if note.pid != self.conn.info.backend_pid:  # this process woke its own polls
                                deliver(*_decode(note.payload))
            except (self.psycopg.Error, DatabaseError):
                self._stop.wait(delay)  # the database is down: retry, backing off up to 10 s
                delay = min(delay * 2, 10.0)

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
        self.conn.close()


def encode(deploys: set, moved: bool) -> str:
    return json.dumps({"d": sorted(deploys)[:500], "m": moved})


def _decode(payload: str) -> tuple[set, bool]:
    try:
        body = json.loads(payload)
        return {int(d) for d in body.get("d", [])}, bool(body.get("m"))
    except (ValueError, TypeError, AttributeError):
        return set(), True


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
