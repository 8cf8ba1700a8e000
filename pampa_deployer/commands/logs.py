"""``pampa logs``: which logs a host has, and the command that prints (or follows) them.

By default the logs are the journald units the host's roles restart (``units.puma`` for a
role whose sequence has ``restart_puma``, and so on); a stage with ``logs.files`` names log
files instead, one per unit (``{unit}`` in the path).
"""
from __future__ import annotations

import posixpath

from ..inventory.model import Host, Stage
from ..shell import fill_plain, quote
from .command import Command
from .watch import stoppable

#: Restart step -> the ``units`` group it restarts.
UNIT_GROUPS = {"restart_puma": "puma", "restart_processes": "processes", "restart_workers": "workers"}


def host_units(stage: Stage, host: Host, variables: dict, roles: tuple[str, ...] | None = None) -> list[str]:
    """The units the host's roles restart during a deploy, names filled with the host's template ``variables``
    (``{app}_worker`` -> ``shop_worker``)."""
    steps = {s for r in (roles or host.roles) for s in stage.roles[r].sequence}
    found: list[str] = []
    for step, group in UNIT_GROUPS.items():
        if step in steps:
            for template in getattr(stage.units, group) or []:
                name = fill_plain(str(template), variables)
                if name not in found:
                    found.append(name)
    return found


def log_files(stage: Stage, host: Host, variables: dict, units: list[str]) -> list[str]:
    """``logs.files`` filled for each unit; relative paths are inside the code path."""
    files: list[str] = []
    for template in stage.logs.files or []:
        for unit in units if "{unit}" in str(template) else [None]:
            path = fill_plain(str(template), {**variables, "unit": unit or ""})
            if not (path.startswith("/") or path.startswith("~")):
                path = posixpath.join(host.path, path)
            if path not in files:
                files.append(path)
    return files


def journal_command(units: list[str], lines: int, follow: bool) -> Command:
    script = "journalctl --no-pager --output=short-iso " + f"-n {int(lines)} " + \
        " ".join(f"-u {quote(u)}" for u in units) + (" -f" if follow else "")
    return _finish(Command(script=script), follow)


def tail_command(files: list[str], lines: int, follow: bool) -> Command:
    script = f"tail -n {int(lines)} " + ("-F " if follow else "") + " ".join(quote(f) for f in files)
    return _finish(Command(script=script), follow)


def _finish(command: Command, follow: bool) -> Command:
    # Following never ends by itself: it must stop on the host when pampa lets go (Ctrl-C).
    return stoppable(command) if follow else Command(script=command.script, timeout=60)


def log_command(stage: Stage, host: Host, variables: dict, units: list[str], lines: int,
                follow: bool) -> Command | None:
    """The command for this host, or None when it has no log to show."""
    if stage.logs.files:
        files = log_files(stage, host, variables, units)
        return tail_command(files, lines, follow) if files else None
    return journal_command(units, lines, follow) if units else None
