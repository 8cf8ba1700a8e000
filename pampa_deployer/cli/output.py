"""Choosing how to show a run: the rich live view at a TTY, plain lines in CI (or with --ci)."""
from __future__ import annotations

import os
import sys

from rich.console import Console


def is_ci(args) -> bool:
    """CI mode: --ci, a CI environment variable, or stdout not being a terminal."""
    return bool(getattr(args, "ci", False) or os.environ.get("CI") or not sys.stdout.isatty())


def console(args) -> Console:
    if is_ci(args):
        # soft_wrap: a line in a pipe or a CI log is never broken in two (grep finds it whole).
        return Console(file=sys.stdout, force_terminal=False, no_color=True, highlight=False, width=160,
                       emoji=False, markup=False, soft_wrap=True)
    # markup=False: host names, roles like [kepler] and remote output are never read as rich markup.
    return Console(highlight=False, markup=False)


def err_console() -> Console:
    return Console(file=sys.stderr, highlight=False, markup=False)


def again(args, rest: str) -> str:
    """A pampa command to type next, with this run's ``--stages DIR`` when it is not the default one:
    ``pampa --stages /srv/stages request production --follow 12``."""
    default = os.environ.get("PAMPA_STAGES", "stages")
    stages = getattr(args, "stages", default) or default
    where = "" if os.path.normpath(stages) == os.path.normpath(default) else f"--stages {stages} "
    return f"pampa {where}{rest}"
