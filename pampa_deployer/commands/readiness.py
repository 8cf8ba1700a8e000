"""``pampa check``: one read-only probe per host answering "will a deploy succeed here?".

The probe changes nothing on the host. It prints ``key=value`` lines; ``parse`` reads
them back. The judgement (thresholds, messages, fixes) lives in ``cli/check.py``.
"""
from __future__ import annotations

from typing import Iterable

from ..inventory.model import Host
from ..shell import quote
from .command import Command

#: The probe's first line: without it, the probe (and so every deploy step) could not start on the host.
STARTED = "probe=started"

#: First words that are not programs to look for.
_NOT_PROGRAMS = {"cd", "export", "source", ".", "if", "then", "else", "fi", "test", "[", "[[", "true", "false",
                 "echo", "printf", "sudo", "exec", "exit", "set", "do", "done", "for", "while", "!", "{", "}",
                 "(", ")", "env", "nohup", "setsid", "time"}

#: Builtins whose arguments are never a program (``echo "note: x"``, ``cd DIR``, ``[ -d x ]``, the name
#: of ``for r in ...``).
_NO_PROGRAM_AFTER = {"cd", "source", ".", "export", "set", "exit", "[", "[[", "test", "echo", "printf", "true",
                     "false", "for"}


def programs_used(commands: Iterable[Command]) -> list[str]:
    """Programs the host's steps call, to check they are installed.

    Skipped: shell words, variable assignments, the ``cd PATH`` of a command (a folder,
    not a program) and relative paths such as ``bin/restart``: scripts shipped in the
    app arrive with the checkout, so a fresh host does not have them yet.
    """
    found: list[str] = []
    for command in commands:
        for part in command.script.replace("||", "&&").replace(";", "&&").replace("|", "&&").split("&&"):
            word = _program(part.strip().split())
            if word and word not in found:
                found.append(word)
    return found


def _program(words: list[str]) -> str | None:
    """The program a command part runs, or None (shell words, ``cd DIR``, tests, app scripts)."""
    while words and (words[0] in _NOT_PROGRAMS or "=" in words[0] or words[0].startswith("-")):
        if words[0] in _NO_PROGRAM_AFTER or "$(" in words[0]:
            return None  # a builtin's arguments, or a command substitution: not a program to look for
        words = words[1:]
    word = words[0].strip("'\"") if words else ""
    if not word or word.startswith(("$", "{", "(", "!", "~", "`")):
        return None
    if "/" in word and not word.startswith("/"):
        return None  # shipped in the app: bin/restart, ./script
    return word


def _creatable(key: str, path: str) -> str:
    """Print ``key=ok`` when ``path`` is a writable folder, ``key=creatable`` when its nearest existing
    ancestor is one, else ``key=blocked:ANCESTOR``. Creates nothing."""
    return (f"p={quote(path)}; if [ -d \"$p\" ]; then if [ -w \"$p\" ]; then echo {key}=ok; "
            f"else echo {key}=not-writable:\"$p\"; fi; else d=\"$p\"; "
            f"while [ ! -e \"$d\" ] && [ \"$d\" != / ]; do d=$(dirname \"$d\"); done; "
            f"if [ -d \"$d\" ] && [ -w \"$d\" ]; then echo {key}=creatable; else echo {key}=blocked:\"$d\"; fi; fi")


def probe_command(host: Host, repo: str, secret_folders: Iterable[str] = (), sudo: bool = False,
                  programs: Iterable[str] = (), redactor=None, services: Iterable[str] = ()) -> Command:
    """The host's whole readiness probe, run with its prefix and env like a deploy step: the repository and
    branch, the code path, free disk, each secret folder, sudo without a password (when a restart uses it),
    each program the steps call, and the services' own probes (a puma restarted hot or phased)."""
    path = quote(host.path)
    parts = [
        # Printed only when the probe started at all: it runs like every deploy step, after the prefix and
        # as a stoppable command (procgroup.wrap, today `setsid -w`), so a host that cannot start one is seen.
        f"echo {STARTED}",
        # git: the repository answers from this host and has the branch (exit 2: no such ref).
        f"out=$(GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND=\"${{GIT_SSH_COMMAND:-ssh -o BatchMode=yes}}\" "
        f"timeout 30 git ls-remote --exit-code --heads {quote(repo)} {quote('refs/heads/' + host.branch)} 2>&1); "
        "rc=$?; if [ $rc -eq 0 ]; then echo git=ok:$(echo \"$out\" | cut -c1-12); "
        "elif [ $rc -eq 2 ]; then echo git=no-branch; elif [ $rc -eq 127 ]; then echo git=not-installed; "
        "else echo git=unreachable:$(echo \"$out\" | grep -v '^$' | head -n 1); fi",
        _creatable("path", host.path),
        # An existing code path that is not a checkout and not empty makes `git clone` fail.
        f"if [ -d {path} ] && [ ! -d {path}/.git ] && [ -n \"$(ls -A {path} 2>/dev/null)\" ]; "
        "then echo checkout=not-a-checkout; fi",
        f"d={path}; while [ ! -e \"$d\" ] && [ \"$d\" != / ]; do d=$(dirname \"$d\"); done; "
        "echo disk=$(df -Pk \"$d\" 2>/dev/null | awk 'NR==2 {print $4}'):\"$d\"",
    ]
    for i, folder in enumerate(secret_folders):
        parts.append(_creatable(f"secret:{i}", folder))
    if sudo:
        parts.append("if command -v sudo >/dev/null; then e=$(sudo -n true 2>&1) && echo sudo=ok || "
                     "echo sudo=needs-password:$(echo \"$e\" | head -n 1); else echo sudo=not-installed; fi")
    for program in programs:
        parts.append(f"command -v {quote(program)} >/dev/null 2>&1 && echo cmd:{program}=ok "
                     f"|| echo cmd:{program}=missing")
    parts.extend(services)
    kwargs = {"redactor": redactor} if redactor is not None else {}
    return Command(script=" ; ".join(parts), prefix=host.prefix, env=tuple(sorted(host.env.items())),
                   timeout=60, **kwargs)


def parse(output: str) -> dict[str, str]:
    """``key=value`` lines -> dict (the first ``=`` splits; values may hold more)."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line and not line.startswith(" "))
