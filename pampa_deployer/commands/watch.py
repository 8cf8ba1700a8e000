"""Commands that end on the host when pampa lets go of them.

Closing an SSH channel does not stop what runs behind it: without a terminal, sshd
sends no hang-up, and a ``tail -f`` or a long command keeps running on the host. A
*stoppable* command runs in a process group of its own; a watcher reads the
channel's stdin and, when it ends (pampa closed the channel on Ctrl-C or a timeout,
or the connection dropped), signals the whole group. Such a command needs a channel
of its own (not the shared shell session, whose commands read /dev/null).
"""
from __future__ import annotations

from ..shell import quote
from .command import Command


def stoppable(inner: Command) -> Command:
    """``inner`` (with its prefix, env and cwd) in its own process group, killed when stdin closes.

    The exit code is the inner command's; 143 when it was stopped.
    """
    script = (f"exec 3<&0 </dev/null; setsid \"${{SHELL:-/bin/sh}}\" -c {quote(inner.line())} & p=$!; "
              "{ cat <&3 >/dev/null 2>&1; kill -TERM -$p 2>/dev/null; } >/dev/null 2>&1 & w=$!; "
              "wait $p; rc=$?; kill $w 2>/dev/null; exit $rc")
    return Command(script=script, timeout=inner.timeout, redactor=inner.redactor)
