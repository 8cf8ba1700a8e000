"""Schema validation of one stage file, with path-qualified messages.

Messages look like ``stages/production.yml: hosts.kepler-1.port: expected an
integer, got 'abc'``. The whole file is checked and every problem is reported,
so one run shows the operator everything to fix.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Callable

from .schema import TOP, Key

_TYPE_NAMES = {
    "str": "a string", "int": "an integer", "number": "a number", "bool": "true or false",
    "list[str]": "a list of strings", "map[str]": "a mapping of names to strings",
    "map[any]": "a mapping", "section": "a mapping", "map[section]": "a mapping",
    "list[section]": "a list of mappings", "str|list[str]": "a string or a list of strings",
    "map[list[str]]": "a mapping of names to lists of strings",
}


SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODE = re.compile(r"^0?[0-7]{3}$")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    # name: (test, what is expected) -- the same words the command line uses (cli.types).
    "positive": (lambda v: _number(v) and v > 0, "a positive number"),
    "non_negative": (lambda v: _number(v) and v >= 0, "a number of 0 or more"),
    "seconds": (lambda v: _number(v) and v >= 1, "a number of seconds of at least 1"),
    "port": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535,
             "a port number from 1 to 65535"),
    "mode": (lambda v: isinstance(v, str) and bool(_MODE.match(v)),
             "an octal mode in quotes such as '0600' (unquoted, YAML reads 0600 as the number 384)"),
    "shell_names": (lambda v: isinstance(v, dict) and all(SHELL_NAME.match(str(k)) for k in v),
                    "names made of letters, digits and _ that do not start with a digit"),
    "code_path": (lambda v: _own_folder(str(v)),
                  "a folder of its own such as ~/code/{app}, not ~, / or . (the revision log is written "
                  "next to it, as PATH.revisions.jsonl)"),
}


def _own_folder(path: str) -> bool:
    """A code path names a folder with a name: ``git reset --hard`` runs in it and its revision log is
    ``PATH.revisions.jsonl`` next to it, so ``~``, ``~/``, ``~bob``, ``/``, ``.`` and ``..`` are refused."""
    trimmed = path.rstrip("/")
    last = trimmed.rsplit("/", 1)[-1]
    return last not in ("", ".", "..") and not (trimmed.startswith("~") and "/" not in trimmed)


def rule_problem(rule: str, value: Any, name: str) -> str | None:
    """``"NAME: expected WHAT, got VALUE"`` when ``value`` breaks ``rule``; None when it is fine."""
    test, expected = RULES[rule]
    if test(value):
        return None
    if rule == "shell_names":
        bad = next(str(k) for k in value if not SHELL_NAME.match(str(k)))
        return f"{name}: '{bad}' is not a valid environment variable name; expected {expected}"
    return f"{name}: expected {expected}, got {_describe(value)}"


def choice_problem(key: Key, value: Any, name: str) -> str | None:
    """``"NAME: unknown NAME 'x' (did you mean 'y'?); use one of: ..."`` for a value outside ``key.choices``."""
    if not key.choices or value in key.choices:
        return None
    return (f"{name}: unknown {name.rsplit('.', 1)[-1]} '{value}'{suggest(value, key.choices)}; "
            f"use one of: {', '.join(key.choices)}")


def rule_text(rule: str) -> str:
    """What a rule expects, for the generated reference."""
    return RULES[rule][1]


def suggest(word: str, choices) -> str:
    """`` (did you mean 'x'?)`` when a close match exists."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_scalar_str(value: Any) -> bool:
    # Numbers are accepted where strings are expected (a branch named 2024, a port in a var).
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _check_type(value: Any, type_: str) -> bool:
    if type_ == "str":
        return _is_scalar_str(value)
    if type_ == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_ == "bool":
        return isinstance(value, bool)
    if type_ == "list[str]":
        return isinstance(value, list) and all(_is_scalar_str(v) for v in value)
    if type_ == "str|list[str]":
        return _is_scalar_str(value) or _check_type(value, "list[str]")
    if type_ == "map[str]":
        return isinstance(value, dict) and all(_is_scalar_str(v) for v in value.values())
    if type_ in ("map[any]", "section", "map[section]"):
        return isinstance(value, dict)
    if type_ == "list[section]":
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    if type_ == "map[list[str]]":
        return isinstance(value, dict) and all(_check_type(v, "list[str]") for v in value.values())
    raise AssertionError(f"unknown schema type {type_}")


EXTENSION_PREFIX = "x-"
"""Top-level keys starting with ``x-`` are ignored (as in Compose files): a home for ``&anchors``."""


def check_mapping(data: dict, keys: dict[str, Key], where: str, path: str, errors: list[str]) -> None:
    """Check every key of ``data`` against ``keys``; append messages to ``errors``."""
    for name, value in data.items():
        full = f"{path}{name}"
        if not path and str(name).startswith(EXTENSION_PREFIX):
            continue  # `x-defaults: &defaults {...}`: a place for YAML anchors, ignored
        key = keys.get(name)
        if key is None:
            errors.append(f"{where}: {full}: unknown key{suggest(name, keys)}; "
                          f"known keys here: {', '.join(keys)}")
            continue
        if value is None:
            continue  # an explicit null means "use the default"
        if not _check_type(value, key.type):
            errors.append(f"{where}: {full}: expected {_TYPE_NAMES[key.type]}, got {_describe(value)}")
            continue
        problem = rule_problem(key.rule, value, full) if key.rule else choice_problem(key, value, full)
        if problem:
            errors.append(f"{where}: {problem}")
            continue
        if key.type == "section":
            check_mapping(value, key.children, where, full + ".", errors)
        elif key.type == "map[section]":
            for sub, item in value.items():
                if item is None:
                    continue
                if not isinstance(item, dict):
                    errors.append(f"{where}: {full}.{sub}: expected a mapping, got {_describe(item)}")
                else:
                    check_mapping(item, key.children, where, f"{full}.{sub}.", errors)
        elif key.type == "list[section]":
            for i, item in enumerate(value):
                check_mapping(item, key.children, where, f"{full}[{i}].", errors)


def check_file(data: dict, where: str) -> list[str]:
    """All schema problems of one parsed stage file."""
    errors: list[str] = []
    check_mapping(data, TOP, where, "", errors)
    return errors
