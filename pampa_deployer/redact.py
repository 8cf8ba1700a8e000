"""Secret masking that travels with commands (like pyinfra's MaskString / sshkit's redact).

A ``Redactor`` holds the secret strings of one deploy. Commands carry it, so what
they show (``Command.display``) and what their output says (``Redactor.mask``) is
masked before any renderer, log file or report sees it.

Masking hides secrets and nothing else, because an operator who cannot read the
branch, a path or a server's error message cannot act on it:

- a secret shorter than ``MIN_SECRET_LEN`` is not searched for in text (it would
  mask ordinary words); it is still never shown as the value of its own setting;
- a short secret (under ``WHOLE_WORD_BELOW``) is masked only as a whole word, so
  ``main`` does not eat ``domain``;
- *public* words (the branch, app, stage, host names, addresses, users, code
  paths, unit names, secret file paths) are never masked, even when a secret
  happens to equal or be part of one: they are printed by design anyway;
- from a secret file, whole lines are masked, and the values inside them when they
  are assigned to a secret-looking key or do not look like plain words
  (``production``, ``true``, ``localhost`` are not secrets; ``postgres://u:pw@h`` is).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

MASK = "********"
EMPTY = "(empty)"
"""Shown instead of the mask for a secret setting that is empty, so a missing key is visible."""

MIN_SECRET_LEN = 4
WHOLE_WORD_BELOW = 8
_WORDISH = re.compile(r"[A-Za-z0-9]")


@dataclass(frozen=True)
class Redactor:
    """An immutable set of secret strings, masked longest first, and the public words left alone."""

    secrets: frozenset[str] = field(default_factory=frozenset)
    public: frozenset[str] = field(default_factory=frozenset)

    def with_values(self, *values: str) -> "Redactor":
        keep = {str(v) for v in values if v and len(str(v)) >= MIN_SECRET_LEN}
        return Redactor(self.secrets | keep, self.public)

    def with_public(self, *words: str) -> "Redactor":
        """Names the operator must always be able to read (branch, paths, hosts...)."""
        keep = {str(w) for w in words if w}
        return Redactor(self.secrets, self.public | keep)

    def mask(self, text: str) -> str:
        if not text or not self.secrets:
            return text
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret in text:
                text = self._mask_one(text, secret)
        return text

    def _mask_one(self, text: str, secret: str) -> str:
        protected = [(m.start(), m.start() + len(word)) for word in self.public if secret in word and word != ""
                     for m in re.finditer(re.escape(word), text)]
        whole_word = len(secret) < WHOLE_WORD_BELOW
        out, last = [], 0
        for m in re.finditer(re.escape(secret), text):
            i, j = m.start(), m.end()
            if any(a <= i and j <= b for a, b in protected):
                continue
            if whole_word and ((i > 0 and _WORDISH.match(text[i - 1])) or
                               (j < len(text) and _WORDISH.match(text[j]))):
                continue
            out.append(text[last:i])
            out.append(MASK)
            last = j
        out.append(text[last:])
        return "".join(out)

    def show(self, value: str) -> str:
        """How a secret setting's own value is shown: the mask, or ``(empty)`` when it is empty."""
        return EMPTY if str(value) == "" else MASK

    def __bool__(self) -> bool:
        return bool(self.secrets)


_QUOTED = re.compile(r"""(["'])(.+?)\1""")
_ASSIGNED = re.compile(r"""([A-Za-z0-9_.\[\]'"-]*)\s*(?:=>|[=:])\s*["']?([^\s"'#,;]+)""")
_PLAIN_WORD = re.compile(r"^(?:[A-Za-z]+|[0-9.]+)$")
_SECRET_KEY = re.compile(r"pass|secret|token|key|private|credential|auth|salt", re.I)


def _worth_masking(value: str, key: str = "") -> bool:
    if len(value) < MIN_SECRET_LEN:
        return False
    if key and _SECRET_KEY.search(key):
        return True
    return len(value) >= WHOLE_WORD_BELOW and not _PLAIN_WORD.match(value)


def secret_fragments(content: str) -> list[str]:
    """The strings of a secret file worth masking: each line, and the values in it that look secret.

    A program may echo a single value from a secret file rather than the whole
    line, so a value assigned to a secret-looking key (``DB_PASSWORD = 'x'``), and
    any quoted or assigned value that is not a plain word or number, is masked on
    its own too.
    """
    found: list[str] = []
    for line in content.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(stripped) >= MIN_SECRET_LEN:
            found.append(stripped)
        assigned = {m.group(2): m.group(1) for m in _ASSIGNED.finditer(stripped)}
        for m in _QUOTED.finditer(stripped):
            value = m.group(2)
            key = next((k for v, k in assigned.items() if value.startswith(v) or v.startswith(value)), "")
            if _worth_masking(value, key):
                found.append(value)
        for value, key in assigned.items():
            if _worth_masking(value, key):
                found.append(value)
    return found
