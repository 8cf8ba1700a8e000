"""Environment substitution and the layered merge that remembers where each value came from.

Merge order, lowest first: built-in defaults, ``stages/common.yml``, the stage
file, host-level settings, command-line overrides. Mappings merge key by key;
lists and scalars are replaced whole.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from .schema import looks_secret
from .yamlfile import Secret

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TOKEN = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{[^}\s'\"]{0,30}\}?")
"""``$${`` (a literal ``${``), a good reference, or any other ``${`` (an error: unclosed or a bad name)."""


class UnsetVariable(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class BadReference(ValueError):
    """``${`` that is not ``${NAME}`` or ``${NAME:-default}``: unclosed, or not a variable name."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return (f"'{self.text}' is not a variable reference; write ${{NAME}} or ${{NAME:-default}} "
                "(NAME: letters, digits, _), or $${ for a literal ${")


def references(text: str) -> list[str]:
    """The variable names ``text`` reads (for masking what a secret template filled in)."""
    return [m.group(1) for m in _TOKEN.finditer(text) if m.group(1)]


def substitute(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` (or ``${VAR:-default}``) from ``environ``; an unset VAR without default raises.

    ``$${`` stands for a literal ``${``; any other ``${`` that is not a reference raises ``BadReference``.
    """
    if "${" not in text:
        return text

    def repl(m: re.Match) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        if name is None:
            raise BadReference(m.group(0))
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise UnsetVariable(name)

    return _TOKEN.sub(repl, text)


#: Keys whose names look secret but whose values are file paths, never masked (docs/operations.md#secrets).
PATHS_NOT_SECRETS = frozenset({"secrets"})


def expand_env(data: Any, where: str, environ: Mapping[str, str], errors: list[str],
               path: str = "", secret: bool = False, unresolved: set[str] | None = None) -> Any:
    """Substitute ``${VAR}`` everywhere in a parsed file; secret-ness survives as ``Secret``.

    The dotted names of values that could not be filled in are added to ``unresolved`` (their
    error is in ``errors``), so the validator does not judge what is left of them."""
    if isinstance(data, dict):
        return {k: expand_env(v, where, environ, errors, f"{path}{k}.",
                              secret or (looks_secret(str(k)) and f"{path}{k}" not in PATHS_NOT_SECRETS), unresolved)
                for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, where, environ, errors, f"{path.rstrip('.')}[{i}].", secret, unresolved)
                for i, v in enumerate(data)]
    if isinstance(data, str):
        try:
            value = substitute(data, environ)
        except (UnsetVariable, BadReference) as e:
            why = (f"environment variable {e.name} is not set; export it or write ${{{e.name}:-default}}"
                   if isinstance(e, UnsetVariable) else str(e))
            errors.append(f"{where}: {path.rstrip('.')}: {why}")
            if unresolved is not None:
                unresolved.add(path.rstrip("."))
            return data
        return Secret(value) if (secret or isinstance(data, Secret)) else value
    return data


def merge(layers: list[tuple[str, dict]]) -> tuple[dict, dict[str, str]]:
    """Deep-merge ``(origin, mapping)`` layers; returns the result and ``{dotted.key: origin}``."""
    result: dict = {}
    origins: dict[str, str] = {}

    def into(dst: dict, src: dict, origin: str, prefix: str) -> None:
        for key, value in src.items():
            if value is None:
                continue
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and isinstance(dst.get(key), dict):
                into(dst[key], value, origin, dotted + ".")
            else:
                if key in dst:  # a replaced value: forget where its old parts came from
                    for old in [k for k in origins if k.startswith(dotted + ".")]:
                        del origins[old]
                dst[key] = _copy(value)
                _record(origins, value, origin, dotted)

    for origin, layer in layers:
        into(result, layer, origin, "")
    return result, origins


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _record(origins: dict[str, str], value: Any, origin: str, dotted: str) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _record(origins, v, origin, f"{dotted}.{k}")
    else:
        origins[dotted] = origin
