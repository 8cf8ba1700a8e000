"""What one process costs while a benchmark runs, read from /proc: peak RSS, threads, sockets, CPU."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def sample(pid: int, peaks: dict, stop: threading.Event, every: float = 0.1, sockets: bool = False) -> None:
    """Keep the peaks of ``pid``'s RSS (MB), threads and (if asked) open sockets in ``peaks`` until ``stop``."""
    while not stop.is_set():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                peaks["rss_mb"] = max(peaks.get("rss_mb", 0), int(line.split()[1]) / 1024)
            elif line.startswith("Threads:"):
                peaks["threads"] = max(peaks.get("threads", 0), int(line.split()[1]))
        if sockets:
            peaks["sockets"] = max(peaks.get("sockets", 0), count_sockets(pid))
            peaks["fds"] = max(peaks.get("fds", 0), count_descriptors(pid))
        time.sleep(every)


def count_sockets(pid: int) -> int:
    """Open sockets of ``pid`` (0 once it has gone)."""
    try:
        return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir() if os.readlink(fd).startswith("socket:"))
    except OSError:
        return 0


def count_descriptors(pid: int) -> int:
    """Open file descriptors of ``pid``, of every kind (0 once it has gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
