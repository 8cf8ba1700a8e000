"""Remote commands the engine can stop: each runs as the leader of its own process group.

The group's id is written to a small *pgid file* before the body runs; to stop the command, the
engine opens a fresh channel (the original one may be stuck in a write) and runs ``kill_command``:
TERM to the whole group, then KILL after a grace period. A child that detaches on purpose (a
daemon calling setsid) leaves the group, as it should. No construction starts a process of its own
on the command's path but the subshell a session command runs in anyway:

- **a channel per command** (``on_channel``): sshd calls ``setsid()`` for the child of every exec
  channel without a terminal, so the login shell running the line already leads its own group:
  ``echo $$`` is the group id. The body runs in a subshell (a fork, no exec) so that an ``exit`` in it
  still lets the shell remove the pgid file and pass on the body's exit status. Its stdin stays the
  channel's: a ``watch.stoppable`` command reads it to know when pampa lets go;
- **the shell session** (``session_setup`` once, ``in_group`` per command): the session's shell leads the
  group sshd made, so a command's subshell shares it. Under bash the session turns job control on
  (``set -m``): each foreground subshell then gets a group of its own, and ``$BASHPID`` is its id.
  Other shells (dash ignores ``set -m`` without a terminal) start the body under ``setsid -w``. The
  session keeps one pgid file, emptied after each command by the session shell (a built-in) and
  removed when the session's shell exits.
"""
from __future__ import annotations

import uuid

from ..shell import quote

#: The folder of the pgid files, expanded on the host.
PGID_DIR = '"${TMPDIR:-/tmp}"'


def new_tag() -> str:
    """A unique name for one command run or one session (names its pgid file)."""
    return uuid.uuid4().hex[:16]


def pgid_file(tag: str) -> str:
    return f"{PGID_DIR}/pampa-{tag}.pgid"


def on_channel(line: str, tag: str) -> str:
    """``line`` as an exec channel's command: the channel's shell leads the group (sshd's setsid)."""
    f = pgid_file(tag)
    return f"echo $$ > {f} || exit; ( {line}\n); __pampa_rc=$?; rm -f {f}; exit $__pampa_rc"


def session_setup(tag: str, hello: str) -> str:
    """The first line a shell session runs: job control under bash, the session's files (its commands'
    pgid files ``pampa-TAG-N.pgid``, its stop file) removed on exit.

    Prints ``HELLO bash`` or ``HELLO sh`` so the engine knows which ``in_group`` form the shell takes.
    """
    return (f"trap {quote(f'rm -f {PGID_DIR}/pampa-{tag}.* {PGID_DIR}/pampa-{tag}-*.pgid')} EXIT; "
            f"case ${{BASH_VERSION-}} in ?*) set -m; echo '{hello} bash';; *) echo '{hello} sh';; esac")


def in_group(body: str, tag: str, kind: str | None) -> str:
    """``body`` in a subshell of the session leading its own process group, its id in the pgid file.

    ``kind`` None (the session has not yet said which shell it runs: a command sent before its hello
    came back) chooses the form on the host.
    """
    f = pgid_file(tag)
    bash = f"( echo $BASHPID > {f} || exit\n{body}\n) </dev/null"
    inner = f"echo $$ > {f} || exit\n{body}"
    sh = f'( exec setsid -w "${{SHELL:-/bin/sh}}" -c {quote(inner)} ) </dev/null'
    if kind is None:
        return f'if [ -n "${{BASH_VERSION-}}" ]; then {bash}\nelse {sh}\nfi'
    return bash if kind == "bash" else sh


def emptied(tag: str) -> str:
    """Run by the session shell after each command: the group is gone, a stop now finds nothing."""
    return f"printf '' > {pgid_file(tag)}"


def kill_command(tag: str, grace: float) -> str:
    """TERM the command's process group, KILL it after ``grace`` seconds; says what it did.

    Prints PAMPA-STOP-NONE when the command had already ended (no pgid file, or an empty one),
    PAMPA-STOP-TERM when TERM was enough, PAMPA-STOP-KILL when KILL was needed.
    """
    f = pgid_file(tag)
    steps = max(0, int(round(grace * 10)))
    return (f"f={f}; pg=$(cat \"$f\" 2>/dev/null); "
            f"if [ -z \"$pg\" ] || ! kill -TERM -\"$pg\" 2>/dev/null; then rm -f \"$f\"; echo PAMPA-STOP-NONE; exit 0; fi; "
            f"n=0; while kill -0 -\"$pg\" 2>/dev/null && [ $n -lt {steps} ]; do sleep 0.1; n=$((n+1)); done; "
            f"if kill -KILL -\"$pg\" 2>/dev/null; then echo PAMPA-STOP-KILL; else echo PAMPA-STOP-TERM; fi; "
            f"rm -f \"$f\"")
