"""Where every CPU-second of one deploy goes: the tool, sshd, the shells, the commands, the access point.

    bench/run cpusplit --workload light --hosts 50 [--tools floor,openssh_connect,openssh_script,pampa,pampa+ap]
    bench/run cpusplit --workload app --hosts 30 --by-comm

``pampa+ap`` is pampa with the reference access point (started here, on 127.0.0.1): it registers the
deploy and every host reports its version over HTTP; the other tools do no HTTP.

One run per tool against a fresh fleet of real sshd servers (127.0.52.x). Measured, not estimated:
- the machine: /proc/stat, every core's busy time from the tool's start until the hosts are verified;
- the tool (pampa, the floor's Python, the ControlMaster script) and the access point: their own
  rusage (wait4), exact; minus the processes they started, which are counted by what they are;
- the servers' side: the sshd listeners' own and reaped children's time (/proc/PID/stat, exact), split
  by the kernel's exit record of every process under them (taskstats, see taskstats.py): sshd
  processes (handshake, auth, channels, SFTP), shells (bash/sh) and commands (everything else);
- daemons a run starts (puma, workers) are commands too: /proc of each one still alive at the end;
- what the exit records cannot hold (the kernel freeing an exiting process's memory, after its
  record) is its own line, the difference between the exact totals and the records;
- "other": the rest of the machine's busy time (kernel threads, interrupts, anything else running).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import workload as wl  # noqa: E402
from compare import ALIASES, BASELINE, NOTHING_TO_VERIFY, command, machine_cpu, make_fleet, precompile, stop_fleet  # noqa: E402
from taskstats import ExitListener  # noqa: E402

SHELLS = {"bash", "sh", "dash"}
SSHD = {"sshd", "sshd-session", "sshd-auth", "sftp-server"}
TICK = os.sysconf("SC_CLK_TCK")
ROWS = ["tool process", "tool: ssh clients", "sshd", "shells", "commands", "access point",
        "exit teardown (not in exit records)", "other (kernel, rest of the machine)", "machine total"]


def proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from "state" on (field 3)


def cpu_of(pid: int, children: bool = True) -> float:
    f = proc_stat(pid)
    if f is None:
        return 0.0
    own = int(f[11]) + int(f[12])  # utime stime (fields 14, 15)
    return (own + (int(f[13]) + int(f[14]) if children else 0)) / TICK


def descendants(exits, roots: set[int]) -> list:
    kids = defaultdict(list)
    for e in exits:
        kids[e.ppid].append(e)
    found, stack = [], list(roots)
    while stack:
        for e in kids.get(stack.pop(), []):
            found.append(e)
            stack.append(e.pid)
    return found


def new_daemons(since: float, namespaces: set[str], home_root: str) -> list[int]:
    """Processes started during the run, now children of init, that belong to the fleet (puma, workers)."""
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        f = proc_stat(int(entry.name))
        if f is None or f[1] != "1" or boot + int(f[19]) / TICK < since:  # ppid, starttime (field 22)
            continue
        try:
            ns = os.readlink(entry / "ns" / "mnt")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if ns in namespaces or f"HOME={home_root}".encode() in environ:
            found.append(int(entry.name))
    return found


def split_one(tool: str, fleet, hosts, workload: str, project: Path, spec_file: Path,
              access_point: subprocess.Popen | None) -> dict:
    listeners = [int((fleet.root / "hosts" / h.name / "sshd" / "unshare.pid").read_text()) for h in hosts]
    namespaces = {os.readlink(f"/proc/{pid}/ns/mnt") for pid in listeners}
    revision = wl.reset(fleet, hosts, workload)
    if tool == "pampa+ap":
        project = project.parent / (project.name + "-ap")
    else:
        access_point = None
    argv, env = command("pampa" if tool == "pampa+ap" else tool, spec_file, project, project, len(hosts))
    rows: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    by_comm: dict[str, float] = defaultdict(float)
    with ExitListener() as listener:
        servers0 = sum(cpu_of(pid) for pid in listeners)
        ap0 = cpu_of(access_point.pid, children=False) if access_point else 0.0
        m0, t0, since = machine_cpu(), time.perf_counter(), time.time() - 1
        proc = subprocess.Popen(argv, env=env, cwd=project, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        problems = [] if tool in NOTHING_TO_VERIFY else wl.verify(fleet, hosts, workload, revision)
        time.sleep(1.0)  # the servers' per-connection processes end and are reaped
        servers = sum(cpu_of(pid) for pid in listeners) - servers0
        ap = (cpu_of(access_point.pid, children=False) - ap0) if access_point else 0.0
        daemons = new_daemons(since, namespaces, str(fleet.root))
        machine = machine_cpu() - m0
        exits = list(listener.exits)
        exact, dropped = listener.exact, listener.dropped
    if os.waitstatus_to_exitcode(status) != 0 or problems:
        print(f"{tool}: FAILED ({os.waitstatus_to_exitcode(status)}) {problems[:3]}\n{out[-1500:].decode()}")
    tool_total = usage.ru_utime + usage.ru_stime
    tool_children = 0.0
    for e in descendants(exits, {proc.pid}):
        kind = "shells" if e.comm in SHELLS else "tool: ssh clients" if e.comm == "ssh" else \
            "commands" if tool == "floor" else "tool process"
        rows[kind] += e.cpu
        counts[kind] += 1
        by_comm[e.comm] += e.cpu
        tool_children += e.cpu
    rows["tool process"] += tool_total - tool_children  # its own time, and the exits of its children
    counts["tool process"] += 1
    recorded = 0.0
    for e in descendants(exits, set(listeners)):
        kind = "sshd" if e.comm in SSHD else "shells" if e.comm in SHELLS else "commands"
        rows[kind] += e.cpu
        counts[kind] += 1
        by_comm[e.comm] += e.cpu
        recorded += e.cpu
    for pid in daemons:
        cpu = cpu_of(pid, children=False) + sum(e.cpu for e in descendants(exits, {pid}))
        rows["commands"] += cpu
        counts["commands"] += 1
        by_comm[(proc_stat(pid) or ["", "", ""])[0] and Path(f"/proc/{pid}/comm").read_text().strip()] += cpu
        servers += cpu
        recorded += cpu
    rows["exit teardown (not in exit records)"] = servers - recorded
    rows["access point"] = ap
    rows["machine total"] = machine
    rows["other (kernel, rest of the machine)"] = machine - sum(v for k, v in rows.items() if k != "machine total")
    return {"rows": dict(rows), "counts": dict(counts), "by_comm": dict(by_comm), "wall": wall, "exact": exact, "dropped": dropped,
            "ok": os.waitstatus_to_exitcode(status) == 0 and not problems}


def start_access_point(root: Path) -> tuple[subprocess.Popen, str]:
    db = root / "access-point.sqlite3"
    proc = subprocess.Popen([sys.executable, "-m", "pampa_deployer", "access-point", "serve", "--bind", "127.0.0.1",
                             "--port", "0", "--db", str(db)], env={**os.environ, "PAMPA_AP_KEY": "bench-access-point-key"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    url = line.split(" on ", 1)[1].split()[0]
    return proc, url


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=["light", "app"], default="light")
    p.add_argument("--hosts", type=int, default=50)
    p.add_argument("--tools", default="floor,openssh_connect,openssh_script,pampa")
    p.add_argument("--dir", default="/tmp/pampa-bench-cpusplit")
    p.add_argument("--subnet", default="127.0.52")
    p.add_argument("--by-comm", action="store_true", help="also print the processes by name (servers' side)")
    p.add_argument("--baseline", metavar="DIR", help="a checkout of pampa, split as the tool pampa_baseline")
    args = p.parse_args()
    if args.baseline:
        BASELINE["dir"] = str(Path(args.baseline).resolve())
    root = Path(args.dir)
    precompile()
    fleet = make_fleet(root / "fleet", args.hosts, subnet=args.subnet)
    access_point = None
    try:
        hosts = fleet.hosts
        project = root / "work" / f"{args.workload}-{args.hosts}"
        project.mkdir(parents=True, exist_ok=True)
        wl.write_stage(fleet, hosts, args.workload, args.hosts, project)
        if "pampa+ap" in args.tools.split(","):
            access_point, url = start_access_point(root)
            with_ap = project.parent / (project.name + "-ap")
            wl.write_stage(fleet, hosts, args.workload, args.hosts, with_ap)
            stage = with_ap / "stages" / "bench.yml"
            stage.write_text(stage.read_text() + f"access_point:\n  url: {url}\n  api_key: bench-access-point-key\n")
        spec_file = wl.dump(wl.spec(fleet, hosts, args.workload, project), project / "spec.json")
        if args.workload == "app":  # the first run clones and installs: not what is measured
            split_one("floor", fleet, hosts, args.workload, project, spec_file, None)
        tools = [ALIASES.get(t, t) for t in args.tools.split(",")]
        results = {tool: split_one(tool, fleet, hosts, args.workload, project, spec_file, access_point)
                   for tool in tools}
    finally:
        if access_point is not None:
            access_point.send_signal(signal.SIGTERM)
            access_point.wait(10)
        stop_fleet(fleet)
    exact = all(r["exact"] for r in results.values())
    print(f"\n### CPU split, {args.workload} workload, N={args.hosts} (CPU-seconds; one run each; "
          f"{'exact run time per process' if exact else 'tick-sampled time per process'})\n")
    print("| part | " + " | ".join(tools) + " |")
    print("|---|" + "---|" * len(tools))
    for row in ROWS:
        cells = []
        for tool in tools:
            value, count = results[tool]["rows"].get(row, 0.0), results[tool]["counts"].get(row)
            cells.append(f"{value:.2f}" + (f" ({count} proc)" if count and row not in ("tool process",) else ""))
        print(f"| {row} | " + " | ".join(cells) + " |")
    print("| wall (s) | " + " | ".join(f"{results[t]['wall']:.2f}" for t in tools) + " |")
    if args.by_comm:
        names = sorted({c for t in tools for c in results[t]["by_comm"]},
                       key=lambda c: -max(results[t]["by_comm"].get(c, 0) for t in tools))
        print("\n| process name | " + " | ".join(tools) + " |\n|---|" + "---|" * len(tools))
        for name in names[:15]:
            print(f"| {name} | " + " | ".join(f"{results[t]['by_comm'].get(name, 0):.2f}" for t in tools) + " |")
    bad = [t for t in tools if not results[t]["ok"] or results[t]["dropped"]]
    if bad:
        print("\nNot clean: " + ", ".join(f"{t} (ok={results[t]['ok']}, dropped={results[t]['dropped']})" for t in bad))


if __name__ == "__main__":
    main()
