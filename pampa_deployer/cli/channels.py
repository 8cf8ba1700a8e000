"""Connections for commands that must be stoppable on the host (``exec``, ``logs``).

The same connections, host keys and ssh_config as a deploy (``SSHSettings.from_stage``),
but each command gets a channel of its own instead of the shared shell session: a
stoppable command watches its channel's stdin (see ``commands/watch.py``).
"""
from __future__ import annotations

from ..engine.backends.pool import BackendPool
from ..engine.backends.ssh import SSHBackend, SSHSettings


def channel_pool(stage, args) -> BackendPool:
    settings = SSHSettings.from_stage(stage, accept_new=True if getattr(args, "accept_new_host_keys", False)
                                      else None)
    settings.shell_session = False
    return BackendPool(lambda host: SSHBackend(host, settings))
