"""Count, do not time: what one light deploy costs the servers in processes, and each host in round trips.

    bench/run counts [--hosts 4] [--subnet 127.0.53]

One ``pampa deploy`` of the light workload against a fresh fleet of real sshd servers. Counted, not
timed, so the numbers are the same on a busy machine and a quiet one:
- **processes on the servers**: every process that exited under the hosts' sshd listeners during the
  run, from the kernel's exit records (taskstats.py), by kind: sshd (per connection), shells, commands,
  and by name; per host is the total over the hosts (the lock host does a little more);
- **what pampa asked each host for**, counted inside the pampa process (paramiko and the shell session
  wrapped, see ``_counter.py``): SSH channels opened, exec requests, commands run on shell sessions,
  writes to them, SFTP sessions. A *round trip* is what is sent before an answer is awaited: an exec
  request (a channel's command, or a session's shell), or one write to a session (one command, or
  several sent ahead together). ``--baseline DIR`` counts another checkout of pampa the same way.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import workload as wl  # noqa: E402
from compare import make_fleet, stop_fleet  # noqa: E402
from cpusplit import SHELLS, SSHD, descendants  # noqa: E402
from taskstats import ExitListener  # noqa: E402


def count_once(fleet, hosts, project: Path, baseline: str | None = None) -> dict:
    listeners = [int((fleet.root / "hosts" / h.name / "sshd" / "unshare.pid").read_text()) for h in hosts]
    revision = wl.reset(fleet, hosts, "light")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        counts_file = Path(f.name)
    argv = [sys.executable, str(HERE / "_counter.py"), str(counts_file), "--stages", str(project / "stages"),
            "deploy", "bench", "--ci", "--parallel", str(len(hosts))]
    env = {**os.environ, **({"PYTHONPATH": baseline} if baseline else {})}
    with ExitListener() as listener:
        proc = subprocess.run(argv, cwd=project, stdin=subprocess.DEVNULL, capture_output=True, timeout=600, env=env)
        time.sleep(1.0)  # the servers' per-connection processes end and are reaped
        exits = list(listener.exits)
        dropped = listener.dropped
    problems = wl.verify(fleet, hosts, "light", revision)
    if proc.returncode != 0 or problems:
        raise SystemExit(f"the deploy failed ({proc.returncode}): {problems[:3]}\n"
                         f"{(proc.stdout + proc.stderr)[-1500:].decode()}")
    by_kind, by_name = Counter(), Counter()
    for e in descendants(exits, set(listeners)):
        by_kind["sshd" if e.comm in SSHD else "shells" if e.comm in SHELLS else "commands"] += 1
        by_name[e.comm] += 1
    asked = json.loads(counts_file.read_text())
    counts_file.unlink()
    return {"by_kind": by_kind, "by_name": by_name, "asked": asked, "dropped": dropped}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=4)
    p.add_argument("--dir", default="/tmp/pampa-bench-counts")
    p.add_argument("--subnet", default=os.environ.get("PAMPA_TEST_SUBNET", "127.0.53"))
    p.add_argument("--baseline", metavar="DIR", help="count this checkout of pampa instead (e.g. main's)")
    args = p.parse_args()
    root = Path(args.dir)
    fleet = make_fleet(root / "fleet", args.hosts, subnet=args.subnet)
    try:
        hosts = fleet.hosts
        project = root / "work" / f"light-{args.hosts}"
        project.mkdir(parents=True, exist_ok=True)
        wl.write_stage(fleet, hosts, "light", args.hosts, project)
        result = count_once(fleet, hosts, project, str(Path(args.baseline).resolve()) if args.baseline else None)
    finally:
        stop_fleet(fleet)
    n = args.hosts
    total = sum(result["by_kind"].values())
    print(f"\n### Counts, light workload, N={n} (one run; per host = total / N)\n")
    print("| processes on the servers | total | per host |\n|---|---|---|")
    for kind in ("sshd", "shells", "commands"):
        print(f"| {kind} | {result['by_kind'][kind]} | {result['by_kind'][kind] / n:.1f} |")
    print(f"| **all** | {total} | {total / n:.1f} |")
    print("\n| by name | total | per host |\n|---|---|---|")
    for name, count in result["by_name"].most_common():
        print(f"| {name} | {count} | {count / n:.1f} |")
    asked = result["asked"]
    print("\n| pampa asked the hosts for | total | per host |\n|---|---|---|")
    for key, label in (("channels", "SSH channels opened"), ("execs", "exec requests (a command per channel)"),
                       ("session_commands", "commands run on shell sessions"),
                       ("session_sends", "writes to shell sessions, each awaited (several commands sent ahead: one)"),
                       ("sftp", "SFTP sessions")):
        print(f"| {label} | {asked.get(key, 0)} | {asked.get(key, 0) / n:.1f} |")
    trips = asked.get("execs", 0) + asked.get("session_sends", 0)  # a session's own exec included
    print(f"| **round trips** (exec requests + session writes) | {trips} | {trips / n:.1f} |")
    print(f"\npampa under test: {asked.get('pampa')}")
    per_host = sorted(asked.get("trips_by_host", {}).values())
    if per_host:
        print(f"\nRound trips by host: min {per_host[0]}, max {per_host[-1]} (the lock host does the most).")
    if result["dropped"]:
        print(f"\nNot exact: the kernel dropped {result['dropped']} exit records.")


if __name__ == "__main__":
    main()
