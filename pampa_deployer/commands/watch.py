"""Commands that end on the host when pampa lets go of them.

Closing an SSH channel does not stop what runs behind it: without a terminal, sshd
sends no hang-up, and a ``tail -f`` or a long command keeps running on the host. A
*stoppable* command has a watcher that reads the channel's stdin and, when it ends
(pampa closed the channel on Ctrl-C or a timeout, or the connection dropped), signals
the command's whole process group. Such a command needs a channel
of its own (not the shared shell session, whose commands read /dev/null).
"""
from __future__ import annotations

from ..shell import quote
from .command import Command


def stoppable(inner: Command) -> Command:
    """``inner`` (with its prefix, env and cwd) killed with its whole process group when stdin closes.

    The group is the one the command already runs in: the engine's own wrapper
    (commands/procgroup.py) makes every command a group leader, and sshd makes each channel's
    shell one. A second ``setsid`` here would put the command out of reach of the engine's stop
    (it signals the outer group), so the watcher signals its own group (``kill 0``) instead.
    The exit code is the inner command's.
    """
    script = ("exec 3<&0 </dev/null; { cat <&3 >/dev/null 2>&1; kill -TERM 0; } >/dev/null 2>&1 & w=$!; "
              f"\"${{SHELL:-/bin/sh}}\" -c {quote(inner.line())}; rc=$?; kill $w 2>/dev/null; exit $rc")
    return Command(script=script, timeout=inner.timeout, redactor=inner.redactor)
