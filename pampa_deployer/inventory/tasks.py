"""Steps written in Python: loading the Invoke tasks of the modules a stage names in ``tasks``.

A task is a step by its function name: in a role's sequence, as a custom step
(``steps.NAME: {roles, after}``) or with ``pampa run``. Loading is configuration: it happens
with the stage, before any SSH, so a broken module or an unknown name is a config error (exit 2).
Calling a task on a host is ``steps/python.py`` (the action) and ``engine/tasks/`` (the call).
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from ..errors import ConfigError

if TYPE_CHECKING:
    from invoke import Task


@dataclass(frozen=True)
class PyTask:
    """One task usable as a step: its name, the file it came from (as the stage wrote it), its docstring."""

    name: str
    source: str
    doc: str
    body: Callable = field(compare=False, repr=False)


# (absolute path, mtime, size) -> module: a stage loaded twice in one process imports its tasks once.
_MODULES: dict[tuple, object] = {}


def _import(path: Path, source: str, where: str):
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key in _MODULES:
        return _MODULES[key]
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # like fab: the module may import its neighbours
    name = "pampa_tasks_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - any error in the user's module is a config error naming it
        del sys.modules[name]
        line = f" (line {e.lineno})" if isinstance(e, SyntaxError) and e.lineno else ""
        raise ConfigError(f"{where}: tasks: cannot import {source}{line}: {type(e).__name__}: {e}; "
                          "run `pampa --debug plan STAGE` for the traceback") from e
    _MODULES[key] = module
    return module


def _tasks_of(module) -> list["Task"]:
    """The module's top-level tasks (its ``ns`` collection if it has one), minus pampa's own built-ins."""
    found = []
    from invoke import Collection  # only a stage with `tasks` needs Invoke: the rest start without it
    for task in Collection.from_module(module).tasks.values():
        if getattr(task, "pampa_builtin", False):
            continue  # a fabfile that includes pampa's collection: those are the built-in steps
        found.append(getattr(task, "pampa_task", task))  # a fab wrapper made by tasks.collection()
    return found


def _check_signature(task: "Task", source: str, where: str) -> None:
    params = list(inspect.signature(task.body).parameters.values())[1:]
    required = [p.name for p in params if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:
        raise ConfigError(f"{where}: tasks: task {task.name} in {source} needs {', '.join(required)}; a step is "
                          "called with the connection `c` only: give those parameters defaults")


def load_tasks(sources: str | Iterable[str] | None, project: Path, builtins: Iterable[str],
               where: str) -> dict[str, PyTask]:
    """Every task of the stage's ``tasks`` modules (paths relative to the project folder), by name."""
    if not sources:
        return {}
    sources = [sources] if isinstance(sources, str) else list(sources)
    builtins = set(builtins)
    tasks: dict[str, PyTask] = {}
    for source in sources:
        source = str(source)
        path = Path(source).expanduser()
        path = path if path.is_absolute() else project / path
        if not path.is_file():
            raise ConfigError(f"{where}: tasks: no Python file {source} (looked for {path}); the path is "
                              "relative to the folder that holds stages/")
        found = _tasks_of(_import(path.resolve(), source, where))
        if not found:
            raise ConfigError(f"{where}: tasks: {source} has no Invoke task; decorate a function "
                              "`def NAME(c):` with `@task` (from invoke import task)")
        for task in found:
            _check_signature(task, source, where)
            name = task.name
            if name in builtins:
                raise ConfigError(f"{where}: tasks: task {name} in {source} has the name of a built-in step; "
                                  f"rename it (to change the built-in step, use steps.{name}.run)")
            if name in tasks and tasks[name].source != source:
                raise ConfigError(f"{where}: tasks: task {name} is defined in both {tasks[name].source} "
                                  f"and {source}; rename one")
            tasks[name] = PyTask(name=name, source=source, doc=inspect.getdoc(task.body) or "", body=task.body)
    return tasks
