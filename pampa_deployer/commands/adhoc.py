"""``pampa exec``: the operator's command, run where and how a deploy step runs."""
from __future__ import annotations

from ..inventory.model import Host
from ..redact import Redactor
from .command import Command
from .watch import stoppable


def adhoc_script(argv: list[str]) -> str:
    """The words after ``--``, joined with spaces the way ``ssh host CMD...`` joins them.

    One word is sent as written, so ``pampa exec prod -- 'cd log && ls | wc -l'`` keeps its
    pipes; several words are joined, so ``pampa exec prod -- ls -la`` works too. It is the
    operator's own command line: like ``ssh``, pampa does not quote it.
    """
    return " ".join(argv)


def adhoc_command(host: Host, argv: list[str], redactor: Redactor, timeout: float | None = None) -> Command:
    """The command in the host's code path with its prefix and env (as a deploy step), stoppable."""
    inner = Command(script=adhoc_script(argv), cwd=host.path, prefix=host.prefix,
                    env=tuple(sorted(host.env.items())), timeout=timeout, redactor=redactor)
    return stoppable(inner)
