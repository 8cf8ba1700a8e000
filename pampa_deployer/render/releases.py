"""``pampa releases`` shown: hosts whose releases agree are one block; one line a release, newest first."""
from __future__ import annotations

import time

from .. import provenance
from ..commands.releases import Listing, Release
from .words import count

NAMES_SHOWN = 20


def to_prune(listing: Listing, keep: int) -> set[str]:
    """What the prune rule removes now: past the newest ``keep``, never current nor previous."""
    return {r.name for r in listing.releases[keep:] if r.name not in (listing.current, listing.previous)}


def flag(listing: Listing, r: Release, keep: int) -> str:
    if r.name == listing.current:
        words = "current"
    elif r.name == listing.previous:
        words = "previous: the rollback target"
    elif r.live:
        words = "was live"
    elif r.name == listing.built and (listing.current is None or r.name > listing.current):
        words = "never live: the last deploy built it and stopped before the switch"
    else:
        words = "never live"
    return words + ("; pruned by the next deploy or --prune" if r.name in to_prune(listing, keep) else "")


def _when(r: Release) -> str:
    at = r.built_at
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at)) if at is not None else "-"


def _names(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= NAMES_SHOWN else \
        ", ".join(names[:NAMES_SHOWN]) + f" and {len(names) - NAMES_SHOWN} more"


def group(listings: dict[str, Listing]) -> list[tuple[list[str], Listing]]:
    """Hosts whose listings are equal, in the order their first host comes."""
    groups: dict[Listing, list[str]] = {}
    for name, listing in listings.items():
        groups.setdefault(listing, []).append(name)
    return [(names, listing) for listing, names in groups.items()]


def block(names: list[str], listing: Listing, keep: int, root: str, builds: bool) -> list[str]:
    if not listing.exists or not listing.releases:
        why = f"{root} does not exist" if not listing.exists else f"{root}/releases is empty"
        return [f"{_names(names)}: no releases ({why}{'' if builds else '; their sequences build none'})"]
    width = max(len(r.name) for r in listing.releases)
    out = [f"{_names(names)}: {count(len(listing.releases), 'release')}"
           + (" (the oldest not read)" if listing.cut else "")]
    for r in listing.releases:
        out.append(f"  {r.name.ljust(width)}  {(r.revision or '?' * 12)[:12]}  {_when(r)}  {flag(listing, r, keep)}")
    if listing.current is None:
        out.append("  no current release: nothing is live here")
    return out


def to_dict(listing: Listing, keep: int) -> dict:
    prune = to_prune(listing, keep)
    return {"exists": listing.exists, "current": listing.current, "previous": listing.previous,
            "built": listing.built, "cut": listing.cut,
            "releases": [{"name": r.name, "revision": r.revision, "built_at": _iso(r.built_at), "live": r.live,
                          "current": r.name == listing.current, "previous": r.name == listing.previous,
                          "to_prune": r.name in prune} for r in listing.releases]}


def _iso(at: float | None) -> str | None:
    return None if at is None else provenance.utc(at)
