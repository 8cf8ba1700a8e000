"""Reading one YAML file: syntax errors with line and column, duplicate keys, ``!secret``, merge keys.

A stage file is small and written by people, so the reader also bounds what a
file may cost: its size (``MAX_BYTES``) and the number of nodes once aliases are
expanded (``MAX_NODES``, against "billion laughs" alias bombs). Both are refused
with one line before anything is built from the file.
"""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

MAX_BYTES = 1024 * 1024
"""A stage file larger than 1 MiB is refused (real ones are a few KiB; 500 hosts fit in ~60 KiB)."""

MAX_NODES = 200_000
"""Values a file may hold once every alias is expanded (a 5,000-host file has ~50,000)."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class Secret(str):
    """A string the operator marked ``!secret`` (or that a secret key holds): always masked."""


_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML has it (about 10x faster on a large stage); the same safe constructors."""


class _Loader(_BASE):  # type: ignore[misc, valid-type]
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one.

    Merge keys (``<<: *defaults``) work as in YAML 1.1: keys written in the mapping
    win over merged ones, and only keys written twice in the same mapping are an error.
    """

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a name or a number, not a {type(key).__name__}",
                    key_node.start_mark)
            if key in seen:
                mark = key_node.start_mark
                raise _DuplicateKey(key, mark.line + 1, mark.column + 1)
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key, line, column):
        super().__init__(key)
        self.key, self.line, self.column = key, line, column


class _TooBig(Exception):
    pass


class _Recursive(Exception):
    def __init__(self, mark):
        super().__init__("recursive alias")
        self.mark = mark


def _secret(loader: _Loader, node: yaml.Node) -> Secret:
    return Secret(loader.construct_scalar(node))  # type: ignore[arg-type]


_Loader.add_constructor("!secret", _secret)


def display_path(path: Path) -> str:
    """A path as the operator wrote it: relative to the working folder when possible."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return str(path)


def expanded_size(node: yaml.Node, limit: int = MAX_NODES) -> int:
    """Nodes in ``node`` with every alias expanded, counted without expanding (memoised by identity)."""
    memo: dict[int, int] = {}
    open_: set[int] = set()

    def size(n: yaml.Node) -> int:
        if id(n) in memo:
            return memo[id(n)]
        if id(n) in open_:
            raise _Recursive(n.start_mark)
        open_.add(id(n))
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(child) for child in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        if total > limit:
            raise _TooBig()
        open_.discard(id(n))
        memo[id(n)] = total
        return total

    return size(node)


def read_text(path: Path, what: str = "file") -> str:
    """A text file's content, or one ConfigError line for every way reading it can fail."""
    shown = display_path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{shown}: is a folder, not a {what}")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(f"{shown}: {size // 1024} KiB is too large for a {what} "
                              f"(limit {MAX_BYTES // 1024} KiB); split it or remove what is unused")
        data = path.read_bytes()
    except RuntimeError as e:  # pathlib reports a symlink loop this way before Python 3.13
        raise ConfigError(f"{shown}: cannot read: symbolic link loop; fix the link") from e
    except OSError as e:
        why = "symbolic link loop; fix the link" if e.errno == errno.ELOOP else e.strerror
        raise ConfigError(f"{shown}: cannot read: {why}") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"{shown}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                          "save the file as UTF-8") from e


def load(path: Path) -> dict[str, Any]:
    """Parse one stage file into a mapping (an empty file is an empty mapping)."""
    shown = display_path(path)
    text = read_text(path, "stage file")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            expanded_size(node)
        data = loader.construct_document(node) if node is not None else None
    except _TooBig as e:
        raise ConfigError(f"{shown}: more than {MAX_NODES:,} values once aliases are expanded; "
                          "a stage file this large is refused (an alias bomb?)") from e
    except _Recursive as e:
        raise ConfigError(f"{shown}:{e.mark.line + 1}:{e.mark.column + 1}: an alias refers to the value "
                          "that contains it; a setting cannot contain itself") from e
    except _DuplicateKey as e:
        raise ConfigError(f"{shown}:{e.line}:{e.column}: duplicate key '{e.key}'; "
                          "each key (and each host name) may appear once") from e
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark else shown
        raise ConfigError(f"{where}: YAML syntax error: {e.problem or e.context}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{shown}: YAML error: {e}") from e
    except RecursionError as e:
        raise ConfigError(f"{shown}: nested too deeply to read") from e
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: expected a mapping of settings at the top, got {type(data).__name__}")
    return data
