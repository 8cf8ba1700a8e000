"""Milliseconds per command on an open connection: raw paramiko (Nagle on/off), pampa, Fabric.

    bench/run overhead
Uses one host of the bench fleet (started if needed). Reports pampa's overhead per host per step
over a raw paramiko exec_command, and what TCP_NODELAY and invoke's polling runner cost.
"""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import paramiko  # noqa: E402

from pampa_deployer.engine.backends.ssh import SSHBackend, SSHSettings  # noqa: E402
from pampa_deployer.fleet import Fleet  # noqa: E402
from pampa_deployer.steps.actions import Command  # noqa: E402

N = 300


def per_command(fn) -> float:
    fn()  # warm up
    t = time.perf_counter()
    for _ in range(N):
        fn()
    return (time.perf_counter() - t) / N * 1000


def main() -> None:
    fleet = Fleet("/tmp/pampa-bench/overhead", [("o1", ("bench",))], subnet="127.0.5", first=1)
    fleet.create(provision=False)
    fleet.start()
    host = fleet.hosts[0]
    rows = []
    try:
        for nodelay in (False, True):
            c = paramiko.SSHClient()
            c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            c.connect(host.address, port=host.port, username="root", key_filename=str(fleet.key),
                      look_for_keys=False, allow_agent=False)
            if nodelay:
                c.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rows.append((f"raw paramiko exec_command, TCP_NODELAY {'on' if nodelay else 'off'}",
                         per_command(lambda: c.exec_command("true")[1].channel.recv_exit_status())))
            c.close()
        from fabric import Connection
        for nodelay in (False, True):
            conn = Connection(host.address, user="root", port=host.port, connect_kwargs={"key_filename": str(fleet.key)})
            conn.open()
            if nodelay:
                conn.transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rows.append((f"Fabric Connection.run (invoke runner), TCP_NODELAY {'on' if nodelay else 'off'}",
                         per_command(lambda: conn.run("true", hide=True, in_stream=False))))
            conn.close()
        from pampa_deployer.inventory import stage_from_mapping
        for session in (False, True):
            stage = stage_from_mapping({"app": "o", "user": "root", "key": str(fleet.key),
                                        "ssh": {"known_hosts": str(fleet.known_hosts), "shell_session": session},
                                        "hosts": {"o1": {"address": host.address, "port": host.port,
                                                         "roles": ["newton"]}}})
            backend = SSHBackend(stage.hosts[0], SSHSettings.from_stage(stage))
            backend.connect()
            rows.append((f"pampa SSHBackend.run, {'shell session' if session else 'channel per command'}",
                         per_command(lambda: backend.run(Command("true")))))
            backend.close()
    finally:
        fleet.stop()
    raw = rows[1][1]
    print("| how a command runs on an open connection | ms per command | vs raw paramiko + NODELAY |")
    print("|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} | {ms - raw:+.2f} ms |")


if __name__ == "__main__":
    main()
