"""Every remote command pampa sends on its own behalf, as pure builders tested with exact strings.

``command.py`` holds ``Command``, the engine's common currency; ``lock.py``, ``revlog.py``,
``git.py`` (rollback queries), ``probe.py`` (``pampa check``) and ``procgroup.py`` (running a command in
its own process group, and stopping that group) build the bookkeeping commands.
The deploy steps' commands are built in ``steps/`` from a ``StepContext``, with the same ``Command``.
"""
from .command import Command

__all__ = ["Command"]
