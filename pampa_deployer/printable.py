"""Text from elsewhere made safe to show: no terminal control sequence survives, one line stays one line.

A host's output, a node's step name, an access point's error: any of them may carry an escape
sequence that retitles the window (OSC), clears the screen or moves the cursor (CSI), a ``\\r`` that
overwrites what a line said, a newline that forges a log line, or a lone surrogate that cannot be
written as UTF-8 at all. ``printable`` removes whole escape sequences, turns line breaks of a
one-line field into spaces, expands tabs to spaces (8-column stops), drops every other C0/C1
control, DEL and bidirectional override, and replaces lone surrogates with U+FFFD. Text that
needs none of it is returned as the very same object, so the common case costs one regex search.
"""
from __future__ import annotations

import re

#: Anything that needs work: C0 controls (tab and newline included), DEL, C1 controls, bidi controls,
#: surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
#: Whole escape sequences: CSI (ESC [ or 0x9b, parameters, a final byte), OSC/DCS/SOS/PM/APC strings
#: up to their terminator (BEL or ST), and any other two-byte ESC sequence.
_SEQUENCE = re.compile(
    "(?:\x1b\\[|\x9b)[\x20-\x3f]*[\x40-\x7e]?"
    "|(?:\x1b[\\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\\\|\x9c)?"
    "|\x1b[\x20-\x2f]*[\x30-\x7e]?")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_BREAK = re.compile("\r\n|\r|\n")


def printable(text: str, lines: bool = False) -> str:
    """``text`` without control sequences; ``lines``: keep its line breaks (``\\n``), else one line.

    Non-strings (None, numbers) are given back as they are: callers may pass a field of any type.
    """
    if not isinstance(text, str) or _UNSAFE.search(text) is None:
        return text
    text = _SURROGATE.sub("\ufffd", text)
    text = _SEQUENCE.sub("", text)
    text = _BREAK.sub("\n" if lines else " ", text)
    text = _CONTROL.sub("", text)
    if "\t" in text:
        text = "\n".join(line.expandtabs(8) for line in text.split("\n"))
    return text
