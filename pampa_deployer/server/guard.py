"""Wrong credentials, counted per source address: a few are forgiven, a guessing client is slowed to a crawl.

Each address has a bucket of ``burst`` wrong credentials that refills one every ``refill`` seconds. An
address whose bucket is empty gets 429 for everything, without its credential being looked at, until
the bucket has one again: guessing a key from one address costs ``refill`` seconds a guess. A missing
credential is not a guess and is not counted.
"""
from __future__ import annotations

import time
from typing import Callable

#: Addresses remembered at once; beyond, the ones that guessed longest ago are forgotten.
MAX_SOURCES = 10_000


class Guard:
    def __init__(self, burst: int = 20, refill: float = 3.0, clock: Callable[[], float] = time.monotonic):
        self.burst, self.refill, self.clock = burst, refill, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when counted)

    def _tokens(self, peer: str, now: float) -> float:
        tokens, then = self._buckets.get(peer, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - then) / self.refill)

    def blocked(self, peer: str) -> float:
        """Seconds until ``peer`` may try a credential again (0: now)."""
        if peer not in self._buckets:
            return 0.0
        tokens = self._tokens(peer, self.clock())
        return 0.0 if tokens >= 1 else (1 - tokens) * self.refill

    def failed(self, peer: str) -> int:
        """Count one wrong credential from ``peer``; how many it may still try before being held back."""
        now = self.clock()
        tokens = self._tokens(peer, now) - 1
        if peer not in self._buckets and len(self._buckets) >= MAX_SOURCES:
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets.pop(peer, None)
        self._buckets[peer] = (tokens, now)  # re-inserted: the dict stays ordered by last guess
        return max(0, int(tokens))
