"""Secret masking that travels with commands (like pyinfra's MaskString / sshkit's redact).

A ``Redactor`` holds the secret strings of one deploy. Commands carry it, so what
they show (``Command.display``) and what their output says (``Redactor.mask``) is
masked before any renderer, log file or report sees it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

MASK = "********"
MIN_SECRET_LEN = 4  # shorter values would mask ordinary words in output


@dataclass(frozen=True)
class Redactor:
    """An immutable set of secret strings, masked longest first."""

    secrets: frozenset[str] = field(default_factory=frozenset)

    def with_values(self, *values: str) -> "Redactor":
        keep = {v for v in values if v and len(v) >= MIN_SECRET_LEN}
        return Redactor(self.secrets | keep)

    def mask(self, text: str) -> str:
        if not text or not self.secrets:
            return text
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self.secrets)


_QUOTED = re.compile(r"""(["'])(.+?)\1""")
_ASSIGNED = re.compile(r"""[=:]\s*([^\s"'#,;]+)""")


def secret_fragments(content: str) -> list[str]:
    """The strings of a secret file worth masking: each line, quoted literals and assigned values.

    A program may echo a single value from a secret file rather than the whole
    line, so values inside quotes and after ``=``/``:`` are masked on their own too.
    """
    found: list[str] = []
    for line in content.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        found.append(stripped)
        found.extend(m.group(2) for m in _QUOTED.finditer(stripped))
        found.extend(m.group(1) for m in _ASSIGNED.finditer(stripped))
    return [f for f in found if len(f) >= MIN_SECRET_LEN]
