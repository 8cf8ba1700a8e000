"""Every step as an Invoke task that takes a Fabric ``Connection`` (or any invoke ``Context``).

The top-level ``fabfile.py`` exposes these to ``fab -H host1,host2 TASK``. Settings
come from a stage file (``--stage production``) or from the command line
(``--app``, ``--repo``, ``--branch``, ``--path``). The commands are the very ones
``pampa plan`` shows, built by the same step builders.

The same tasks can be called from a step written in Python (``migrate(c)`` inside your
own task): given pampa's ``c`` they run that step on the task's host, through the
deploy's own executor. ``collection(your_task, ...)`` adds your tasks for ``fab``, each
with ``--stage``, so ``fab -H host your-task --stage production`` gives it the same ``c``
as ``pampa deploy`` does.
"""
from __future__ import annotations

import inspect
import os
import sys
from dataclasses import replace

from invoke import Collection, Context, Task, task
from invoke.exceptions import CommandTimedOut, Exit

from .engine.backends.base import LineSplitter
from .engine.executor import perform
from .engine.results import CommandResult, StepFailed
from .errors import ConfigError, PampaError, UsageError, quiet_libraries
from .inventory import load_stage, stage_from_mapping
from .inventory.model import Host
from .inventory.tasks import PyTask
from .plan import host_steps, release_stamp, step_context
from .sequences import STEP_ORDER
from .steps.actions import Command, ReportVersion, Upload
from .steps.python import call_task
from .steps.releases import layout_of


class ContextBackend:
    """The execution interface over an invoke Context / Fabric Connection (``c.run``, ``c.sftp``)."""

    def __init__(self, c: Context):
        self.c = c
        self.name = getattr(c, "host", "local")

    def connect(self) -> None:
        pass

    def run(self, command: Command, on_line=None) -> CommandResult:
        try:
            result = self.c.run(command.line(), warn=True, hide=True, in_stream=False, timeout=command.timeout)
        except CommandTimedOut as e:
            return CommandResult(124, command.redactor.mask(e.result.stdout),
                                 command.redactor.mask(e.result.stderr) + f"\n[pampa] timed out after {e.timeout:g}s")
        out, err = LineSplitter("stdout", command, on_line), LineSplitter("stderr", command, on_line)
        out.feed(result.stdout.encode())
        err.feed(result.stderr.encode())
        return CommandResult(result.exited, out.text(), err.text())

    def put(self, upload: Upload) -> None:
        if hasattr(self.c, "sftp"):
            from .engine.backends.ssh import sftp_put
            sftp_put(self.c.sftp(), upload)
        else:
            from .engine.backends.local import LocalBackend
            LocalBackend(self.name).put(upload)

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def _stage(stage, stages, app, repo, branch, path):
    overrides = {k: v for k, v in {"branch": branch, "path": path}.items() if v}
    if stage:
        return load_stage(stage, stages, overrides=overrides)
    if not app:
        raise UsageError("fab: give --stage NAME (a file in stages/) or at least --app NAME (and --repo URL)")
    data = {"app": app, "repo": repo or "", "hosts": {"cli": {"roles": ["kepler"]}}, **overrides}
    return stage_from_mapping(data)


def _wanted_roles(stage, role, roles) -> tuple[str, ...]:
    """``--role`` (one) and ``--roles`` (comma-separated, as for ``pampa``), checked against the stage."""
    from .inventory.validate import suggest
    wanted = [r.strip() for r in f"{role or ''},{roles or ''}".split(",") if r.strip()]
    for name in wanted:
        if name not in stage.roles:
            raise ConfigError(f"--roles: unknown role '{name}'{suggest(name, stage.roles)}; "
                              f"known: {', '.join(stage.roles)}")
    return tuple(dict.fromkeys(wanted))


def _host(c, stage, wanted: tuple[str, ...]) -> tuple[Host, tuple[str, ...], bool]:
    """The stage host ``-H`` names (by name or address), or the stage's settings for an outside host."""
    address = c.host
    for host in stage.hosts:
        if address in (host.name, host.address):
            return host, wanted or host.roles, True
    template = stage.hosts[0]
    roles = wanted or template.roles
    from dataclasses import replace
    return replace(template, name=address, address=address, roles=roles), roles, False


def _connection(c, host: Host, matched: bool):
    """A stage host named by ``-H kepler-1`` is reached at the stage's address, port, user and key."""
    if not matched or (c.host, c.port) == (host.address, host.port) and not host.key and not host.user:
        return c
    from fabric import Connection
    kwargs = dict(c.connect_kwargs or {})
    if host.key:
        import os
        kwargs["key_filename"] = [os.path.expanduser(host.key), *(kwargs.get("key_filename") or [])]
    return Connection(host.address, user=host.user or c.user, port=host.port, config=c.config,
                      connect_timeout=c.connect_timeout, connect_kwargs=kwargs)


def _secure(c, stage):
    """Replace Fabric's AutoAddPolicy on a not-yet-open connection: known_hosts is enforced here too."""
    import os

    from .engine.backends.ssh import SSHSettings
    trust = True if os.environ.get("PAMPA_ACCEPT_NEW_HOST_KEYS") == "1" else None
    settings = SSHSettings.from_stage(stage, accept_new=trust)
    settings.accept_hint = "set PAMPA_ACCEPT_NEW_HOST_KEYS=1 (or ssh.accept_new_host_keys: true) to trust it on first use"
    if getattr(c, "client", None) is None or getattr(c, "is_connected", True):
        return settings
    from .engine.backends.hostkeys import secure
    secure(c, settings.known_hosts, settings.accept_new)
    return settings


def _open(c, host: Host, settings) -> None:
    """Connect now, so a refused port or an unknown host key is one classified line, not a traceback."""
    if getattr(c, "is_connected", True):
        return
    from .engine.backends.ssh import classify
    try:
        c.open()
    except Exception as e:  # noqa: BLE001 - classified into one line
        # Named by where the connection really went (-H user@host:2222), not the stage's defaults.
        where = replace(host, address=c.host, port=c.port or host.port, user=c.user or host.user)
        raise Exit(f"pampa: error: {classify(e, where, settings).message}", code=1) from None


def _say(text: str) -> None:
    from .engine.tasks import capture
    with capture.direct():  # also when said from a Python step's thread: never captured as its output
        print(text, flush=True)


class _FabSink:
    """The shared executor's sink for ``fab``: prints ``[host] ...`` lines, reports through one client."""

    def __init__(self, host: Host, stage, roles: tuple[str, ...]):
        self.host, self.stage, self.roles = host, stage, roles
        self.client = None

    def command_started(self, display: str) -> None:
        _say(f"[{self.host.name}]   $ {display}")

    def output(self, stream: str, line: str) -> None:
        _say(f"[{self.host.name}]   {line}")

    def gate_reached(self) -> None:
        _say(f"[{self.host.name}]   gate: fab runs hosts one by one; use `pampa deploy` for the kepler gate")

    def report_version(self, action: ReportVersion, revision: str) -> None:
        if not action.url:
            return
        if self.client is None:
            from .accesspoint.client import AccessPointClient
            self.client = AccessPointClient.from_stage(self.stage)
        self.client.report_version(self.host.name, self.stage.name, revision, self.roles, None)

    def aborted(self) -> bool:
        return False  # Ctrl-C reaches fab's main thread as KeyboardInterrupt


def run_steps(c, names, stage=None, stages="stages", app=None, repo=None, branch=None, path=None, role=None,
              roles=None):
    """Run the named steps (in sequence order) for this connection's host; raise Exit on failure.

    Actions run through ``engine.executor.perform``, the very executor ``pampa deploy`` uses.
    Given pampa's ``c`` (a step written in Python), the steps run on that task's host instead.
    Otherwise ``c`` must be a Fabric ``Connection``: a plain invoke ``Context`` (``fab`` without ``-H``)
    would run the steps, code resets and service restarts included, on this very machine; it is refused.
    """
    from .engine.tasks.context import TaskContext
    if isinstance(c, TaskContext):
        if names is None:
            raise TypeError("deploy(c) cannot run inside a step; call the steps you need, e.g. migrate(c)")
        for name in names:
            c.run_step(name)
        return
    c, st, host, roles = _target(c, stage, stages, app, repo, branch, path, role, roles)
    try:
        steps = [s for s in host_steps(st, host, roles) if names is None or s.name in names]
    except PampaError as e:
        raise Exit(f"pampa: error: {str(e).splitlines()[0]}", code=int(e.exit_code)) from None
    backend = ContextBackend(c)
    sink = _FabSink(host, st, roles)
    for step in steps:
        _say(f"[{host.name}] {step.name}")
        for action in step.actions:
            try:
                perform(action, backend, sink)
            except StepFailed as e:
                from .render.telling import telling_line
                code = f" (exit {e.exit_code})" if e.exit_code is not None else ""
                raise Exit(f"pampa: error: [{host.name}] {step.name} failed{code}: "
                           f"{telling_line(e.stderr) or e.message}", code=1) from None


def _target(c, stage, stages, app, repo, branch, path, role, roles):
    """``fab -H``'s host as the stage knows it: (connection, stage, host, roles); one line on error."""
    quiet_libraries()
    if not hasattr(c, "host"):
        raise Exit("pampa: error: fab: give the hosts with -H host1,host2; pampa's tasks never run on "
                   "this machine", code=2)
    try:
        st = _stage(stage, stages, app, repo, branch, path)
        host, roles, matched = _host(c, st, _wanted_roles(st, role, roles))
    except PampaError as e:
        raise Exit(f"pampa: error: {str(e).splitlines()[0]}", code=int(e.exit_code)) from None
    c = _connection(c, host, matched)
    _open(c, host, _secure(c, st))
    return c, st, host, roles


_HELP = {"stage": "stage name (a file in stages/)", "stages": "stages folder (default ./stages)",
         "app": "app name, without a stage", "repo": "git URL, without a stage", "branch": "branch override",
         "path": "code path override", "role": "role whose sequence (or steps) to run",
         "roles": "roles whose sequences to run, comma-separated (as `pampa --roles`)"}


def run_task(c, original: Task, stage=None, stages="stages", app=None, repo=None, branch=None, path=None,
             role=None, roles=None) -> None:
    """Call a step written in Python on this connection's host with the ``c`` ``pampa deploy`` gives it."""
    c, st, host, roles = _target(c, stage, stages, app, repo, branch, path, role, roles)
    source = os.path.relpath(inspect.getsourcefile(original.body) or "?")
    timeout = ((st.setting("steps") or {}).get(original.name) or {}).get("timeout")
    pytask = PyTask(name=original.name, source=source, doc=inspect.getdoc(original.body) or "", body=original.body)
    layout = layout_of(st.settings, host.path, release_stamp())  # releases strategy: the task works in current
    ctx = step_context(st, host, replace(layout, builds=False) if layout is not None else None)
    action = call_task(ctx, pytask, st, roles, timeout=timeout)[0]
    _say(f"[{host.name}] {original.name}")
    try:
        perform(action, ContextBackend(c), _FabSink(host, st, roles))
    except StepFailed as e:
        code = f" (exit {e.exit_code})" if e.exit_code is not None else ""
        raise Exit(f"pampa: error: [{host.name}] {original.name} failed{code}: {e.message}", code=1) from None


def _builtin(t: Task) -> Task:
    t.pampa_builtin = True  # a tasks module that includes this collection: not a step written in Python
    return t


def _step_task(name: str):
    def body(c, stage=None, stages="stages", app=None, repo=None, branch=None, path=None, role=None, roles=None):
        run_steps(c, [name], stage, stages, app, repo, branch, path, role, roles)

    body.__name__ = name
    body.__doc__ = f"Run the {name} step on each -H host (settings from --stage or --app/--repo)."
    return _builtin(task(body, help=_HELP))


def _fab_task(original: Task) -> Task:
    """``original`` for ``fab``: the same function, given pampa's ``c`` built from ``--stage``."""
    def body(c, stage=None, stages="stages", app=None, repo=None, branch=None, path=None, role=None, roles=None):
        run_task(c, original, stage, stages, app, repo, branch, path, role, roles)

    body.__name__ = original.name
    body.__doc__ = inspect.getdoc(original.body)
    wrapped = task(body, help=_HELP)
    wrapped.pampa_task = original  # pampa's task loader calls the original with its own ``c``
    return wrapped


@task(help=_HELP)
def deploy(c, stage=None, stages="stages", app=None, repo=None, branch=None, path=None, role=None, roles=None):
    """Run the whole sequence of a role (--role/--roles) or of the host's roles in the stage, on each -H host."""
    run_steps(c, None, stage, stages, app, repo, branch, path, role, roles)


_builtin(deploy)

#: The built-in steps as tasks: ``fab -H host migrate --stage production``, or ``migrate(c)`` in your own step.
STEP_TASKS: dict[str, Task] = {name: _step_task(name) for name in STEP_ORDER if name != "open_gate"}
git_fetch, git_reset, secrets, migrate, bundle = (STEP_TASKS[n] for n in
                                                  ("git_fetch", "git_reset", "secrets", "migrate", "bundle"))
restart_puma, restart_processes, restart_workers, report_version = (
    STEP_TASKS[n] for n in ("restart_puma", "restart_processes", "restart_workers", "report_version"))


def collection(*tasks: Task) -> Collection:
    """pampa's tasks for ``fab``, plus ``tasks`` (your steps written in Python), each taking ``--stage``."""
    ns = Collection()
    ns.add_task(deploy)
    for name, t in STEP_TASKS.items():
        ns.add_task(t, name=name)
    for t in tasks:
        ns.add_task(_fab_task(t))
    return ns


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: fab -H host TASK (see fabfile.py)")
