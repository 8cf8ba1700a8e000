"""The ``pampa`` command line's grammar: the parser, the global options, and the shared option groups.

Each command module declares its own arguments and handler (``declare_*(cmd)`` with
``set_defaults(handler=...)``); ``cli/__init__.py`` lists them once, in the order of `pampa --help`.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
import sys

from ..errors import UsageError
from . import types


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) and suggests close matches.

    It remembers its own option strings and its commands as they are declared, so the
    suggestions never read argparse's private attributes.
    """

    def __init__(self, *args, **kwargs):
        self.options: list[str] = []  # before argparse's own __init__, which adds -h
        self.commands: dict[str, "Parser"] = {}
        self.complete = lambda: None  # declares the commands left out of a one-command parser (error messages)
        self.declare = None  # cmd(name, help, example): how a declaration adds its command
        #: A word a user may try as a choice, and where the thing they want is (`lock release` -> unlock).
        self.choice_hints: dict[str, str] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *names, **kwargs):
        self.options.extend(n for n in names if n.startswith("-"))
        return super().add_argument(*names, **kwargs)

    def error(self, message: str):
        m = re.search(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            what, word = ("command" if m.group(1) == "COMMAND" else m.group(1)), m.group(2)
            choices = re.findall(r"'([^']*)'", m.group(3))
            close = difflib.get_close_matches(word, choices, n=1)
            hint = (f"; {self.choice_hints[word]}" if word in self.choice_hints else
                    f"; did you mean '{close[0]}'?" if close else f"; choose from {', '.join(choices)}")
            raise UsageError(f"{self.prog}: unknown {what} '{word}'{hint}")
        m = re.search(r"unrecognized arguments: (.*)", message)
        if m:
            word = m.group(1).split()[0]
            if not word.startswith("-"):  # `pampa deploy production extra`: a word too many, not an option
                prog = self._used_prog()
                raise UsageError(f"{prog}: unexpected argument '{word}'; see `{prog} --help`")
            raise UsageError(self._unknown_option(word))
        raise UsageError(f"{self.prog}: {message}; see `{self.prog} --help`")

    def _used_prog(self) -> str:
        used = next((w for w in getattr(self, "_argv", []) if w in self.commands), None)
        return f"{self.prog} {used}" if used else self.prog

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)  # to name the command in an error
        return super().parse_known_args(args, namespace)

    def _unknown_option(self, word: str) -> str:
        """Suggest among the options of the command given; name the commands that take it if it is theirs."""
        self.complete()
        used = next((w for w in getattr(self, "_argv", []) if w in self.commands), None)
        options = list(self.options) + (self.commands[used].options if used is not None else [])
        prog = f"{self.prog} {used}" if used else self.prog
        owners = [name for name, p in self.commands.items() if name != used and word in p.options]
        if owners and word not in options:
            names = [f"`{self.prog} {name}`" for name in owners]
            takes = f"{names[0]} takes it" if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]} take it"
            return f"{prog}: unknown option '{word}' ({takes}); see `{prog} --help`"
        close = difflib.get_close_matches(word, options, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; see `{prog} --help`"
        return f"{prog}: unknown option '{word}'{hint}"


def csv(text: str) -> list[str]:
    """``a,b, c`` -> ``["a", "b", "c"]`` (the form of --roles, --hosts, --skip)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def add_global_options(p: Parser, after_command: bool = False) -> None:
    """--stages, --ci and --debug; accepted after the command too (`pampa deploy prod --ci`)."""
    keep = {"default": argparse.SUPPRESS} if after_command else {}
    p.add_argument("--stages", metavar="DIR", help="folder of stage files (default: ./stages)",
                   **(keep or {"default": os.environ.get("PAMPA_STAGES", "stages")}))
    p.add_argument("--ci", action="store_true", help="plain line output, no prompts (default when CI is set or "
                   "there is no TTY)", **(keep or {"default": bool(os.environ.get("CI"))}))
    p.add_argument("--debug", action="store_true", help="show tracebacks", **keep)


def add_selection(p: Parser) -> None:
    """--roles and --hosts, as every command that works on a part of the fleet takes them."""
    p.add_argument("--roles", type=csv, help="only hosts of these roles, comma-separated")
    p.add_argument("--hosts", type=csv, help="only these hosts (names or shell globs), comma-separated")


def add_run_options(p: Parser, kind: str = "deploy") -> None:
    """The options of a run (deploy, run, rollback): selection, concurrency, safety valves, reports."""
    p.add_argument("--roles", type=csv, help="only hosts (and steps) of these roles, comma-separated")
    p.add_argument("--hosts", type=csv, help="only these hosts (names or shell globs), comma-separated")
    if kind == "deploy":
        p.add_argument("--branch", help="deploy this branch instead of the stage's")
        p.add_argument("--dry-run", action="store_true", help="print what would run on each host; connect to nothing")
    else:  # a rollback goes to a revision, never to a branch; its dry run must read the hosts' revisions
        p.set_defaults(branch=None)
        p.add_argument("--dry-run", action="store_true",
                       help="read the target revision from the hosts (read-only) and print what would run; "
                            "change nothing")
    p.add_argument("--parallel", type=types.positive_int, help="hosts deployed at once (default: stage `parallel`, 32)")
    p.add_argument("--batch", type=types.count, help="rolling batches: N hosts or N%% at a time")
    p.add_argument("--batch-wait", type=types.non_negative, default=0.0, metavar="SECONDS", help="pause between batches")
    p.add_argument("--max-fail", type=types.count, metavar="N|%",
                   help="stop starting new hosts after N (or N%%) failures")
    p.add_argument("--message", "-m", help="note recorded in the lock, the revision logs (history), the report, "
                   "the webhooks and the access point")
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


def build_parser(declarations, description: str, epilog: str, version: str) -> Parser:
    """The whole command line: global options, then each command's arguments and handler, declared by
    its own module (``declarations``, in the order of `pampa --help`)."""
    parser = Parser(prog="pampa", description=description, epilog=epilog,
                    formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("-V", "--version", action="version", version=f"pampa {version}")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def cmd(name: str, help_: str, example: str) -> Parser:
        p = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
        add_global_options(p, after_command=True)
        parser.commands[name] = p
        return p

    parser.declare = cmd
    for declare in declarations:
        declare(cmd)
    # `pampa help [COMMAND]`: the parser's own word, not a command module's (it is built with every command).
    about = "show the help of pampa, or of one command"
    topic = sub.add_parser("help", help=about, description=about, epilog="example:\n  pampa help deploy",
                           formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    add_global_options(topic, after_command=True)
    topic.add_argument("topic", nargs="?", metavar="COMMAND", choices=list(parser.commands),
                       help="the command to explain (default: pampa itself)")
    topic.set_defaults(handler=lambda args: _help(parser, args.topic))
    return parser


def _help(parser: Parser, topic: str | None) -> int:
    """``pampa help [COMMAND]``: what ``pampa [COMMAND] --help`` prints, exit 0."""
    (parser.commands[topic] if topic else parser).print_help()
    return 0
