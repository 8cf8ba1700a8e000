"""Text that arrived from a host or a repository, made safe to show: printable, one line, bounded.

A commit subject, an author's name, a revision-log message or a release name is written by someone
else. Shown as is, an escape sequence in it could move the cursor, rewrite the lines above or retitle
the terminal; a newline could forge a line of pampa's own output; a megabyte could flood it. Every
parser of host or repository output passes such fields through ``printable`` before anything renders
them, so the text is harmless on a terminal, in plain CI lines and in JSON alike.
"""
from __future__ import annotations

import unicodedata

#: Characters kept of one field unless a caller asks for another bound.
LIMIT = 500


def _shown(ch: str) -> str:
    if ch == "\t":
        return " "
    if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
        # Control characters (ESC, CR, BEL...), format characters (bidi overrides), separators
        # that act as newlines: shown as their code, never acted on.
        return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"
    return ch


def printable(value: object, limit: int = LIMIT) -> str:
    """``value`` as one printable line of at most ``limit`` characters (``...`` marks a cut)."""
    text = "" if value is None else str(value)
    if len(text) > limit * 4:  # do not walk a megabyte to keep 500 characters of it
        text = text[: limit * 4]
    shown = "".join(ch if ch.isprintable() and ch != "\t" else _shown(ch) for ch in text)
    return shown if len(shown) <= limit else shown[: max(0, limit - 3)] + "..."
