"""Local hooks: executables in ``stages/hooks/`` run on the operator's machine around a deploy.

``pre-deploy`` / ``pre-rollback`` run before anything is contacted; a non-zero exit stops the
run (exit 4, nothing changed). ``post-deploy`` / ``post-rollback`` run after a successful
run, ``on-failure`` after one that failed or was interrupted; their failure is a warning.
The run is described in ``PAMPA_*`` environment variables (``hook_env``).
Compare ``.kamal/hooks`` and Capistrano's ``before``/``after``.
"""
from __future__ import annotations

import difflib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ...errors import ConfigError, Refused
from ...inventory.yamlfile import display_path

NAMES = ("pre-deploy", "post-deploy", "pre-rollback", "post-rollback", "on-failure")

#: A hook file with one of these endings is switched off on purpose (as git's ``pre-commit.sample``).
OFF_SUFFIXES = (".sample", ".example", ".disabled", ".off")


def meant_as(filename: str) -> str | None:
    """The hook a file's name is close to when it is not exactly one (``pre_deploy``, ``pre-deploy.sh``,
    ``Pre-Deploy``); None for an exact name, a file switched off on purpose, or an unrelated file."""
    if filename in NAMES or filename.endswith(OFF_SUFFIXES) or filename.startswith("."):
        return None
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    normal = stem.lower().replace("_", "-").replace(" ", "-")
    if normal in NAMES:
        return normal
    close = difflib.get_close_matches(normal, NAMES, n=1, cutoff=0.85)
    return close[0] if close else None


@dataclass(frozen=True)
class HookResult:
    name: str
    path: str
    exit_code: int
    seconds: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def hook_env(stage: str, kind: str, branch: str, user: str, hosts: list[str], revision: str | None = None,
             result: str | None = None, failed_hosts: list[str] | None = None, report: str | None = None,
             run_dir: str | None = None, duration: float | None = None, message: str | None = None) -> dict[str, str]:
    """The ``PAMPA_*`` variables a hook sees; values not yet known are empty strings."""
    return {"PAMPA_STAGE": stage, "PAMPA_KIND": kind, "PAMPA_BRANCH": branch or "",
            "PAMPA_REVISION": revision or "", "PAMPA_USER": user, "PAMPA_HOSTS": ",".join(hosts),
            "PAMPA_RESULT": result or "", "PAMPA_FAILED_HOSTS": ",".join(failed_hosts or []),
            "PAMPA_REPORT": report or "", "PAMPA_RUN_DIR": run_dir or "",
            "PAMPA_DURATION": "" if duration is None else f"{duration:.1f}", "PAMPA_MESSAGE": message or ""}


class Hooks:
    """The hooks of one stages folder; ``run`` does nothing for a hook that does not exist."""

    def __init__(self, folder: Path, timeout: float = 300.0, on_line: Callable[[str, str], None] | None = None):
        self.folder = Path(folder).resolve()
        self.timeout = timeout
        self.on_line = on_line or (lambda name, line: None)

    def path(self, name: str) -> Path:
        return self.folder / name

    def check_names(self) -> None:
        """A hook under a name pampa does not run (``pre_deploy``) is a guard that never guards: refuse the run
        (exit 2) naming the file and the name to give it, rather than deploy without it."""
        try:
            files = sorted(p.name for p in self.folder.iterdir() if p.is_file())
        except OSError:
            return  # no hooks folder: no hooks
        for name in files:
            meant = meant_as(name)
            if meant is not None and not (self.folder / meant).exists():
                raise ConfigError(f"{display_path(self.path(name))}: not a hook name, so it would never run; rename it to "
                                  f"{meant} (hooks are named exactly {', '.join(NAMES)}; add .sample to keep it off)")

    def run(self, name: str, env: Mapping[str, str]) -> HookResult | None:
        """Run hook ``name`` with ``env`` added to the environment; its output goes to ``on_line``."""
        path = self.path(name)
        if not path.exists():
            return None
        if not os.access(path, os.X_OK):
            # Not skipped: a pre-* hook is a guard, so one that cannot run stops the run like a failing one.
            self.on_line(name, f"{path} is not executable; `chmod +x` it (it counts as failed: exit 126)")
            return HookResult(name, str(path), 126, 0.0)
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen([str(path)], env={**os.environ, **env, "PAMPA_HOOK": name},
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=self.folder.parent.parent)
        except OSError as e:  # e.g. a bad #! line
            self.on_line(name, f"cannot run {path}: {e.strerror or e}")
            return HookResult(name, str(path), 126, 0.0)
        reader = threading.Thread(target=self._pump, args=(name, proc), daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self._kill(proc)
        except BaseException:  # Ctrl-C: the hook and everything it started stop with pampa
            self._kill(proc)
            raise
        reader.join(5)
        return HookResult(name, str(path), proc.returncode, time.monotonic() - t0, timed_out)

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            self.on_line(name, raw.decode("utf-8", "replace").rstrip("\n"))

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                continue

    def pre(self, kind: str, env: Mapping[str, str]) -> None:
        """Run ``pre-KIND``; raise ``Refused`` when it fails, before anything was contacted."""
        self.check_names()
        result = self.run(f"pre-{kind}", env)
        if result is not None and not result.ok:
            why = f"timed out after {self.timeout:g}s" if result.timed_out else f"exited {result.exit_code}"
            raise Refused(f"hook {result.path} {why}; the {kind} did not start and nothing was changed")

    def post(self, kind: str, ok: bool, env: Mapping[str, str]) -> HookResult | None:
        """Run ``post-KIND`` after a successful run, ``on-failure`` otherwise; never raises for its exit."""
        return self.run(f"post-{kind}" if ok else "on-failure", env)
