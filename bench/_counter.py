"""Run pampa with its SSH traffic counted (bench/counts.py): ``_counter.py OUT.json PAMPA-ARGS...``.

Wraps paramiko's channel opening, exec requests and SFTP client, and the shell session's writes
(each one a round trip: pampa then waits for what it sent; several commands sent ahead together are
one) and commands, counting by host address; writes the counts to OUT.json when pampa exits.
"""
from __future__ import annotations

import atexit
import json
import sys
import threading
from collections import Counter

import paramiko

from pampa_deployer.engine.backends import session as session_module

counts: Counter = Counter()
trips: Counter = Counter()
lock = threading.Lock()


def _peer(transport) -> str:
    try:
        host, port = transport.getpeername()[:2]
        return f"{host}:{port}"
    except Exception:  # noqa: BLE001
        return "?"


def wrap(owner, name: str, key: str, peer_of, trip: bool = False, unless=None) -> None:
    original = getattr(owner, name)

    def counted(self, *args, **kwargs):
        if unless is None or not unless(*args):
            with lock:
                counts[key] += 1
                if trip:
                    trips[peer_of(self)] += 1
        return original(self, *args, **kwargs)
    setattr(owner, name, counted)


wrap(paramiko.Transport, "open_session", "channels", _peer)
wrap(paramiko.Channel, "exec_command", "execs", lambda ch: _peer(ch.get_transport()), trip=True)
wrap(paramiko.SFTPClient, "__init__", "sftp", lambda c: "?")
wrap(session_module.ShellSession, "run", "session_commands", lambda s: "?")
if hasattr(session_module.ShellSession, "_send"):
    # The session's first line goes with its exec request and is not waited for.
    wrap(session_module.ShellSession, "_send", "session_sends", lambda s: _peer(s.channel.get_transport()),
         trip=True, unless=lambda text: text.startswith("__pampa_sshd="))
else:  # pampa before issue 24: one write per command, each awaited
    wrap(session_module.ShellSession, "_roundtrip", "session_sends", lambda s: _peer(s.channel.get_transport()),
         trip=True)


def _write(path: str) -> None:
    with lock:
        data = {**counts, "trips_by_host": dict(trips), "pampa": session_module.__file__}
    with open(path, "w") as f:
        json.dump(data, f)


out = sys.argv[1]
atexit.register(_write, out)
from pampa_deployer.cli import main  # noqa: E402

sys.exit(main(sys.argv[2:]))
