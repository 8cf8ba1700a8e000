"""Which line of a failed command's stderr says what went wrong.

The last line is usually right, but not always: git ends many failures with a
usage hint (``Use '--' to separate paths from revisions...``) after the line that
matters (``fatal: ambiguous argument 'origin/x': unknown revision``). The line
that carries an error word wins; otherwise the last line.
"""
from __future__ import annotations

import re

_ERROR_LINE = re.compile(r"^\s*(fatal|error|ERROR|Error|FATAL|E|[\w:]*Error|[\w:]*Exception)\b[:!]|"
                         r"^\S+: (command )?not found|: No such file or directory|Permission denied", re.M)


def telling_line(text: str) -> str:
    """The line of ``text`` that best says why a command failed ("" for empty text)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            return line.strip()
    return lines[-1].strip()


def repeats(message: str, line: str) -> bool:
    """``line`` says nothing ``message`` does not already say: it is in it, or its last two thirds are (a
    health check's reason quotes the check's last stderr line behind its own words)."""
    line = line.strip()
    if not line or line in message:
        return True
    return len(line) >= 24 and line[-(len(line) * 2 // 3):] in message
