"""The per-host revision log: one JSON line per deploy, appended next to the code path.

Next to it, the *start record* (``PATH.deploying.json``): written before the first command of a
deploy touches the host, rewritten as each step starts (in the same round trip as the step's first
command, just before its body, see ``Command.record``), and emptied by the same command that
appends the log line at the end. A host whose start record is not empty is *incomplete*: its last
deploy never finished (the host crashed, the deploy was SIGKILLed, the host stopped answering),
and the record says which run and step it was at, whatever killed it.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import replace

from ..shell import quote
from .command import Command

SUFFIX = ".revisions.jsonl"
STATE_SUFFIX = ".deploying.json"
AFTER = "__PAMPA_AFTER__"
STATE_MARK = "--pampa-state--"


def log_path(code_path: str) -> str:
    """``~/code/mysaas`` -> ``~/code/mysaas.revisions.jsonl``."""
    return code_path.rstrip("/") + SUFFIX


def base(code_path: str) -> Command:
    """A Command carrying a host's code path, from which the revision-log commands are built."""
    return Command(script="true", cwd=code_path, timeout=30, killable=False)


def state_path(code_path: str) -> str:
    """``~/code/mysaas`` -> ``~/code/mysaas.deploying.json``."""
    return code_path.rstrip("/") + STATE_SUFFIX


def start_command(base: Command, record: dict) -> Command:
    """Write the start record, then print HEAD (the revision before): one round trip, one process (git)."""
    path = state_path(base.cwd or ".")
    folder = posixpath.dirname(path) or "."
    script = (f"[ -d {quote(folder)} ] || mkdir -p {quote(folder)}; "
              f"printf '%s\\n' {quote(json.dumps(record, sort_keys=True))} > {quote(path)}; "
              f"git -C {quote(base.cwd or '.')} rev-parse HEAD 2>/dev/null || true")
    return replace(base, script=script, cwd=None, prefix=None, env=(), subshell=False)


def step_record(base: Command, record: dict) -> str:
    """The line that rewrites the start record with the step that starts now: a built-in, no process.

    It becomes the ``record`` of the step's first command (one round trip for both: the session shell
    writes it just before the body), or, when a step does not start with a command, ``step_command``.
    A relative code path is anchored at ``~/``: the line may run in a session whose prefix moved it.
    """
    path = state_path(base.cwd or ".")
    if not path.startswith(("/", "~")):
        path = "~/" + path
    return f"printf '%s\\n' {quote(json.dumps(record, sort_keys=True))} > {quote(path)}"


def step_command(base: Command, record: dict) -> Command:
    """``step_record`` sent on its own, for a step whose first action is not a command (e.g. an upload)."""
    return replace(base, script=step_record(base, record), cwd=None, prefix=None, env=(), subshell=False)


def revision_command(base: Command) -> Command:
    """Read HEAD of the checkout, printing nothing when there is none yet."""
    return replace(base, script=f"git -C {quote(base.cwd or '.')} rev-parse HEAD 2>/dev/null || true", cwd=None)


def append_command(base: Command, entry: dict, log: str | None = None) -> Command:
    """Append ``entry`` to the log and print the current revision (one round trip, one process: git).

    ``base.cwd`` is the live code (``ROOT/current`` under the releases strategy); ``log`` the log file
    (default: next to ``base.cwd``).
    """
    path = log or log_path(base.cwd or ".")
    folder = posixpath.dirname(path) or "."
    line = json.dumps({**entry, "after": AFTER}, sort_keys=True)
    # The revision after the run is only known on the host: the shell splices it into the line.
    before, _, after = line.partition(json.dumps(AFTER))
    script = (f"a=$(git -C {quote(base.cwd or '.')} rev-parse HEAD 2>/dev/null); "
              f"[ -d {quote(folder)} ] || mkdir -p {quote(folder)}; "
              f"if [ -n \"$a\" ]; then v=\"\\\"$a\\\"\"; else v=null; fi; "
              f"printf '%s%s%s\\n' {quote(before)} \"$v\" {quote(after)} >> {quote(path)}; "
              f": > {quote(state_path(base.cwd or '.'))}; echo \"$a\"")
    return replace(base, script=script, cwd=None, prefix=None, env=())


def read_command(base: Command, lines: int = 20, log: str | None = None) -> Command:
    path = log or log_path(base.cwd or ".")
    script = (f"tail -n {int(lines)} {quote(path)} 2>/dev/null; echo '--pampa-head--'; "
              f"git -C {quote(base.cwd or '.')} log -1 --format='%H %s' 2>/dev/null || true; "
              f"echo '{STATE_MARK}'; cat {quote(state_path(base.cwd or '.'))} 2>/dev/null || true")
    return replace(base, script=script, cwd=None, prefix=None, env=())


def parse(text: str) -> tuple[list[dict], str | None, str]:
    """Output of ``read_command`` -> (entries, head revision, head subject)."""
    text = text.partition(STATE_MARK)[0]
    log_part, _, head = text.partition("--pampa-head--")
    entries = []
    for line in log_part.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    head = head.strip()
    rev, _, subject = head.partition(" ")
    return entries, (rev or None), subject


def parse_state(text: str) -> dict | None:
    """The start record in the output of ``read_command``: None when the last deploy finished."""
    raw = text.partition(STATE_MARK)[2].strip()
    if not raw:
        return None
    try:
        record = json.loads(raw.splitlines()[-1])
    except ValueError:
        return {"step": None, "unreadable": raw[:200]}
    return record if isinstance(record, dict) else {"step": None}
