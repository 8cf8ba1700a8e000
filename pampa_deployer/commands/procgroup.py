"""Remote commands the engine can stop: each runs as the leader of its own process group.

``setsid -w`` starts the command's shell in a new session, so its pid is the group id
of everything it starts (unless a child detaches on purpose, as a daemon does). The
shell writes that id to a small file named by a per-command tag before running the
body, and the file is removed when the command ends. To stop the command, the
engine opens a fresh channel (the original one may be stuck in a write) and runs
``kill_command``: TERM to the whole group, then KILL after a grace period.
"""
from __future__ import annotations

import uuid

from ..shell import quote

#: The folder of the pgid files, expanded on the host.
PGID_DIR = '"${TMPDIR:-/tmp}"'


def new_tag() -> str:
    """A unique name for one command run (names its pgid file)."""
    return uuid.uuid4().hex[:16]


def pgid_file(tag: str) -> str:
    return f"{PGID_DIR}/pampa-{tag}.pgid"


def wrap(body: str, tag: str) -> str:
    """``body`` run in its own process group by the user's shell, its group id in ``pgid_file(tag)``."""
    f = pgid_file(tag)
    inner = f"echo $$ > {f} && {body}"
    return (f'setsid -w "${{SHELL:-/bin/sh}}" -c {quote(inner)}; '
            f"__pampa_rc=$?; rm -f {f}; exit $__pampa_rc")


def kill_command(tag: str, grace: float) -> str:
    """TERM the command's process group, KILL it after ``grace`` seconds; says what it did.

    Prints PAMPA-STOP-NONE when the command had already ended (no pgid file), PAMPA-STOP-TERM
    when TERM was enough, PAMPA-STOP-KILL when KILL was needed.
    """
    f = pgid_file(tag)
    steps = max(0, int(round(grace * 10)))
    return (f"f={f}; pg=$(cat \"$f\" 2>/dev/null); "
            f"if [ -z \"$pg\" ] || ! kill -TERM -\"$pg\" 2>/dev/null; then rm -f \"$f\"; echo PAMPA-STOP-NONE; exit 0; fi; "
            f"n=0; while kill -0 -\"$pg\" 2>/dev/null && [ $n -lt {steps} ]; do sleep 0.1; n=$((n+1)); done; "
            f"if kill -KILL -\"$pg\" 2>/dev/null; then echo PAMPA-STOP-KILL; else echo PAMPA-STOP-TERM; fi; "
            f"rm -f \"$f\"")
