"""Counting words right: "1 host", "2 hosts", "0 hosts"."""
from __future__ import annotations

_IRREGULAR = {"is": "are", "was": "were", "has": "have"}


def plural(n: int, word: str) -> str:
    """``word`` for one, its plural for any other number."""
    if n == 1:
        return word
    return _IRREGULAR.get(word, word[:-1] + "ies" if word.endswith("y") and word[-2:-1] not in "aeiou"
                          else word + "s")


def count(n: int, word: str) -> str:
    """``count(1, "host")`` -> ``"1 host"``; ``count(3, "host")`` -> ``"3 hosts"``."""
    return f"{n} {plural(n, word)}"
