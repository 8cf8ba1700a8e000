"""A load client for the fleet's puma hosts: what the app's users would see during a deploy.

Each host gets ``GET /`` at a steady rate, open loop (a slow answer never delays the next request), each
on a new TCP connection (``Connection: close``, no keep-alive), so a refused connection or a reset is
seen, not hidden behind a pooled one. Every request is one ``Sample``: when it started and ended, its
outcome (``ok``, ``refused``, ``reset``, ``5xx``, ``timeout``, ``error``) and the revision the body
named. ``Load`` runs the requests on its own thread with an asyncio loop; ``summary`` turns samples
into counts, the longest failure window per host and latency percentiles. Used by the fleet tests
(tests/test_zero_downtime_fleet.py) and the downtime benchmark (bench/downtime.py).
"""
from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field

OK, REFUSED, RESET, SERVER_ERROR, TIMEOUT, ERROR = "ok", "refused", "reset", "5xx", "timeout", "error"
FAILURES = (REFUSED, RESET, SERVER_ERROR, TIMEOUT, ERROR)

_REVISION = re.compile(rb"revision=([0-9a-f]{7,40})")
_MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Sample:
    host: str
    start: float  # time.monotonic()
    end: float
    outcome: str
    revision: str | None = None

    @property
    def failed(self) -> bool:
        return self.outcome != OK

    @property
    def latency(self) -> float:
        return self.end - self.start


async def _exchange(address: str, port: int, opened: list) -> bytes:
    reader, writer = await asyncio.open_connection(address, port)
    opened.append(writer)
    writer.write(f"GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = b""
    while len(data) < _MAX_BODY:
        more = await reader.read(_MAX_BODY - len(data))
        if not more:
            break
        data += more
    return data


async def _get(address: str, port: int, timeout: float) -> tuple[str, str | None]:
    """One request on a fresh connection: (outcome, revision named in the body)."""
    opened: list = []
    try:
        data = await asyncio.wait_for(_exchange(address, port, opened), timeout)
    except ConnectionRefusedError:
        return REFUSED, None
    except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError):
        return RESET, None
    except asyncio.TimeoutError:
        return TIMEOUT, None
    except OSError:
        return ERROR, None
    finally:
        for writer in opened:
            writer.close()
    status = data.split(b"\r\n", 1)[0].split(b" ")
    if len(status) < 2 or not status[1].isdigit():
        return RESET, None  # closed before a status line: the request was cut off
    code = int(status[1])
    found = _REVISION.search(data)
    revision = found.group(1).decode() if found else None
    if code >= 500:
        return SERVER_ERROR, revision
    return (OK if code == 200 else ERROR), revision


@dataclass
class Load:
    """Requests to ``targets`` (name -> (address, port)) at ``rate`` per second each, until ``stop``."""

    targets: dict[str, tuple[str, int]]
    rate: float = 20.0
    timeout: float = 10.0
    samples: list[Sample] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Load":
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="load", daemon=True)
        self._thread.start()
        return self

    def mark(self, name: str) -> None:
        """Remember when something happened (``deploy``, ``deployed``), to split the samples."""
        self.marks[name] = time.monotonic()

    def stop(self) -> list[Sample]:
        """Stop sending; wait for the requests in flight (each ends within ``timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 10)
        return list(self.samples)

    def __enter__(self) -> "Load":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _main(self) -> None:
        await asyncio.gather(*(self._host(name, *where) for name, where in self.targets.items()))

    async def _host(self, name: str, address: str, port: int) -> None:
        period = 1.0 / self.rate
        cap = int(self.rate * self.timeout) + 10  # requests in flight per host, at most
        pending: set[asyncio.Task] = set()
        next_at = time.monotonic()
        while not self._stop.is_set():
            if len(pending) < cap:
                task = asyncio.create_task(self._one(name, address, port))
                pending.add(task)
                task.add_done_callback(pending.discard)
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if pending:
            await asyncio.wait(pending)

    async def _one(self, name: str, address: str, port: int) -> None:
        start = time.monotonic()
        outcome, revision = await _get(address, port, self.timeout)
        self.samples.append(Sample(name, start, time.monotonic(), outcome, revision))


def percentile(values: list[float], p: float) -> float | None:
    """The ``p``-th percentile (nearest rank), or None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def longest_failure_window(samples: list[Sample]) -> float:
    """Seconds from the start of the first to the end of the last request of the longest run of failures."""
    longest, first, last = 0.0, None, None
    for s in sorted(samples, key=lambda s: s.start):
        if s.failed:
            first = s.start if first is None else first
            last = s.end if last is None else max(last, s.end)
            longest = max(longest, last - first)
        else:
            first = last = None
    return longest


@dataclass(frozen=True)
class Summary:
    sent: int
    failed: dict[str, int]  # outcome -> count, failures only
    window: dict[str, float]  # host -> longest failure window (s)
    p50_before: float | None
    p99_before: float | None
    p50_during: float | None
    p99_during: float | None
    revisions: dict[str, dict[str, int]]  # host -> revision -> answers

    @property
    def failures(self) -> int:
        return sum(self.failed.values())


def summary(samples: list[Sample], start: float, end: float) -> Summary:
    """Counts, windows and latencies; "before" is what ended before ``start``, "during" what started in
    [``start``, ``end``]."""
    failed: dict[str, int] = {}
    for s in samples:
        if s.failed:
            failed[s.outcome] = failed.get(s.outcome, 0) + 1
    hosts = sorted({s.host for s in samples})
    before = [s.latency for s in samples if s.end < start and not s.failed]
    during = [s.latency for s in samples if start <= s.start <= end and not s.failed]
    revisions: dict[str, dict[str, int]] = {h: {} for h in hosts}
    for s in samples:
        if s.revision:
            revisions[s.host][s.revision] = revisions[s.host].get(s.revision, 0) + 1
    return Summary(sent=len(samples), failed=failed,
                   window={h: longest_failure_window([s for s in samples if s.host == h]) for h in hosts},
                   p50_before=percentile(before, 50), p99_before=percentile(before, 99),
                   p50_during=percentile(during, 50), p99_during=percentile(during, 99), revisions=revisions)
