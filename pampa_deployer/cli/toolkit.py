"""The operator's everyday commands beside ``deploy``: their arguments, in one place.

Kept out of ``cli/__init__.py`` so the main parser only lists them.
"""
from __future__ import annotations


def add_commands(cmd, csv) -> None:
    """Add ``exec`` and ``logs`` to the parser; ``cmd(name, help, example)`` makes a subparser."""
    p = cmd("exec", "run one command on many hosts at once: output grouped per host, per-host exit codes",
            "pampa exec production --roles newton -- 'tail -n 3 log/worker.log'\n"
            "  pampa exec production --json -- git rev-parse HEAD")
    p.add_argument("stage")
    p.add_argument("argv", nargs="*", metavar="-- COMMAND",
                   help="the command, run in each host's code path with the stage's prefix and env")
    p.add_argument("--roles", type=csv, help="only hosts of these roles, comma-separated")
    p.add_argument("--hosts", type=csv, help="only these hosts (names or shell globs), comma-separated")
    p.add_argument("--parallel", type=int, help="hosts at once (default: stage `parallel`)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="stop the command on a host after this long (it fails with exit 124)")
    p.add_argument("--json", action="store_true", help="print every host's exit code and output as JSON")
    p.add_argument("--accept-new-host-keys", action="store_true")

    p = cmd("logs", "the last lines of each host's logs (journald units, or the stage's log files), "
                    "prefixed by host; -f follows until Ctrl-C",
            "pampa logs production --roles newton -n 50 -f")
    p.add_argument("stage")
    p.add_argument("--roles", type=csv, help="only hosts of these roles, comma-separated")
    p.add_argument("--hosts", type=csv, help="only these hosts (names or shell globs), comma-separated")
    p.add_argument("--unit", "-u", action="append", metavar="UNIT",
                   help="only this unit (repeatable); default: the units the host's roles restart")
    p.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="lines per log (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    p.add_argument("--accept-new-host-keys", action="store_true")


def dispatch(args) -> int:
    if args.command == "exec":
        from .exec import exec_
        return exec_(args)
    from .logs import logs
    return logs(args)
