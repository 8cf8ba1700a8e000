"""What the releases tests (push and pull) read off a host: its release root, `current`, releases, page."""
from __future__ import annotations

import os
import urllib.request

ROOT = "rel"  # ~/rel/APP on each host: apart from the in-place checkout the other tests use
WEB = {"roles": ["kepler", "euler"], "url": "http://{address}:9292/", "contains": "revision={revision}",
       "retries": 20, "interval": 0.5, "timeout": 3}


def root(fleet, name: str):
    return fleet.home(name) / ROOT / fleet.app


def current(fleet, name: str) -> str:
    return os.readlink(root(fleet, name) / "current")


def releases(fleet, name: str) -> list[str]:
    return sorted(os.listdir(root(fleet, name) / "releases"))


def serving(fleet, name: str) -> str:
    with urllib.request.urlopen(f"http://{fleet.host(name).address}:9292/", timeout=10) as answer:
        return answer.read().decode()
