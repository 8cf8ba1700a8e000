"""The ``c`` a step written in Python receives: an Invoke ``Context`` whose commands are pampa's.

``c.run("cmd")`` builds a ``Command`` (the host's code path, prefix, env and masking, the
step's remaining time as its timeout) and runs it on the host's own backend, so it gets
the shell session, live output and the remote-stop guarantees of every other step, not
Invoke's polling runner. It returns an ``invoke.Result`` and raises ``UnexpectedExit`` or
``CommandTimedOut`` like Fabric does. ``c.config.pampa`` holds the stage, host, roles,
branch and revision; ``c.put`` uploads atomically; ``c.run_step("migrate")`` runs a
built-in step (the built-in tasks of ``pampa_deployer.tasks`` call it too).
"""
from __future__ import annotations

import os
import posixpath
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from invoke import Config, Context
from invoke.exceptions import CommandTimedOut, UnexpectedExit
from invoke.runners import Result

from ...commands.command import Command
from ...plan import build_step, known_steps, step_context
from ...shell import quote
from ...steps.actions import CallTask, Run, Upload
from ...steps.secrets import remote_path

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TaskStopped(Exception):
    """The step timed out or the run was aborted: the task may not start another command."""


class TaskContext(Context):
    """``c`` for one call of one task on one host (see the module docstring)."""

    def __init__(self, action: CallTask, backend, sink, perform, deadline: float | None = None,
                 revision: str | None = None):
        super().__init__(Config(overrides={"pampa": {**action.info, "revision": revision}}, lazy=True))
        host = action.host
        self._set(action=action, backend=backend, sink=sink, executor=perform, deadline=deadline, _guard=threading.Lock(),
                  _stopped=None, busy=False, backend_error=None, host=host.address, user=host.user, port=host.port)

    # -- running commands ----------------------------------------------------------------------
    def run(self, command: str, warn: bool = False, hide: Any = None, timeout: float | None = None,
            env: Mapping[str, str] | None = None, echo: bool = False, pty: bool = False, in_stream: Any = None,
            **unsupported) -> Result:
        """Run ``command`` on the host; ``hide``, ``echo``, ``pty`` and ``in_stream`` are accepted and ignored
        (output always goes to the host's log and -v; stdin is /dev/null; there is no pty)."""
        if unsupported:
            raise TypeError(f"c.run() does not take {', '.join(sorted(unsupported))} in a pampa step; "
                            "it takes warn, timeout and env")
        cmd = self.command(command, timeout=timeout, env=env)
        t0 = time.monotonic()
        result = self._execute(cmd)
        out = Result(stdout=result.stdout, stderr=result.stderr, command=cmd.display(), exited=result.exit_code,
                     hide=("stdout", "stderr"))
        if result.exit_code == 124 and cmd.timeout is not None and time.monotonic() - t0 >= cmd.timeout * 0.95:
            raise CommandTimedOut(out, cmd.timeout)
        if not out.ok and not warn:
            raise UnexpectedExit(out)
        return out

    def sudo(self, command: str, user: str | None = None, **kwargs) -> Result:
        """``sudo -n`` (never prompts: a password prompt would hang a deploy) around ``command``."""
        who = f"-u {quote(user)} " if user else ""
        return self.run(f"sudo -n {who}-- sh -c {quote(command)}", **kwargs)

    def command(self, script: str, timeout: float | None = None, env: Mapping[str, str] | None = None) -> Command:
        """The ``Command`` ``c.run(script)`` sends: ``c.cd``/``c.prefix`` applied, the step's deadline kept."""
        base = self.action.base
        extra = tuple((str(k), str(v)) for k, v in (env or {}).items())
        for key, _ in extra:
            if not _ENV_NAME.match(key):
                raise ValueError(f"c.run(env=...): {key!r} is not a valid environment variable name")
        return Command(script=" && ".join([*self.command_prefixes, script]), cwd=self._cwd(base.cwd),
                       prefix=base.prefix, env=base.env + extra, timeout=self._timeout(timeout),
                       redactor=base.redactor)

    def _cwd(self, code_path: str | None) -> str | None:
        """``c.cd(...)`` paths: relative ones inside the code path, ``/...`` and ``~...`` as written."""
        cwd = code_path
        for path in map(str, self.command_cwds):
            cwd = path if path.startswith("~") or not cwd else posixpath.join(cwd, path)
        return cwd

    def _timeout(self, asked: float | None) -> float | None:
        if self.deadline is None:
            return asked
        left = max(0.1, self.deadline - time.monotonic())
        return min(asked, left) if asked else left

    def _execute(self, cmd: Command):
        self._enter()
        try:
            self.sink.command_started(cmd.display())
            return self.backend.run(cmd, self.sink.output)
        except Exception as e:
            self._set(backend_error=e)  # the host or connection failed, not the task: the engine classifies it
            raise
        finally:
            self._leave()

    def _enter(self) -> None:
        with self._guard:
            if self._stopped is not None:
                raise TaskStopped(self._stopped)
            self._set(busy=True)

    def _leave(self) -> None:
        with self._guard:
            self._set(busy=False)

    def stop(self, why: str) -> bool:
        """No more commands from this task; True if one is running right now."""
        with self._guard:
            self._set(_stopped=why)
            return self.busy

    # -- files and steps -------------------------------------------------------------------------
    def put(self, local, remote: str, mode: int = 0o644) -> None:
        """Upload a local file (a path, bytes, or a file object) to ``remote`` (relative: in the code path),
        atomically, through the same executor as the ``secrets`` step."""
        if isinstance(local, (bytes, bytearray)):
            content, source = bytes(local), "<bytes>"
        elif hasattr(local, "read"):
            data = local.read()
            content, source = (data.encode() if isinstance(data, str) else data), getattr(local, "name", "<file>")
        else:
            content, source = Path(os.fspath(local)).read_bytes(), os.fspath(local)
        self.perform(Upload(source=str(source), remote=remote_path(self.action.base.cwd or self.action.host.path, remote), mode=mode,
                            content=content))

    def run_step(self, name: str) -> None:
        """Run a built-in (or custom, or task) step of the stage on this host, as ``pampa deploy`` would."""
        stage = self.action.stage
        if name not in known_steps(stage):
            raise ValueError(f"c.run_step({name!r}): unknown step; steps of stage {stage.name}: "
                             f"{', '.join(known_steps(stage))}")
        ctx = step_context(stage, self.action.host, self.action.layout)
        step = build_step(stage, ctx, name, self.action.roles, self.config.pampa.kind, self.config.pampa.target)
        for action in step.actions:
            if isinstance(action, CallTask):
                action = replace(action, timeout=self._timeout(action.timeout))
            elif isinstance(action, Run):
                action = replace(action, command=replace(action.command, timeout=self._timeout(action.command.timeout)))
            self.perform(action)

    def perform(self, action) -> None:
        """Carry out one action (``steps/actions.py``) with the engine's executor; raises ``StepFailed``."""
        if not isinstance(action, CallTask):
            self._enter()
            try:
                return self.executor(action, self.backend, self.sink)
            finally:
                self._leave()
        return self.executor(action, self.backend, self.sink)
