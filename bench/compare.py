"""Side-by-side deploy benchmark: pampa against the floor, the cost of SSH itself, Fabric, Ansible, pyinfra.

    bench/run                                   # everything (light 10/50/100, app 10/30), 3 runs each
    bench/run compare --workload light --hosts 50,100 --tools floor,openssh_connect,openssh_script,pampa,threadinggroup,pyinfra
    bench/run compare --workload light --hosts 50 --rtt 50 --tools ...   # every host behind a 50 ms round trip

The limits: *floor* runs the commands locally (no SSH); *openssh_connect* (formerly *connect_only*)
opens and authenticates the N connections with OpenSSH's client and runs nothing; *openssh_script*
runs each host's whole sequence as one script over one connection with OpenSSH's client (one
handshake, one shell, one round trip per host: the least an SSH push tool can do); *openssh_cm*
does it step by step over one ControlMaster connection per host.

``--rtt MS`` puts every host behind a delaying TCP relay (latency.py, delay_relay.py) that holds
every chunk MS/2 in each direction; every tool's connections go through it (the floor makes none).

Each round runs every tool once, in turn, against the same real sshd fleet (rounds
interleave tools so machine noise hits all of them alike). Every run is verified on
the hosts' disks; a run that did not really deploy is reported and not counted.
Prints medians with each tool's ratio to the floor, to the OpenSSH ControlMaster peer and to pampa.
"CPU" is the tool's own processes; "machine CPU" is every core's busy time during the run
(/proc/stat: the tool, the servers' sshd, shells and commands; on a quiet machine, nothing else).
Each run's 1-minute load average (taken just before it) is kept, and the last table, one line per
workload and size with pampa's ratios, gives the range the runs saw.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import workload as wl  # noqa: E402
from latency import Latency  # noqa: E402

from pampa_deployer.fleet import Fleet  # noqa: E402

PEER_PY = HERE / ".venv" / "bin" / "python"
TOOLS = ["floor", "openssh_connect", "openssh_script", "openssh_cm", "pampa", "pampa_baseline", "threadinggroup",
         "naive_fabric", "pyinfra", "ansible"]
PAMPAS = ("pampa", "pampa_baseline")
ALIASES = {"connect_only": "openssh_connect"}  # the name earlier tables used
NOTHING_TO_VERIFY = {"openssh_connect"}  # deploys nothing: only its exit code counts


def make_fleet(root: Path, count: int, subnet: str = "127.0.3") -> Fleet:
    """``count`` real sshd hosts on SUBNET.1-250; beyond 250 hosts, the addresses repeat on the next ports."""
    fleet = Fleet(root, [(f"h{i:03d}", ("bench",)) for i in range(1, count + 1)], subnet=subnet, first=1)
    fleet.hosts = [replace(h, address=f"{subnet}.{1 + i % 250}", port=fleet.port + i // 250)
                   for i, h in enumerate(fleet.hosts)]
    fleet.create(provision=False)
    for h in fleet.hosts:
        (fleet.home(h.name) / "address").write_text(h.address + "\n")
    fleet.start(timeout=60)
    return fleet


def precompile() -> None:
    """Byte-compile pampa once, as an installed package is: with PYTHONDONTWRITEBYTECODE set (as on the
    CI machine), an editable checkout would otherwise compile its 60 modules from source on every run."""
    for root in [HERE.parent] + ([Path(BASELINE["dir"])] if BASELINE else []):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "pampa_deployer")], check=True)


#: ``--baseline DIR``: a checkout of pampa to run as the tool ``pampa_baseline`` (before/after in one run).
BASELINE: dict[str, str] = {}


def command(tool: str, spec_file: Path, work: Path, project: Path, n: int) -> tuple[list[str], dict]:
    env = {**os.environ}
    if tool == "floor":
        return [sys.executable, str(HERE / "peers" / "floor.py"), str(spec_file)], env
    if tool in ("pampa", "pampa_baseline"):
        if tool == "pampa_baseline":
            env["PYTHONPATH"] = BASELINE["dir"]
        return [sys.executable, "-m", "pampa_deployer", "--stages", str(project / "stages"), "deploy", "bench",
                "--ci", "--parallel", str(n), "--report", str(work / f"{tool}-report.json")], env
    if tool in ("openssh_cm", "openssh_connect"):
        return [sys.executable, str(HERE / "peers" / "openssh_cm.py"), str(spec_file)] + \
            (["--connect"] if tool == "openssh_connect" else []), env
    if tool == "openssh_script":
        return [sys.executable, str(HERE / "peers" / "openssh_script.py"), str(spec_file)], env
    if tool in ("threadinggroup", "naive_fabric"):
        return [str(PEER_PY), str(HERE / "peers" / f"{tool}.py"), str(spec_file)], env
    if tool == "ansible":
        out = work / "ansible"
        subprocess.run([str(PEER_PY), str(HERE / "peers" / "ansible_play.py"), str(spec_file), str(out)], check=True)
        env.update(ANSIBLE_CONFIG=str(out / "ansible.cfg"),
                   ANSIBLE_SSH_CONTROL_PATH_DIR=str(work / f"cp-{time.time_ns()}"))  # no masters from earlier runs
        return [str(HERE / ".venv" / "bin" / "ansible-playbook"), "-i", str(out / "inventory.ini"),
                str(out / "play.yml")], env
    if tool == "pyinfra":
        out = work / "pyinfra"
        subprocess.run([str(PEER_PY), str(HERE / "peers" / "pyinfra_deploy.py"), str(spec_file), str(out)],
                       check=True)
        return [str(HERE / ".venv" / "bin" / "pyinfra"), str(out / "inventory.py"), str(out / "deploy.py"), "-y",
                "--parallel", str(n)], env
    raise SystemExit(f"unknown tool {tool}")


def stop_fleet(fleet: Fleet) -> None:
    fleet.stop()
    for h in fleet.hosts:  # the floor starts processes outside the hosts' namespaces
        for pid_file in (fleet.home(h.name) / "run").glob("*.pid") if (fleet.home(h.name) / "run").exists() else []:
            try:
                os.kill(int(pid_file.read_text()), 9)
            except (OSError, ValueError):
                pass


def machine_cpu() -> float:
    """CPU-seconds the whole machine has spent since boot (every core; idle and iowait excluded)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], env: dict, cwd: Path) -> tuple[float, float, float, int, str]:
    """(wall seconds, CPU seconds of the process and its children, machine CPU seconds, exit code, output tail)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    m0 = machine_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    machine = machine_cpu() - m0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, machine, proc.returncode, (proc.stdout + proc.stderr)[-600:]


def gate_seconds(report: Path) -> float | None:
    """From pampa's JSON report: seconds from the run's start until every kepler host had finished, which
    is when the gate opens (the bench's kepler gates no role, so every tool runs every host at once)."""
    import datetime
    data = json.loads(report.read_text())
    at = lambda text: datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()  # noqa: E731
    keplers = [at(h["ended"]) for h in data["hosts"] if "kepler" in h["roles"] and h["ended"]]
    return max(keplers) - at(data["started"]) if keplers else None


def bench(fleet: Fleet, workload: str, n: int, runs: int, tools: list[str], work: Path,
          parallel: int | None = None) -> dict:
    """``parallel``: hosts at once for every tool that takes a number (pampa, pyinfra, the scripts);
    default all N. ThreadingGroup and connect-only run all N at once regardless."""
    hosts = fleet.hosts[:n]
    project = work / f"{workload}-{n}"
    project.mkdir(parents=True, exist_ok=True)
    wl.write_stage(fleet, hosts, workload, n, project)
    spec_file = wl.dump({**wl.spec(fleet, hosts, workload, project), "parallel": parallel or n},
                        project / "spec.json")
    n_at_once = parallel or n
    results: dict[str, dict] = {t: {"wall": [], "cpu": [], "machine": [], "load": [], "gate": [], "failed": []}
                                for t in tools}
    if workload != "light":  # the first run on a fresh fleet clones and installs: not what is compared
        # pampa deploys once too, untimed, so its hosts have a revision log as on any fleet it deployed before.
        for tool in ["floor"] + [t for t in PAMPAS if t in tools][:1]:
            revision = wl.reset(fleet, hosts, workload)
            argv, env = command(tool, spec_file, project, project, n_at_once)
            subprocess.run(argv, env=env, cwd=project, capture_output=True, stdin=subprocess.DEVNULL)
            wl.verify(fleet, hosts, workload, revision)  # waits for every puma to serve
    for round_no in range(runs):
        for tool in tools:
            revision = wl.reset(fleet, hosts, workload)
            argv, env = command(tool, spec_file, project, project, n_at_once)
            load = os.getloadavg()[0]
            wall, cpu, machine, code, tail = timed(argv, env, project)
            problems = [] if tool in NOTHING_TO_VERIFY else wl.verify(fleet, hosts, workload, revision)
            if code != 0 or problems:
                results[tool]["failed"].append(f"exit {code}; {problems[:3]}; {tail[-300:]}")
                print(f"  {workload} N={n} round {round_no + 1} {tool}: FAILED ({code}) {problems[:2]}", flush=True)
                continue
            results[tool]["wall"].append(wall)
            results[tool]["cpu"].append(cpu)
            results[tool]["machine"].append(machine)
            results[tool]["load"].append(load)
            if tool in PAMPAS:
                results[tool]["gate"].append(gate_seconds(project / f"{tool}-report.json"))
            print(f"  {workload} N={n} round {round_no + 1} {tool}: {wall:.2f}s wall, {cpu:.2f}s CPU, "
                  f"{machine:.2f}s machine CPU (load average {load:.2f})", flush=True)
    return results


def table(workload: str, n: int, results: dict) -> str:
    med = {t: statistics.median(r["wall"]) for t, r in results.items() if r["wall"]}
    floor, pampa, script = med.get("floor"), med.get("pampa"), med.get("openssh_script")
    ratio = lambda m, ref: f"{m / ref:.2f}" if ref else ""  # noqa: E731
    lines = [f"### {workload} workload, N={n}", "",
             "| tool | median wall (s) | runs ok | median CPU (s) | median machine CPU (s) | × floor "
             "| × openssh_script | × pampa | load average |", "|---|---|---|---|---|---|---|---|---|"]
    for tool, r in results.items():
        if not r["wall"]:
            lines.append(f"| {tool} | failed | 0/{len(r['failed'])} | | | | | | |")
            continue
        m = med[tool]
        lines.append(f"| {tool} | {m:.2f} | {len(r['wall'])}/{len(r['wall']) + len(r['failed'])} | "
                     f"{statistics.median(r['cpu']):.2f} | {statistics.median(r['machine']):.2f} | "
                     f"{ratio(m, floor)} | {ratio(m, script)} | {ratio(m, pampa)} | "
                     f"{min(r['load']):.2f}–{max(r['load']):.2f} |")
    return "\n".join(lines) + "\n"


def gates(results: dict) -> str:
    """Median start → gate open of pampa (and of the baseline, if it ran)."""
    said = []
    for tool in PAMPAS:
        opened = [g for g in results.get(tool, {}).get("gate", []) if g is not None]
        if opened:
            said.append(f"{statistics.median(opened):.2f}" + (" (baseline)" if tool != "pampa" else ""))
    return ", ".join(said) or "—"


def summary(rows: list[tuple[str, int, float, dict]]) -> str:
    """One line per workload and size: each tool's median, pampa's ratios, the load averages seen."""
    tools = [t for t in TOOLS if any(r.get(t, {}).get("wall") for *_, r in rows)]
    ratio = lambda a, b: f"{a / b:.2f}×" if a and b else "—"  # noqa: E731
    lines = ["| workload, N, RTT | " + " | ".join(tools) + " | pampa × floor | pampa × openssh_script | "
             "ThreadingGroup ÷ pampa | pyinfra ÷ pampa | pampa: start → gate open (s) | load average (1 min) |",
             "|---" * (len(tools) + 7) + "|"]
    for workload, n, rtt, results in rows:
        med = {t: statistics.median(r["wall"]) for t, r in results.items() if r["wall"]}
        loads = [x for r in results.values() for x in r["load"]]
        cells = [f"**{med[t]:.2f}**" if t == "pampa" and t in med else f"{med[t]:.2f}" if t in med
                 else "failed" if t in results else "—" for t in tools]
        pampa = med.get("pampa")
        lines.append(f"| {workload}, {n}, {rtt * 1000:.0f} ms | " + " | ".join(cells) +
                     f" | {ratio(pampa, med.get('floor'))} | {ratio(pampa, med.get('openssh_script'))} | "
                     f"{ratio(med.get('threadinggroup'), pampa)} | {ratio(med.get('pyinfra'), pampa)} | "
                     f"{gates(results)} | {min(loads, default=0):.2f}–{max(loads, default=0):.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=["light", "app", "app-change", "all"], default="all")
    p.add_argument("--hosts", help="comma-separated N values (default: light 10,50,100; app 10,30)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--parallel", type=int, default=None,
                   help="hosts at once for pampa, pyinfra and the scripts (default: every host)")
    p.add_argument("--rtt", type=float, default=0.0,
                   help="milliseconds of round trip between the tools and every host (a delaying relay)")
    p.add_argument("--subnet", default="127.0.3", help="the fleet's loopback subnet (default: 127.0.3)")
    p.add_argument("--baseline", metavar="DIR", help="a checkout of pampa (e.g. `git worktree add DIR main`) "
                   "measured as the tool pampa_baseline")
    p.add_argument("--dir", default="/tmp/pampa-bench")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()
    tools = [ALIASES.get(t, t) for t in args.tools.split(",")]
    if args.baseline:
        BASELINE["dir"] = str(Path(args.baseline).resolve())
    elif "pampa_baseline" in tools:
        raise SystemExit("pampa_baseline needs --baseline DIR")
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        raise SystemExit(f"unknown tool(s) {', '.join(unknown)}; known: {', '.join(TOOLS)}")
    plan = []
    for workload in (["light", "app"] if args.workload == "all" else [args.workload]):
        ns = [int(x) for x in args.hosts.split(",")] if args.hosts else ([10, 50, 100] if workload == "light"
                                                                          else [10, 30])
        plan += [(workload, n) for n in ns]
    root = Path(args.dir)
    precompile()
    fleet = make_fleet(root / "fleet", max(n for _, n in plan), subnet=args.subnet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rtt = args.rtt / 1000
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()}: "
              f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
              f"{args.runs} runs per tool, medians" + (f", every host behind a {args.rtt:g} ms round trip" if rtt
                                                        else "") + ".\n")
    report, rows = [header], []
    try:
        with Latency(fleet, rtt) if rtt else contextlib.nullcontext():
            for workload, n in plan:
                results = bench(fleet, workload, n, args.runs, tools, root / "work", args.parallel)
                suffix = f"-rtt{args.rtt:g}" if rtt else ""
                (out / f"{workload}-{n}{suffix}.json").write_text(json.dumps(results, indent=1))
                report.append(table(workload, n, results))
                rows.append((workload, n, rtt, results))
                print(report[-1], flush=True)
    finally:
        stop_fleet(fleet)
    report.append(summary(rows))
    (out / "report.md").write_text("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
