"""The ``pampa check`` probe: one read-only command per host that reports ``key=value`` lines."""
from __future__ import annotations

import posixpath

from ..shell import quote
from .command import Command

#: First words that are shell syntax or builtins, not programs to look for.
_SKIP = {"cd", "export", "source", ".", "if", "then", "fi", "test", "[", "true", "echo", "sudo"}


def programs_used(commands) -> list[str]:
    """Programs ``commands`` call (first word of each command part), to check they exist on the host."""
    found: list[str] = []
    for command in commands:
        for part in command.script.replace("||", "&&").replace(";", "&&").split("&&"):
            words = part.strip().split()
            while words and (words[0] in _SKIP or "=" in words[0]):
                words = words[1:]
            if words and not words[0].startswith(("$", "{", "}", "(", "-", "!", "\"", "'")) and words[0] not in found:
                found.append(words[0])
    return found


def probe_command(path: str, prefix: str | None, programs: list[str]) -> Command:
    """git present, code path writable (or creatable), each program found (on PATH or in the code path)."""
    parent = posixpath.dirname(path.rstrip("/")) or "."
    checks = " ; ".join(
        ["command -v git >/dev/null && echo git=ok || echo git=missing",
         f"if [ -d {quote(path)} ]; then t={quote(path)}; else t={quote(parent)}; mkdir -p \"$t\" "
         f"2>/dev/null; fi; [ -w \"$t\" ] && echo path=ok || echo path=not-writable"]
        + [f"(cd {quote(path)} 2>/dev/null; command -v {quote(p)} >/dev/null || [ -x {quote(p)} ]) "
           f"&& echo cmd:{p}=ok || echo cmd:{p}=missing" for p in programs])
    return Command(script=checks, prefix=prefix, timeout=30)


def parse_probe(output: str) -> dict[str, str]:
    """``key=value`` lines -> a dict (other lines, e.g. from a login banner, are ignored)."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
