"""The ``pampa`` command. ``main`` is the only place that maps errors to exit codes.

Each command's arguments and handler are declared together, in its own module; ``COMMANDS``
names those declarations once, in the order `pampa --help` shows them. Only the module of the
command given is imported: `pampa plan` does not pay for the SSH, server and agent modules.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback
import warnings

from .. import __version__
from ..errors import ConfigErrors, ExitCode, PampaError, PampaWarning, UsageError, exit_code_for, quiet_libraries
from .parser import Parser
from .parser import build_parser as _build

EPILOG = """examples:
  pampa plan production                 show every host's steps and commands, touch nothing
  pampa deploy production               deploy with a live view (plain lines in CI)
  pampa deploy production --roles newton --branch hotfix
  pampa deploy production --batch 25% --max-fail 2 --report deploy.json --junit deploy.xml
  pampa check production                will a deploy succeed? one line per problem, with its fix
  pampa pending production              what a deploy would bring: commits, migrations, gems
  pampa status production               what each host runs, drift, interrupted deploys
  pampa history production -n 10        the fleet's deploys, newest first, with their results
  pampa releases production --prune     releases on each host (strategy releases); prune to keep_releases
  pampa exec production --roles newton -- uptime     one command on many hosts, grouped per host
  pampa logs production --roles euler -f             each host's logs, prefixed by host, until Ctrl-C
  pampa run production restart_puma --roles euler    chosen steps with the lock, gate and reports
  pampa deploy production --skip migrate             leave a step out of one deploy
  pampa lock acquire production -m "db maintenance"  hold the stage until `pampa unlock`
  pampa rollback production --dry-run   show the rollback to the previous revision
  pampa demo                            a local fleet of real sshd hosts, deployed end to end
  pampa request production --wait       pull mode: the nodes' agents deploy; follow it like a deploy
  pampa help deploy                     every option of one command (also: pampa deploy --help)

exit codes: 0 ok, 1 deploy failed on some hosts, 2 config or usage error, 3 lock held,
            4 refused by a safety check, 130 interrupted (Ctrl-C), 141 output closed (| head),
            143 terminated (SIGTERM)
"""

#: Each command -> (the module of this package that declares it, its declaring function), in the order
#: `pampa --help` lists them.
COMMANDS = {
    "deploy": ("run", "declare_deploy"), "run": ("run", "declare_run"), "rollback": ("run", "declare_rollback"),
    "plan": ("inspect", "declare_plan"), "check": ("check", "declare"), "pending": ("pending", "declare"),
    "status": ("status", "declare"), "history": ("history", "declare"), "releases": ("releases", "declare"),
    "lock": ("lockcmd", "declare_lock"), "unlock": ("lockcmd", "declare_unlock"),
    "stages": ("inspect", "declare_stages"), "exec": ("exec", "declare"), "logs": ("logs", "declare"),
    "config": ("inspect", "declare_config"), "init": ("init", "declare"), "demo": ("demo", "declare"),
    "access-point": ("accesspoint", "declare"), "request": ("request", "declare"), "agent": ("agent", "declare"),
}


def declaration(name: str):
    """The function that declares command ``name``'s arguments and handler (its module imported now)."""
    module, function = COMMANDS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def build_parser(only: str | None = None) -> Parser:
    """The command line; with ``only``, just that command is declared (the others are on call, for the
    suggestions of an error message)."""
    names = [only] if only in COMMANDS else list(COMMANDS)
    parser = _build([declaration(n) for n in names], "Deploy a fleet of Pampa servers over SSH.", EPILOG, __version__)
    if len(names) == 1:
        parser.complete = lambda: [declaration(n)(parser.declare) for n in COMMANDS if n not in names]
    return parser


def command_word(argv: list[str]) -> str | None:
    """The command named in ``argv`` (the first word that is not a global option or its value)."""
    words = iter(argv)
    for word in words:
        if word == "--stages":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _parse(parser: Parser, argv: list[str]):
    """Parse; the words after a ``--`` are the command of ``pampa exec`` (never read as options)."""
    rest = None
    if "--" in argv:
        at = argv.index("--")
        argv, rest = argv[:at], argv[at + 1:]
    args = parser.parse_args(argv)
    if rest is not None:
        if args.command != "exec":
            raise UsageError(f"pampa {args.command or ''}: unexpected `--`; only `pampa exec` takes a command "
                             "after `--`".replace("  ", " "))
        args.argv = list(args.argv or []) + rest
    if args.command is None:
        raise UsageError("pampa: a command is required; see `pampa --help`")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run ``pampa``; returns the exit code (see ``errors.ExitCode``)."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    quiet_libraries(debug)
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = _parse(build_parser(only=command_word(argv)), argv)
        with warnings.catch_warnings():
            warnings.simplefilter("default", PampaWarning)  # each one once
            warnings.showwarning = _show_warning
            return args.handler(args)
    except ConfigErrors as e:
        for message in e.messages:
            print(f"pampa: error: {message}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return exit_code_for(e)
    except PampaError as e:
        text = e.message if e.message.startswith("pampa") else f"pampa: error: {e.message}"
        print(text, file=sys.stderr)
        if debug:
            traceback.print_exc()
        return exit_code_for(e)
    except KeyboardInterrupt:
        print("pampa: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError as e:
        # `pampa plan prod | head`: the reader has what it wanted; nothing more to say, and no
        # second error when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_code_for(e)
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, exit 70
        if debug:
            traceback.print_exc()
        else:
            print(f"pampa: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback; "
                  "please report it)", file=sys.stderr)
        return exit_code_for(e)


_python_show_warning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``pampa: warning: ...`` for pampa's own warnings (one line, no source location); others as Python shows them."""
    if issubclass(category, PampaWarning):
        print(f"pampa: warning: {message}", file=sys.stderr, flush=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


def entry() -> None:
    dump_stacks_on_usr1()
    sys.exit(main())


def dump_stacks_on_usr1() -> None:
    """``kill -USR1 PID`` prints every thread's stack to stderr and pampa goes on: how an operator (or a
    test that saw a run not end) finds where a stuck pampa waits, without killing it."""
    import faulthandler
    import signal
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
