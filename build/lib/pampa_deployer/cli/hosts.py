"""Running one read-only command on many hosts in parallel (status, check, rollback's preflight)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

from ..errors import ConnectError
from ..inventory.model import Host

T = TypeVar("T")


def each_host(pool, hosts: Iterable[Host], work: Callable[[Host, object], T], parallel: int = 32
              ) -> dict[str, T | ConnectError]:
    """``work(host, backend)`` on every host at once; a host that cannot connect maps to its ConnectError."""
    hosts = list(hosts)

    def one(host: Host):
        try:
            backend = pool.connect(host)
        except ConnectError as e:
            return e
        return work(host, backend)

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as ex:
        return dict(zip([h.name for h in hosts], ex.map(one, hosts)))
