"""The connection pool: one backend per host for a command's whole life, closed on the way out.

``with open_pool(stage) as pool:`` is how deploy, rollback, check, status and the lock
commands all reach hosts, so every connection is closed however the command ends.
``each_host`` runs one read-only query on many hosts at once (status, check, rollback's target).
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

from ...errors import ConnectError
from ...inventory.model import Host, Stage
from .base import Backend


class BackendPool:
    """One backend (one connection) per host for the whole run, created by ``factory``."""

    def __init__(self, factory: Callable[[Host], Backend]):
        self.factory = factory
        self.backends: dict[str, Backend] = {}
        self.connected: set[str] = set()
        self._lock = threading.Lock()
        self._connecting: dict[str, threading.Lock] = {}
        self._pinned: set[str] = set()

    def get(self, host: Host) -> Backend:
        with self._lock:
            if host.name not in self.backends:
                self.backends[host.name] = self.factory(host)
            return self.backends[host.name]

    def connect(self, host: Host) -> Backend:
        backend = self.get(host)
        with self._lock:
            host_lock = self._connecting.setdefault(host.name, threading.Lock())
        with host_lock:  # the preflight and the host's pipeline may ask at the same time
            if host.name not in self.connected:
                backend.connect()
                self.connected.add(host.name)
        return backend

    def pin(self, host: Host) -> None:
        """Keep this host's connection after its pipeline ends (the lock host: renew and release)."""
        self._pinned.add(host.name)

    def done(self, host: Host) -> None:
        """A host finished: close its connection now, so open connections (and paramiko's transport
        threads) stay bounded by --parallel instead of growing with the fleet."""
        with self._lock:
            if host.name in self._pinned or host.name not in self.backends:
                return
            backend = self.backends.pop(host.name)
            self.connected.discard(host.name)
        try:
            backend.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass

    def abort_all(self, bound: float = 10.0) -> None:
        """Abort every host at once (each stops its commands on its host), waiting at most ``bound`` s."""
        with self._lock:
            calls = [b.abort for b in self.backends.values()]
        _at_once(calls, "pampa-abort-host", bound)

    def hold_all(self, bound: float = 10.0) -> None:
        """The run is stopping: every host that was sent steps ahead starts none of them now (``hold``)."""
        with self._lock:
            calls = [b.hold for b in self.backends.values() if hasattr(b, "hold")]
        _at_once(calls, "pampa-hold-host", bound)

    def close_all(self) -> None:
        for backend in list(self.backends.values()):
            try:
                backend.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    def __enter__(self) -> "BackendPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close_all()


def _at_once(calls: list[Callable[[], None]], name: str, bound: float) -> None:
    """Each call in a thread of its own, all at once; wait at most ``bound`` seconds in all (a host that
    does not answer must not hold up the others, nor the run's end)."""
    threads = [threading.Thread(target=_quietly, args=(call,), name=name, daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + bound
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _quietly(call: Callable[[], None]) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001 - one bad host must not stop the rest
        pass


def open_pool(stage: Stage, accept_new: bool = False, dry_run: bool = False, channels: bool = False) -> BackendPool:
    """SSH backends for ``stage`` (``accept_new``: trust unknown host keys), or dry-run ones.

    ``channels``: each command gets an SSH channel of its own instead of the host's shell session, so a
    stoppable command can watch its channel's stdin (``commands/watch.py``: ``exec``, ``logs -f``).
    The SSH modules (paramiko, Fabric) are imported here, when a command really connects: `pampa plan`,
    `pampa --help` and a dry run never pay for them.
    """
    if dry_run:
        from .dryrun import DryRunBackend
        return BackendPool(lambda host: DryRunBackend(host.name))
    from .ssh import SSHBackend, SSHSettings
    settings = SSHSettings.from_stage(stage, accept_new=True if accept_new else None)
    if channels:
        settings.shell_session = False
    return BackendPool(lambda host: SSHBackend(host, settings))


T = TypeVar("T")


def each_host(pool: BackendPool, hosts: Iterable[Host], work: Callable[[Host, object], T], parallel: int = 32
              ) -> dict[str, T | ConnectError]:
    """``work(host, backend)`` on every host at once; a host that cannot connect, or stops answering or
    drops the connection during ``work``, maps to a ConnectError saying so."""
    from .liveness import ConnectionLost, HostUnresponsive
    hosts = list(hosts)

    def one(host: Host):
        try:
            backend = pool.connect(host)
        except ConnectError as e:
            return e
        try:
            return work(host, backend)
        except HostUnresponsive as e:
            return ConnectError(f"{host.name}: unresponsive ({e})", "unresponsive")
        except ConnectionLost as e:
            return ConnectError(f"{host.name}: connection lost ({e})", "connection lost")

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as ex:
        return dict(zip([h.name for h in hosts], ex.map(one, hosts)))
