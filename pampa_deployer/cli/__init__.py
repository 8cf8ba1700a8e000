"""The ``pampa`` command. ``main`` is the only place that maps errors to exit codes."""
from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import traceback

from .. import __version__
from . import types
from ..errors import ConfigErrors, ExitCode, PampaError, UsageError, exit_code_for, quiet_libraries

EPILOG = """examples:
  pampa plan production                 show every host's steps and commands, touch nothing
  pampa deploy production               deploy with a live view (plain lines in CI)
  pampa deploy production --roles newton --branch hotfix
  pampa deploy production --batch 25% --max-fail 2 --report deploy.json --junit deploy.xml
  pampa check production                will a deploy succeed? one line per problem, with its fix
  pampa status production               what each host runs, drift, interrupted deploys
  pampa exec production --roles newton -- uptime     one command on many hosts, grouped per host
  pampa logs production --roles euler -f             each host's logs, prefixed by host, until Ctrl-C
  pampa run production restart_puma --roles euler    chosen steps with the lock, gate and reports
  pampa deploy production --skip migrate             leave a step out of one deploy
  pampa lock acquire production -m "db maintenance"  hold the stage until `pampa unlock`
  pampa rollback production --dry-run   show the rollback to the previous revision
  pampa demo                            a local fleet of real sshd hosts, deployed end to end
  pampa request production --wait       pull mode: the nodes' agents deploy; follow it like a deploy

exit codes: 0 ok, 1 deploy failed on some hosts, 2 config or usage error, 3 lock held,
            4 refused by a safety check, 130 interrupted (Ctrl-C), 141 output closed (| head),
            143 terminated (SIGTERM)
"""


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) and suggests close matches."""

    def error(self, message: str):  # noqa: D401 - argparse API
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2))
            close = difflib.get_close_matches(m.group(1), choices, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; choose from {', '.join(choices)}"
            raise UsageError(f"{self.prog}: unknown command '{m.group(1)}'{hint}")
        m = re.search(r"unrecognized arguments: (.*)", message)
        if m:
            raise UsageError(self._unknown_option(m.group(1).split()[0]))
        raise UsageError(f"{self.prog}: {message}; see `{self.prog} --help`")

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)  # to name the command in an error
        return super().parse_known_args(args, namespace)

    def _unknown_option(self, word: str) -> str:
        """Suggest among the options of the command given; name the commands that take it if it is theirs."""
        commands = {}
        for sub in self._subparsers._group_actions if self._subparsers else []:
            commands.update(getattr(sub, "choices", {}))
        used = next((w for w in getattr(self, "_argv", []) if w in commands), None)
        options = [o for a in self._actions for o in a.option_strings]
        if used is not None:
            options += [o for a in commands[used]._actions for o in a.option_strings]
        prog = f"{self.prog} {used}" if used else self.prog
        owners = [name for name, p in commands.items() if name != used
                  and any(word in a.option_strings for a in p._actions)]
        if owners and word not in options:
            names = [f"`{self.prog} {name}`" for name in owners]
            takes = f"{names[0]} takes it" if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]} take it"
            return f"{prog}: unknown option '{word}' ({takes}); see `{prog} --help`"
        close = difflib.get_close_matches(word, options, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; see `{prog} --help`"
        return f"{prog}: unknown option '{word}'{hint}"


def _run_options(p: argparse.ArgumentParser, kind: str = "deploy") -> None:
    p.add_argument("--roles", type=_csv, help="only hosts (and steps) of these roles, comma-separated")
    p.add_argument("--hosts", type=_csv, help="only these hosts (names or shell globs), comma-separated")
    if kind == "deploy":
        p.add_argument("--branch", help="deploy this branch instead of the stage's")
        p.add_argument("--dry-run", action="store_true", help="print what would run on each host; connect to nothing")
    else:  # a rollback goes to a revision, never to a branch; its dry run must read the hosts' revisions
        p.set_defaults(branch=None)
        p.add_argument("--dry-run", action="store_true",
                       help="read the target revision from the hosts (read-only) and print what would run; "
                            "change nothing")
    p.add_argument("--parallel", type=types.positive_int, help="hosts deployed at once (default: stage `parallel`, 32)")
    p.add_argument("--batch", help="rolling batches: N hosts or N%% at a time")
    p.add_argument("--batch-wait", type=types.non_negative, default=0.0, metavar="SECONDS", help="pause between batches")
    p.add_argument("--max-fail", metavar="N|%", help="stop starting new hosts after N (or N%%) failures")
    p.add_argument("--message", "-m", help="note recorded in the lock and the revision logs")
    p.add_argument("--lock-wait", type=types.non_negative, default=0.0, metavar="SECONDS",
                   help="wait this long for a held lock instead of failing at once")
    p.add_argument("--no-lock", action="store_true", help="do not take the stage lock (dangerous)")
    p.add_argument("--access-point-optional", action="store_true",
                   help="emergency: if the access point cannot be reached, go on with a loud warning and list "
                        "what was not reported (access_point.optional)")
    p.add_argument("--grace", type=types.non_negative, default=30.0, metavar="SECONDS",
                   help="after Ctrl-C/SIGTERM, time running commands get to finish (default 30)")
    p.add_argument("--accept-new-host-keys", action="store_true",
                   help="trust and save unknown host keys (changed keys are always refused)")
    p.add_argument("--report", metavar="FILE.json", help="write the JSON report here too")
    p.add_argument("--junit", metavar="FILE.xml", help="write a JUnit XML report, one test case per host")
    p.add_argument("-v", "--verbose", action="store_true", help="stream every output line, prefixed by host")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> Parser:
    """The whole command line: global options, then each command's arguments, declared by its own
    function in ``COMMANDS`` (the order of `pampa --help`)."""
    parser = Parser(prog="pampa", description="Deploy a fleet of Pampa servers over SSH.", epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"pampa {__version__}")
    parser.add_argument("--stages", default=os.environ.get("PAMPA_STAGES", "stages"), metavar="DIR",
                        help="folder of stage files (default: ./stages)")
    parser.add_argument("--ci", action="store_true", default=bool(os.environ.get("CI")),
                        help="plain line output, no prompts (default when CI is set or there is no TTY)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    # The global options are accepted after the command too (`pampa deploy prod --ci`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stages", default=argparse.SUPPRESS, metavar="DIR", help="folder of stage files")
    common.add_argument("--ci", action="store_true", default=argparse.SUPPRESS, help="plain line output")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    def cmd(name: str, help_: str, example: str):
        return sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                              formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
                              parents=[common])

    for declare in COMMANDS:
        declare(cmd)
    return parser


def _deploy_command(cmd) -> None:
    """The arguments of ``pampa deploy``."""
    p = cmd("deploy", "deploy a stage: every host, in parallel, kepler gating the rest",
            "pampa deploy production --roles newton --report deploy.json")
    p.add_argument("stage")
    p.add_argument("--skip", type=_csv, action="extend", metavar="STEP[,STEP]",
                   help="leave these steps out of this deploy (repeatable)")
    _run_options(p)


def _run_command(cmd) -> None:
    """The arguments of ``pampa run``."""
    p = cmd("run", "run chosen steps fleet-wide with the lock, gate and reports of a deploy",
            "pampa run production restart_puma --roles euler")
    p.add_argument("stage")
    p.add_argument("steps", nargs="+", metavar="STEP", help="steps to run, in the stage's order")
    _run_options(p)


def _rollback_command(cmd) -> None:
    """The arguments of ``pampa rollback``."""
    p = cmd("rollback", "roll every host back to one revision (default: the one before the current)",
            "pampa rollback production --to 3f2a9c1 --dry-run")
    p.add_argument("stage")
    p.add_argument("--to", metavar="REV", help="target revision (must be present on every targeted host)")
    _run_options(p, "rollback")


def _plan_command(cmd) -> None:
    """The arguments of ``pampa plan``."""
    p = cmd("plan", "show the phases, the gate and each host's resolved commands", "pampa plan production")
    p.add_argument("stage")
    p.add_argument("--roles", type=_csv)
    p.add_argument("--hosts", type=_csv)
    p.add_argument("--branch")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def _check_command(cmd) -> None:
    """The arguments of ``pampa check``."""
    p = cmd("check", "will a deploy succeed? repository and branch from each host, code path, sudo, disk, "
                     "secret folders, commands; one line per problem with its fix",
            "pampa check production --json   # exit 0 ready, 4 a host is not ready")
    p.add_argument("stage")
    p.add_argument("--hosts", type=_csv)
    p.add_argument("--roles", type=_csv)
    p.add_argument("--branch", help="check this branch instead of the stage's")
    p.add_argument("--json", action="store_true", help="print every host's problems and facts as JSON")
    p.add_argument("--accept-new-host-keys", action="store_true")


def _status_command(cmd) -> None:
    """The arguments of ``pampa status``."""
    p = cmd("status", "what each host runs, its last deploy, drift and interrupted deploys",
            "pampa status production")
    p.add_argument("stage")
    p.add_argument("--hosts", type=_csv)
    p.add_argument("--roles", type=_csv)
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def _lock_command(cmd) -> None:
    """The arguments of ``pampa lock``."""
    p = cmd("lock", "inspect the stage lock, or hold it for maintenance until `pampa unlock`",
            "pampa lock acquire production -m 'db maintenance until 18:00'")
    p.add_argument("action", choices=["status", "acquire"])
    p.add_argument("stage")
    p.add_argument("--message", "-m", help="acquire: why; shown to every deploy refused meanwhile")


def _unlock_command(cmd) -> None:
    """The arguments of ``pampa unlock``."""
    p = cmd("unlock", "remove a stage lock by hand (recorded on the lock host)",
            "pampa unlock production -m 'deploy host died'")
    p.add_argument("stage")
    p.add_argument("--message", "-m", help="why; recorded with who did it")
    p.add_argument("--force", action="store_true",
                   help="remove the lock even though its holder looks alive (its lease is being renewed)")


def _stages_command(cmd) -> None:
    """The arguments of ``pampa stages``."""
    p = cmd("stages", "list the stages", "pampa stages")
    p.add_argument("--json", action="store_true", help="print the list as JSON")


def _toolkit_commands(cmd) -> None:
    """``exec`` and ``logs``: declared with their code, in ``cli/toolkit.py``."""
    from .toolkit import add_commands
    add_commands(cmd, _csv)


def _config_command(cmd) -> None:
    """The arguments of ``pampa config``."""
    p = cmd("config", "print a stage's merged configuration (secrets masked) and where each value came from",
            "pampa config production")
    p.add_argument("stage")
    p.add_argument("--json", action="store_true", help="print the settings as JSON")


def _init_command(cmd) -> None:
    """The arguments of ``pampa init``."""
    p = cmd("init", "scaffold stages/ for a new app (asks nothing without a TTY)",
            "pampa init --app mysaas --repo git@github.com:acme/mysaas.git")
    p.add_argument("--app", help="application name")
    p.add_argument("--repo", help="git URL of the app")
    p.add_argument("--force", action="store_true", help="overwrite existing files")


def _demo_command(cmd) -> None:
    """The arguments of ``pampa demo``."""
    p = cmd("demo", "run a real deploy to a local fleet of sshd hosts (root, Debian)", "pampa demo; pampa demo down")
    p.add_argument("action", nargs="?", default="up", choices=["up", "down"])
    p.add_argument("--dir", default="/tmp/pampa-demo", help="where the demo fleet lives (default /tmp/pampa-demo)")
    p.add_argument("--per-role", type=types.positive_int, default=1, help="hosts per role (default 1)")
    p.add_argument("--subnet", default="127.0.0", type=types.subnet,
                   help="loopback subnet: hosts on SUBNET.11..., the access point on SUBNET.1 (default 127.0.0)")


def _access_point_command(cmd) -> None:
    """The arguments of ``pampa access-point``."""
    p = cmd("access-point", "run the reference access point (JSON over HTTP, SQLite or PostgreSQL), or issue node tokens",
            "PAMPA_AP_KEY=s3cret pampa access-point serve --port 8750; pampa access-point token production --out tokens/")
    p.add_argument("action", choices=["serve", "token"])
    p.add_argument("stage", nargs="?", help="token: the stage whose nodes get tokens")
    p.add_argument("nodes", nargs="*", help="token: these nodes only (default: every host of the stage)")
    p.add_argument("--out", metavar="DIR", help="token: write STAGE-NODE.token files (mode 0600) here instead of printing")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=types.listen_port, default=8750, help="port to listen on (0: any free port)")
    p.add_argument("--db", "--database", dest="db", default=None, metavar="FILE|URL",
                   help="SQLite file, or postgresql://USER@HOST/DB to share state with other access point "
                        "processes (default $PAMPA_AP_DATABASE, else ./access-point.sqlite3)")
    p.add_argument("--api-key", default=None, help="API key (default: $PAMPA_AP_KEY)")
    p.add_argument("--stall-after", type=float, default=60.0, metavar="SECONDS",
                   help="a node silent this long is shown as stalled (default 60)")


def _request_command(cmd) -> None:
    """The arguments of ``pampa request``."""
    p = cmd("request", "pull mode: register a deploy request at the access point; nodes' agents deploy it",
            "pampa request production --branch hotfix -m 'fix login' --wait")
    p.add_argument("stage")
    p.add_argument("--branch", help="deploy this branch instead of the stage's")
    p.add_argument("--message", "-m", help="why; shown to every node and in the request")
    p.add_argument("--wait", action="store_true", help="follow the request to the end, like `pampa deploy`")
    p.add_argument("--follow", type=int, metavar="ID", help="follow an existing request instead of creating one")
    p.add_argument("--rollback", action="store_true",
                   help="request a rollback: every node goes back to one revision (the previous one, or --to)")
    p.add_argument("--to", metavar="REV", help="with --rollback: the revision to go back to")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop following after this long (exit 1)")
    p.add_argument("--report", metavar="FILE.json", help="write the JSON report here too")
    p.add_argument("--junit", metavar="FILE.xml", help="write a JUnit XML report, one test case per node")
    p.add_argument("-v", "--verbose", action="store_true", help="stream every output line the nodes send")
    p.set_defaults(dry_run=False)


def _agent_command(cmd) -> None:
    """The arguments of ``pampa agent``."""
    p = cmd("agent", "pull mode: run this node's agent (`pampa agent STAGE`), or write its systemd unit "
            "(`pampa agent install STAGE`)", "pampa agent install production --node kepler-1")
    p.add_argument("words", nargs="+", metavar="[install] STAGE")
    p.add_argument("--node", help="this node's host name in the stage (default: this machine's host name)")
    p.add_argument("--token-file", metavar="FILE",
                   help="node token, mode 0600 (default ~/.pampa/agent/STAGE-NODE.token, or $PAMPA_AGENT_TOKEN)")
    p.add_argument("--state-dir", metavar="DIR", help="lock and journal folder (default ~/.pampa/agent)")
    p.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="after SIGTERM/Ctrl-C, time running commands get to finish (default 30)")
    p.add_argument("--unit-dir", default="/etc/systemd/system", help="install: where the unit goes")
    p.add_argument("--print", action="store_true", help="install: print the unit instead of writing it")
    


#: Each command's declaration, in the order `pampa --help` lists them.
COMMANDS = (
    _deploy_command, _run_command, _rollback_command, _plan_command, _check_command, _status_command,
    _lock_command, _unlock_command, _stages_command, _toolkit_commands, _config_command, _init_command,
    _demo_command, _access_point_command, _request_command, _agent_command,
)


def _dispatch(args) -> int:
    if args.command in ("deploy", "rollback", "run"):
        from .run import run
        return run(args)
    if args.command in ("plan", "stages", "config"):
        from . import inspect
        return getattr(inspect, args.command)(args)
    if args.command == "check":
        from .check import check
        return check(args)
    if args.command == "status":
        from .status import status
        return status(args)
    if args.command in ("lock", "unlock"):
        from . import lockcmd
        if args.command == "unlock":
            return lockcmd.unlock(args)
        return lockcmd.lock_acquire(args) if args.action == "acquire" else lockcmd.lock_status(args)
    if args.command in ("exec", "logs"):
        from .toolkit import dispatch
        return dispatch(args)
    if args.command == "init":
        from .init import init
        return init(args)
    if args.command == "demo":
        from .demo import demo
        return demo(args)
    if args.command == "access-point":
        if args.action == "token":
            from .agent import token
            return token(args)
        from ..accesspoint.server import serve_cli
        return serve_cli(args)
    if args.command == "request":
        from .request import request
        return request(args)
    if args.command == "agent":
        from .agent import agent
        return agent(args)
    raise UsageError("pampa: a command is required; see `pampa --help`")


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
    return args


def main(argv: list[str] | None = None) -> int:
    """Run ``pampa``; returns the exit code (see ``errors.ExitCode``)."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    quiet_libraries(debug)
    try:
        args = _parse(build_parser(), list(sys.argv[1:] if argv is None else argv))
        return _dispatch(args)
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
