"""Put every host of a bench fleet behind a delaying relay (delay_relay.py): a real round trip per chunk.

    with Latency(fleet, rtt=0.050):   # fleet.hosts now point at the relays, known_hosts knows them
        ...every tool connects through the relay...

Each host's relay listens on the host's own address, on the sshd port + PORT_OFFSET, and forwards to
its sshd; ``fleet.hosts`` is swapped for the relays' addresses for the duration (the hosts' names,
homes and keys stay), and known_hosts gets the host keys under the relays' ``[address]:port`` too, so
every tool verifies the host key as usual. The relay process is the bench's child: it is stopped on
the way out, and ends on its own if the bench dies (its stdin closes).
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: The relay of a host listening on address:PORT listens on address:PORT + PORT_OFFSET.
PORT_OFFSET = 1000


class Latency:
    """A context manager: the fleet's hosts behind relays holding every chunk ``rtt / 2`` each way."""

    def __init__(self, fleet, rtt: float):
        self.fleet, self.rtt = fleet, rtt
        self.proc: subprocess.Popen | None = None
        self.direct = list(fleet.hosts)

    def __enter__(self) -> "Latency":
        fleet = self.fleet
        relayed = [replace(h, port=h.port + PORT_OFFSET) for h in self.direct]
        routes = [[r.address, r.port, h.address, h.port] for h, r in zip(self.direct, relayed)]
        map_file = fleet.root / "relay-map.json"
        map_file.write_text(json.dumps(routes))
        known = fleet.known_hosts.read_text().splitlines()
        keys = {line.split()[0]: line.split(None, 1)[1] for line in known if line.strip()}
        extra = [f"[{r.address}]:{r.port} {keys[f'[{h.address}]:{h.port}']}" for h, r in zip(self.direct, relayed)]
        fleet.known_hosts.write_text("\n".join(known + [e for e in extra if e not in known]) + "\n")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "delay_relay.py"), str(map_file),
                                      "--delay", str(self.rtt / 2)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise SystemExit("the delaying relay did not start")
        fleet.hosts = relayed
        return self

    def __exit__(self, *exc) -> None:
        self.fleet.hosts = self.direct
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdin.close()
            self.proc.stdout.close()
