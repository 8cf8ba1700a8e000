"""Every process that exits on this machine, with its CPU time: the kernel's taskstats over netlink.

The kernel sends one record per exiting thread to a listener registered for the CPUs
(TASKSTATS_CMD_ATTR_REGISTER_CPUMASK). With ``kernel.task_delayacct`` on, a record carries the
task's exact run time (``cpu_run_virtual_total``, the scheduler's sum_exec_runtime, in ns);
without it, only the tick-sampled utime+stime. Either way it is measured, not estimated.
What a record cannot hold is the work after it is sent (the kernel tears down the memory of
the exiting process afterwards); the split reports that as its own remainder.
Needs root (CAP_NET_ADMIN) and the initial network namespace.
"""
from __future__ import annotations

import os
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 3, 1, 2
TASKSTATS_CMD_GET, TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK = 1, 3, 4
TYPE_PID, TYPE_STATS, TYPE_AGGR_PID = 1, 3, 4
DELAYACCT = Path("/proc/sys/kernel/task_delayacct")


@dataclass(frozen=True)
class Exit:
    pid: int
    ppid: int
    comm: str
    cpu: float        # seconds
    started: int      # epoch seconds (ac_btime)


def _nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("<HH", size, kind) + payload + b"\0" * ((4 - size % 4) % 4)


def _attrs(buf: bytes):
    i = 0
    while i + 4 <= len(buf):
        size, kind = struct.unpack_from("<HH", buf, i)
        if size < 4:
            return
        yield kind & 0x3FFF, buf[i + 4:i + size]
        i += (size + 3) & ~3


def parse_stats(raw: bytes) -> Exit:
    """struct taskstats (linux/taskstats.h, version >= 8): the fields the split needs."""
    comm = raw[80:112].split(b"\0")[0].decode(errors="replace")
    exact = struct.unpack_from("<Q", raw, 72)[0]           # cpu_run_virtual_total (delay accounting on)
    pid, ppid, btime = struct.unpack_from("<III", raw, 128)
    utime, stime = struct.unpack_from("<QQ", raw, 152)     # microseconds, tick-sampled
    return Exit(pid, ppid, comm, exact / 1e9 if exact else (utime + stime) / 1e6, btime)


class ExitListener:
    """Collects an ``Exit`` for every task that ends while it listens (``with ExitListener() as ex``)."""

    def __init__(self):
        self.exits: list[Exit] = []
        self.dropped = 0
        self.exact = False
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._delayacct_was: str | None = None

    def __enter__(self) -> "ExitListener":
        if DELAYACCT.exists():
            self._delayacct_was = DELAYACCT.read_text().strip()
            if self._delayacct_was != "1":
                DELAYACCT.write_text("1")
            self.exact = True
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        sock.bind((0, 0))
        sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: bursts of thousands of exits
        self.family = self._family(sock)
        self._cpus = f"0-{os.cpu_count() - 1}\0".encode()
        self._send(sock, self.family, TASKSTATS_CMD_GET, _nla(TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, self._cpus))
        self._sock = sock
        self._thread = threading.Thread(target=self._loop, name="taskstats", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        sock, self._sock = self._sock, None
        try:
            self._send(sock, self.family, TASKSTATS_CMD_GET, _nla(TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK, self._cpus))
        finally:
            sock.close()
            if self._delayacct_was is not None and self._delayacct_was != "1":
                DELAYACCT.write_text(self._delayacct_was)

    @staticmethod
    def _send(sock: socket.socket, family: int, cmd: int, payload: bytes) -> None:
        body = struct.pack("<BBH", cmd, 1, 0) + payload
        sock.send(struct.pack("<IHHII", 16 + len(body), family, 1, 0, 0) + body)  # NLM_F_REQUEST

    def _family(self, sock: socket.socket) -> int:
        self._send(sock, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, _nla(CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0"))
        reply = sock.recv(65536)
        for kind, payload in _attrs(reply[20:]):
            if kind == CTRL_ATTR_FAMILY_ID:
                return struct.unpack("<H", payload[:2])[0]
        raise RuntimeError("the kernel has no TASKSTATS netlink family")

    def _loop(self) -> None:
        while self._sock is not None:
            try:
                data = self._sock.recv(1 << 20)
            except OSError as e:
                if self._sock is None:
                    return
                if e.errno == 105:  # ENOBUFS: the kernel dropped records
                    self.dropped += 1
                    continue
                raise
            i = 0
            while i + 16 <= len(data):
                size, kind = struct.unpack_from("<IH", data, i)
                if kind == self.family:
                    for attr, payload in _attrs(data[i + 20:i + size]):
                        if attr == TYPE_AGGR_PID:
                            stats = dict(_attrs(payload)).get(TYPE_STATS)
                            if stats is not None:
                                self.exits.append(parse_stats(stats))
                i += (size + 3) & ~3 if size else len(data)
