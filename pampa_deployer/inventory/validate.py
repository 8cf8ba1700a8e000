"""Schema validation of one stage file, with path-qualified messages.

Messages look like ``stages/production.yml: hosts.kepler-1.port: expected an
integer, got 'abc'``. The whole file is checked and every problem is reported,
so one run shows the operator everything to fix.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Callable
from urllib.parse import urlsplit

from .schema import TOP, Key, looks_secret
from .yamlfile import Secret

_TYPE_NAMES = {
    "str": "a string", "int": "an integer", "number": "a number", "bool": "true or false",
    "list[str]": "a list of strings", "map[str]": "a mapping of names to strings",
    "map[any]": "a mapping", "section": "a mapping", "map[section]": "a mapping",
    "list[section]": "a list of mappings", "str|list[str]": "a string or a list of strings",
    "map[list[str]]": "a mapping of names to lists of strings",
}


SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HOST_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
"""A host name is a file name (``hosts/NAME.log``) and a URL path element (``/nodes/NAME``)."""
_RANGE_PART = re.compile(r"\[[^\[\]]*\]")
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
    "shell_names": (lambda k: bool(SHELL_NAME.match(str(k))),
                    "names made of letters, digits and _ that do not start with a digit"),
    "host_names": (lambda k: bool(HOST_NAME.match(_RANGE_PART.sub("0", str(k)))),
                   "names made of letters, digits, '.', '_' and '-' that start with a letter or digit (a host's "
                   "name is also a file name and part of a URL), with at most one [low:high] range"),
    "code_path": (lambda v: _own_folder(str(v)),
                  "a folder of its own such as ~/code/{app}, not ~, / or . (the revision log is written "
                  "next to it, as PATH.revisions.jsonl)"),
    "inside": (lambda v: _inside(str(v)),
               "a path inside the release such as log or tmp/pids: not absolute, no ~ and no .. (each one is "
               "replaced by a link in every release)"),
    "remote_file": (lambda v: _remote_file(str(v)),
                    "a file: absolute, ~/..., or relative to the code path without .. (a relative one is linked "
                    "into every release)"),
    "url": (lambda v: not str(v).strip() or _url_problem(str(v)) is None, "an http:// or https:// URL with a "
            "host, such as https://ap.example.com (empty: none)"),
    "http_status": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599,
                    "an HTTP status from 100 to 599"),
    "releases_kept": (lambda v: _number(v) and v >= 2,
                      "a number of 2 or more (the current release and the previous one, for rollback)"),
}

#: Rules that check the keys of a mapping (each key), not its value; what one such key is called.
KEY_RULES = {"shell_names": "environment variable name", "host_names": "host name"}


def _own_folder(path: str) -> bool:
    """A code path names a folder with a name: ``git reset --hard`` runs in it and its revision log is
    ``PATH.revisions.jsonl`` next to it, so ``~``, ``~/``, ``~bob``, ``/``, ``.`` and ``..`` are refused."""
    trimmed = path.rstrip("/")
    last = trimmed.rsplit("/", 1)[-1]
    return last not in ("", ".", "..") and not (trimmed.startswith("~") and "/" not in trimmed)


def _inside(path: str) -> bool:
    """A path that stays inside the folder it is relative to: ``log``, ``tmp/pids``; not ``/x``, ``~/x``,
    ``../x``, ``.`` or an empty one (``rm -rf RELEASE/ENTRY`` runs on each)."""
    text = path.strip()
    parts = [p for p in text.split("/") if p not in ("", ".")]
    return bool(parts) and not text.startswith(("/", "~")) and ".." not in parts


def _remote_file(path: str) -> bool:
    text = path.strip()
    if text.endswith("/"):
        return False
    if text.startswith(("/", "~/")):
        return len(text.rstrip("/")) > 2
    return _inside(text)


def _url_problem(text: str) -> str | None:
    """What is wrong with a URL, in words that never repeat it (a webhook URL is a secret)."""
    if "://" not in text:
        return "it has no http:// or https:// in front"
    try:
        parts = urlsplit(text.strip())
    except ValueError as e:
        return f"it cannot be read as a URL ({e})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"its scheme is '{parts.scheme}', not http or https"
    if not parts.netloc or parts.netloc.startswith((":", "@")) or parts.netloc.endswith("@"):
        return "it has no host after the scheme"
    if any(c.isspace() for c in text.strip()):
        return "it contains a space"
    return None


def rule_problem(rule: str, value: Any, name: str, secret: bool = False) -> str | None:
    """``"NAME: expected WHAT, got VALUE"`` when ``value`` breaks ``rule``; None when it is fine.

    A list is checked item by item (``NAME[i]``), a key rule (``KEY_RULES``) key by key; a ``secret``
    value is never repeated in the message."""
    test, expected = RULES[rule]
    if rule in KEY_RULES:
        bad = next((str(k) for k in value if not test(k)), None)
        if bad is None:
            return None
        return f"{name}: '{bad}' is not a valid {KEY_RULES[rule]}; expected {expected}"
    if isinstance(value, list):
        problems = [rule_problem(rule, item, f"{name}[{i}]", secret) for i, item in enumerate(value)
                    if item is not None]
        return next((p for p in problems if p), None)
    if test(value):
        return None
    if rule == "url":
        why = _url_problem(str(value))
        if secret:
            return f"{name}: expected {expected}, but {why} (the value is not shown: it is a secret)"
        return f"{name}: expected {expected}, got {_describe(value)}: {why}"
    if secret:
        return f"{name}: expected {expected} (the value is not shown: it is a secret)"
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


def _holds_secret(value: Any) -> bool:
    """A value tagged ``!secret`` (or filled into one), alone or in a list."""
    items = value if isinstance(value, list) else [value]
    return any(isinstance(v, Secret) for v in items)


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


def check_mapping(data: dict, keys: dict[str, Key], where: str, path: str, errors: list[str],
                  unresolved: frozenset[str] = frozenset()) -> None:
    """Check every key of ``data`` against ``keys``; append messages to ``errors``.

    ``unresolved`` names the values whose ``${VAR}`` could not be filled in: that was reported
    already, and what is left of them is not the value to judge."""
    for name, value in data.items():
        full = f"{path}{name}"
        if not path and str(name).startswith(EXTENSION_PREFIX):
            continue  # `x-defaults: &defaults {...}`: a place for YAML anchors, ignored
        key = keys.get(name)
        if key is None:
            errors.append(f"{where}: {full}: unknown key{suggest(name, keys)}; "
                          f"known keys here: {', '.join(keys)}")
            continue
        if value is None or full in unresolved:
            continue  # an explicit null means "use the default"
        secret = key.secret or looks_secret(str(name)) or _holds_secret(value)
        if not _check_type(value, key.type):
            shown = "a value of another kind (not shown: it is a secret)" if secret else _describe(value)
            errors.append(f"{where}: {full}: expected {_TYPE_NAMES[key.type]}, got {shown}")
            continue
        if isinstance(value, list) and unresolved:  # reported already: judged as if absent
            value = [None if f"{full}[{i}]" in unresolved else v for i, v in enumerate(value)]
        problem = rule_problem(key.rule, value, full, secret) if key.rule else choice_problem(key, value, full)
        if problem:
            errors.append(f"{where}: {problem}")
            if key.type != "map[section]":  # a bad host name still leaves every host's settings to check
                continue
        if key.type == "section":
            check_mapping(value, key.children, where, full + ".", errors, unresolved)
        elif key.type == "map[section]":
            for sub, item in value.items():
                if item is None:
                    continue
                if not isinstance(item, dict):
                    errors.append(f"{where}: {full}.{sub}: expected a mapping, got {_describe(item)}")
                else:
                    check_mapping(item, key.children, where, f"{full}.{sub}.", errors, unresolved)
        elif key.type == "list[section]":
            for i, item in enumerate(value):
                check_mapping(item, key.children, where, f"{full}[{i}].", errors, unresolved)


def check_file(data: dict, where: str, unresolved: frozenset[str] = frozenset()) -> list[str]:
    """All schema problems of one parsed stage file (its ``${VAR}`` already filled in, but ``unresolved``)."""
    errors: list[str] = []
    check_mapping(data, TOP, where, "", errors, unresolved)
    return errors
