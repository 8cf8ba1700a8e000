"""Every step as an Invoke task that takes a Fabric ``Connection`` (or any invoke ``Context``).

The top-level ``fabfile.py`` exposes these to ``fab -H host1,host2 TASK``. Settings
come from a stage file (``--stage production``) or from the command line
(``--app``, ``--repo``, ``--branch``, ``--path``). The commands are the very ones
``pampa plan`` shows, built by the same step builders.
"""
from __future__ import annotations

import sys

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from .engine.backend import LineSplitter
from .engine.executor import StepFailed, perform
from .engine.results import CommandResult
from .errors import PampaError
from .inventory import load_stage, stage_from_mapping
from .inventory.model import Host
from .plan import host_steps
from .sequences import STEP_ORDER
from .steps.actions import Command, ReportVersion, Upload


class ContextBackend:
    """The execution interface over an invoke Context / Fabric Connection (``c.run``, ``c.sftp``)."""

    def __init__(self, c: Context):
        self.c = c
        self.name = getattr(c, "host", "local")

    def connect(self) -> None:
        pass

    def run(self, command: Command, on_line=None) -> CommandResult:
        result = self.c.run(command.line(), warn=True, hide=True, in_stream=False, timeout=command.timeout)
        out, err = LineSplitter("stdout", command, on_line), LineSplitter("stderr", command, on_line)
        out.feed(result.stdout.encode())
        err.feed(result.stderr.encode())
        return CommandResult(result.exited, out.text(), err.text())

    def put(self, upload: Upload) -> None:
        if hasattr(self.c, "sftp"):
            from .engine.ssh import sftp_put
            sftp_put(self.c.sftp(), upload)
        else:
            from .engine.local import LocalBackend
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
        raise PampaError("give --stage NAME (a file in stages/) or at least --app NAME (and --repo URL)")
    data = {"app": app, "repo": repo or "", "hosts": {"cli": {"roles": ["kepler"]}}, **overrides}
    return stage_from_mapping(data)


def _host(c, stage, role) -> tuple[Host, tuple[str, ...]]:
    address = getattr(c, "host", "localhost")
    for host in stage.hosts:
        if address in (host.name, host.address):
            return host, tuple([role] if role else host.roles)
    template = stage.hosts[0]
    roles = tuple([role] if role else template.roles)
    from dataclasses import replace
    return replace(template, name=address, address=address, roles=roles), roles


def _secure(c, stage) -> None:
    """Replace Fabric's AutoAddPolicy on a not-yet-open connection: known_hosts is enforced here too."""
    if getattr(c, "client", None) is None or getattr(c, "is_connected", True):
        return
    import os
    from .engine.hostkeys import secure
    from .engine.ssh import SSHSettings
    trust = True if os.environ.get("PAMPA_ACCEPT_NEW_HOST_KEYS") == "1" else None
    settings = SSHSettings.from_stage(stage, accept_new=trust)
    secure(c, settings.known_hosts, settings.accept_new)


def _say(text: str) -> None:
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


def run_steps(c, names, stage=None, stages="stages", app=None, repo=None, branch=None, path=None, role=None):
    """Run the named steps (in sequence order) for this connection's host; raise Exit on failure.

    Actions run through ``engine.executor.perform``, the very executor ``pampa deploy`` uses.
    """
    try:
        st = _stage(stage, stages, app, repo, branch, path)
        host, roles = _host(c, st, role)
        steps = [s for s in host_steps(st, host, roles) if names is None or s.name in names]
    except PampaError as e:
        raise Exit(f"pampa: error: {e}", code=int(e.exit_code)) from None
    _secure(c, st)
    backend = ContextBackend(c)
    sink = _FabSink(host, st, roles)
    for step in steps:
        _say(f"[{host.name}] {step.name}")
        for action in step.actions:
            try:
                perform(action, backend, sink)
            except StepFailed as e:
                code = f" (exit {e.exit_code})" if e.exit_code is not None else ""
                raise Exit(f"[{host.name}] {step.name} failed{code}: {e.stderr or e.message}", code=1) from None


_HELP = {"stage": "stage name (a file in stages/)", "stages": "stages folder (default ./stages)",
         "app": "app name, without a stage", "repo": "git URL, without a stage", "branch": "branch override",
         "path": "code path override", "role": "role whose sequence (or steps) to run"}


def _step_task(name: str):
    def body(c, stage=None, stages="stages", app=None, repo=None, branch=None, path=None, role=None):
        run_steps(c, [name], stage, stages, app, repo, branch, path, role)

    body.__name__ = name
    body.__doc__ = f"Run the {name} step on each -H host (settings from --stage or --app/--repo)."
    return task(body, help=_HELP)


@task(help=_HELP)
def deploy(c, stage=None, stages="stages", app=None, repo=None, branch=None, path=None, role=None):
    """Run the whole sequence of a role (--role) or of the host's roles in the stage, on each -H host."""
    run_steps(c, None, stage, stages, app, repo, branch, path, role)


def collection() -> Collection:
    ns = Collection()
    ns.add_task(deploy)
    for name in STEP_ORDER:
        if name != "open_gate":
            ns.add_task(_step_task(name), name=name)
    return ns


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: fab -H host TASK (see fabfile.py)")
