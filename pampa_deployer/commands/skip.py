"""Skipping work a release does not need: the shell conditions of ``bundle`` and ``migrate``.

The decision is made on the host, inside the step's own command (no extra round trip), and only
on what the host itself shows: Bundler's own ``bundle check``, the database's own schema version,
git, and the host's revision log (commands/revlog.py). Whatever cannot be read (no log, a failed
or interrupted last run, a revision git no longer has, no database client, an unknown database
URL, a locked database) means the work runs: a skip is never a guess.

A skipped step prints one line, ``pampa-skip: WHY``; the engine shows the step as skipped with
that reason and records it in the report. The step still succeeds or fails by its exit code.
"""
from __future__ import annotations

from ..shell import quote
from .revlog import log_path

#: The line a step prints when it skipped its work, followed by why.
SKIP_PREFIX = "pampa-skip: "

#: Where Sequel's migrations live (the default migrate command's directory).
MIGRATIONS = "db/migrations"

#: From the revision log, the revision the host's last deploy or rollback left, if that run ended ok
#: (the log is JSON with sorted keys, so each line starts with ``{"after": ...``; commands/revlog.py).
_LAST_OK = ('/"kind": "(deploy|rollback)"/ { l = $0 } '
            'END { if (l ~ /"result": "ok"/ && substr(l, 1, 11) == "{\\"after\\": \\"") '
            '{ r = substr(l, 12); sub(/".*/, "", r); if (r ~ /^[0-9a-f]+$/) print r } }')

#: Reads the migration files (one per line), then ``::v`` and Sequel's ``schema_info`` version, then
#: ``::a`` and ``schema_migrations``'s file names; exits 0 (printing what it saw) only when the
#: database is exactly where the files lead: the integer migrator's version equals the highest file
#: version, or the timestamp migrator (a file version above 20000101, as Sequel decides) has applied
#: exactly the files there are.
_SCHEMA_CURRENT = (
    '/^::/ { s = $0; next } '
    's == "" { n = $0; sub(/.*\\//, "", n); n = tolower(n); if (n !~ /^[0-9]+_.+\\.rb$/) next; '
    'x = n; sub(/_.*/, "", x); x += 0; if (x > 20000101) ts = 1; if (x > m) m = x; f[n] = 1; nf++; next } '
    's == "::v" && /^[0-9]+$/ { v = $0 + 0; hv = 1; next } '
    's == "::a" && $0 != "" { a[tolower($0)] = 1; na++ } '
    'END { if (!nf) exit 1; '
    'if (ts) { if (na != nf) exit 1; for (k in f) if (!(k in a)) exit 1; print nf " migrations applied"; exit 0 } '
    'if (!hv || v != m) exit 1; print "version " v }')

#: ``q SQL`` asks the database of ``$DATABASE_URL`` with its own client (sqlite3, psql), read-only;
#: false when the URL is not one of those or the SQLite file does not exist.
_CLIENT = ('case ${DATABASE_URL-} in '
           'sqlite:*) d=${DATABASE_URL#sqlite:}; d=${d#//}; d=${d%%\\?*}; '
           '[ -f "$d" ] && q() { sqlite3 -readonly -batch -cmd ".timeout 5000" "$d" "$1"; } ;; '
           'postgres://*|postgresql://*) q() { PGCONNECT_TIMEOUT=5 psql "$DATABASE_URL" -XAtqc "$1"; } ;; '
           '*) false ;; esac')


def offers(script: str) -> bool:
    """Whether a command can say it skipped (only such a step's ``pampa-skip:`` line is believed)."""
    return SKIP_PREFIX in script


def _anchored(path: str) -> str:
    """A path for a command that runs in the code path: a relative one is relative to the login folder."""
    return path if path.startswith(("/", "~")) else "~/" + path


def last_ok(code_path: str) -> str:
    """Shell: ``r`` becomes the revision the host's last deploy or rollback left when that run ended ok;
    false when there is none (no log, the last run failed or was interrupted)."""
    return f"r=$(awk {quote(_LAST_OK)} {quote(_anchored(log_path(code_path)))} 2>/dev/null) && [ -n \"$r\" ]"


#: What each condition checks, in words: shown after the command, as a shell comment (``Run.skip_when``).
GEMS_WHEN = "skipped if the last deploy ended ok and `bundle check` finds every gem installed"
MIGRATIONS_WHEN = ("skipped if the last deploy ended ok, {migrations} did not change since, and the "
                   "database's own schema version is current")


def unless_gems_installed(install: str, code_path: str) -> str:
    """``install`` unless the host's last run ended ok and ``bundle check`` finds every gem of the
    Gemfile.lock installed (what Capistrano's bundler plugin checks first)."""
    return (f"if {last_ok(code_path)} && bundle check >/dev/null 2>&1; "
            f"then echo {quote(SKIP_PREFIX + 'gems already installed')}; else {install}; fi")


def unless_migrations_current(migrate: str, code_path: str, migrations: str = MIGRATIONS) -> str:
    """``migrate`` unless the host's last run ended ok, no file under ``migrations`` changed since the
    revision it left, and the database's own schema version says every migration is applied."""
    schema = (f"{_CLIENT} && v=$({{ printf '%s\\n' {quote(migrations)}/*; echo ::v; "
              f"q 'SELECT version FROM schema_info' 2>/dev/null; echo ::a; "
              f"q 'SELECT filename FROM schema_migrations' 2>/dev/null; }} | awk {quote(_SCHEMA_CURRENT)})")
    return (f"if {last_ok(code_path)} && git diff --quiet \"$r\" HEAD -- {quote(migrations)} 2>/dev/null "
            f"&& {schema}; then echo \"{SKIP_PREFIX}no new migrations: {migrations} unchanged since "
            f"${{r%\"${{r#???????}}\"}}, database at $v\"; else {migrate}; fi")
