"""Reading one YAML file: syntax errors with line and column, duplicate keys, ``!secret``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError


class Secret(str):
    """A string the operator marked ``!secret`` (or that a secret key holds): always masked."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node, deep=False):  # noqa: D401 - yaml API
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise _DuplicateKey(key, mark.line + 1, mark.column + 1)
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key, line, column):
        super().__init__(key)
        self.key, self.line, self.column = key, line, column


def _secret(loader: _Loader, node: yaml.Node) -> Secret:
    return Secret(loader.construct_scalar(node))  # type: ignore[arg-type]


_Loader.add_constructor("!secret", _secret)


def display_path(path: Path) -> str:
    """A path as the operator wrote it: relative to the working folder when possible."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load(path: Path) -> dict[str, Any]:
    """Parse one stage file into a mapping (an empty file is an empty mapping)."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{shown}: cannot read: {e.strerror}") from e
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except _DuplicateKey as e:
        raise ConfigError(f"{shown}:{e.line}:{e.column}: duplicate key '{e.key}'; "
                          "each key (and each host name) may appear once") from e
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark else shown
        raise ConfigError(f"{where}: YAML syntax error: {e.problem or e.context}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: expected a mapping of settings at the top, got {type(data).__name__}")
    return data
