"""What one write changed, as the long polls need to know it: which requests, whether one appeared or moved,
which node tokens were replaced. The store makes one per write; PostgreSQL's NOTIFY carries it to the other
access point processes (``encode``/``decode``: the payload stays under NOTIFY's 8,000 bytes)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

#: Deploy ids and revoked tokens one notification names; a write touching more says "everything" instead.
MAX_NAMED = 200


@dataclass(frozen=True)
class Change:
    deploys: frozenset = frozenset()       # requests whose events or runs changed
    moved: bool = False                    # a request appeared, changed state, or a gate opened
    revoked: frozenset = field(default_factory=frozenset)  # (stage, node) whose token was replaced
    everything: bool = False               # re-check every poll (a lost notification, a reconnect)

    def __bool__(self) -> bool:
        return bool(self.deploys or self.moved or self.revoked or self.everything)


EVERYTHING = Change(moved=True, everything=True)


def encode(change: Change) -> str:
    if len(change.deploys) > MAX_NAMED or len(change.revoked) > MAX_NAMED or change.everything:
        return json.dumps({"all": True})
    return json.dumps({"d": sorted(change.deploys), "m": change.moved, "t": sorted(change.revoked)})


def decode(payload: str) -> Change:
    """Another process's change; anything unreadable means "re-check everything" (never a missed wake)."""
    try:
        body = json.loads(payload)
        if body.get("all"):
            return EVERYTHING
        return Change(frozenset(int(d) for d in body.get("d", [])), bool(body.get("m")),
                      frozenset((str(s), str(n)) for s, n in body.get("t", [])))
    except (ValueError, TypeError, AttributeError):
        return EVERYTHING
