"""The per-host revision log: one JSON line per deploy, appended next to the code path."""
from __future__ import annotations

import json
import posixpath
from dataclasses import replace

from ..shell import quote
from .command import Command

SUFFIX = ".revisions.jsonl"
AFTER = "__PAMPA_AFTER__"


def log_path(code_path: str) -> str:
    """``~/code/mysaas`` -> ``~/code/mysaas.revisions.jsonl``."""
    return code_path.rstrip("/") + SUFFIX


def base(code_path: str) -> Command:
    """A Command carrying a host's code path, from which the revision-log commands are built."""
    return Command(script="true", cwd=code_path, timeout=30)


def revision_command(base: Command) -> Command:
    """Read HEAD of the checkout, printing nothing when there is none yet."""
    return replace(base, script=f"git -C {quote(base.cwd or '.')} rev-parse HEAD 2>/dev/null || true", cwd=None)


def append_command(base: Command, entry: dict) -> Command:
    """Append ``entry`` to the log and print the current revision (one round trip, one process: git)."""
    path = log_path(base.cwd or ".")
    folder = posixpath.dirname(path) or "."
    line = json.dumps({**entry, "after": AFTER}, sort_keys=True)
    # The revision after the run is only known on the host: the shell splices it into the line.
    before, _, after = line.partition(json.dumps(AFTER))
    script = (f"a=$(git -C {quote(base.cwd or '.')} rev-parse HEAD 2>/dev/null); "
              f"[ -d {quote(folder)} ] || mkdir -p {quote(folder)}; "
              f"if [ -n \"$a\" ]; then v=\"\\\"$a\\\"\"; else v=null; fi; "
              f"printf '%s%s%s\\n' {quote(before)} \"$v\" {quote(after)} >> {quote(path)}; echo \"$a\"")
    return replace(base, script=script, cwd=None, prefix=None, env=())


def read_command(base: Command, lines: int = 20) -> Command:
    path = log_path(base.cwd or ".")
    script = (f"tail -n {int(lines)} {quote(path)} 2>/dev/null; echo '--pampa-head--'; "
              f"git -C {quote(base.cwd or '.')} log -1 --format='%H %s' 2>/dev/null || true")
    return replace(base, script=script, cwd=None, prefix=None, env=())


def parse(text: str) -> tuple[list[dict], str | None, str]:
    """Output of ``read_command`` -> (entries, head revision, head subject)."""
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
