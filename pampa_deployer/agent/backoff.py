"""Back-off for an unreachable access point: 1, 2, 4 ... 30 seconds, with jitter; never a busy loop."""
from __future__ import annotations

import random


class Backoff:
    def __init__(self, first: float = 1.0, cap: float = 30.0, rng: random.Random | None = None):
        self.first, self.cap = first, cap
        self.failures = 0
        self.rng = rng or random.Random()

    def next_delay(self) -> float:
        """The pause before the next try; grows with each failure (±20% so agents do not retry in step)."""
        base = min(self.cap, self.first * 2 ** self.failures)
        self.failures += 1
        return base * self.rng.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.failures = 0
