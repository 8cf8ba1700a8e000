"""Quoting values into shell commands, and filling command templates.

Every value that reaches a remote shell goes through ``quote`` (``shlex.quote``),
except a leading ``~/`` of a path, which stays bare so the remote shell expands it.
"""
from __future__ import annotations

import re
import shlex
import string
from typing import Any, Mapping


def quote(value: Any) -> str:
    """Quote one value for a POSIX shell; ``~`` and ``~/...`` keep their tilde expansion."""
    text = str(value)
    if text == "~":
        return "~"
    if text.startswith("~/"):
        rest = text[2:]
        return "~/" + shlex.quote(rest) if rest else "~/"
    return shlex.quote(text)


class TemplateError(KeyError):
    """A template names a variable that does not exist."""


_MAX_WIDTH = 1000


def _check_spec(format_spec: str) -> None:
    """A format spec such as ``03d`` is fine; a width of a billion is a mistake (and a MemoryError)."""
    for number in re.findall(r"\d+", format_spec):
        if int(number) > _MAX_WIDTH:
            raise ValueError(f"format width {number} in '{{...:{format_spec}}}' is too large")


class _PlainFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        _check_spec(format_spec)
        return super().format_field(value, format_spec)


class _QuotingFormatter(_PlainFormatter):
    """``{name}`` is shell-quoted; ``{name!u}`` is inserted unquoted (for operator-trusted snippets)."""

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion == "u":
            return _Raw(str(value))
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> str:
        _check_spec(format_spec)
        if isinstance(value, _Raw):
            return str(value)
        return quote(format(value, format_spec))

    def get_value(self, key: Any, args: Any, kwargs: Mapping[str, Any]) -> Any:
        try:
            return super().get_value(key, args, kwargs)
        except (KeyError, IndexError) as e:
            raise TemplateError(str(key)) from e


class _Raw(str):
    pass


_FORMATTER = _QuotingFormatter()


def render(template: str, variables: Mapping[str, Any]) -> str:
    """Fill a command template, shell-quoting every substituted value."""
    return _FORMATTER.vformat(template, (), variables)


def fill_plain(template: str, variables: Mapping[str, Any]) -> str:
    """Fill a value template such as ``~/code/{app}`` without quoting (it is quoted when used)."""
    return _PlainFormatter().vformat(template, (), variables)
