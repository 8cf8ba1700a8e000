"""500 hosts, light workload: every host must succeed; peak memory, threads, open connections and
descriptors of pampa.

    bench/run scale [--hosts 500] [--parallel 32] [--subnet 127.0.4]
Samples the pampa process's RSS, thread count, open TCP connections and file descriptors every 20 ms
from /proc while it deploys. Hosts are real sshd servers on SUBNET.1-250 (beyond 250, the same
addresses on the next port), each in its own mount namespace, as in every benchmark.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import workload as wl  # noqa: E402
from compare import make_fleet, precompile  # noqa: E402
from procwatch import sample  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hosts", type=int, default=500)
    p.add_argument("--parallel", type=int, default=None, help="default: pampa's own default (32)")
    p.add_argument("--dir", default="/tmp/pampa-bench-scale")
    p.add_argument("--subnet", default="127.0.4", help="the fleet's loopback subnet (default: 127.0.4)")
    args = p.parse_args()
    precompile()
    t = time.perf_counter()
    fleet = make_fleet(Path(args.dir) / "fleet", args.hosts, subnet=args.subnet)
    print(f"{args.hosts} sshd servers started in {time.perf_counter() - t:.1f}s", flush=True)
    try:
        project = Path(args.dir) / "work"
        wl.write_stage(fleet, fleet.hosts, "light", 32, project)
        stage_file = project / "stages" / "bench.yml"
        stage_file.write_text(stage_file.read_text().replace("parallel: 32\n", ""))
        wl.reset(fleet, fleet.hosts, "light")
        argv = [sys.executable, "-m", "pampa_deployer", "--stages", str(project / "stages"), "deploy", "bench", "--ci"]
        if args.parallel:
            argv += ["--parallel", str(args.parallel)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peaks: dict = {}
        stop = threading.Event()
        sampler = threading.Thread(target=sample, args=(proc.pid, peaks, stop, 0.02, True))
        sampler.start()
        out, _ = proc.communicate()
        stop.set()
        sampler.join()
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        problems = wl.verify(fleet, fleet.hosts, "light", None)
        failures = [line for line in out.splitlines() if "handshake" in line or "refused" in line or "timed out" in line]
        print("| hosts | --parallel | exit | hosts verified | wall (s) | pampa CPU (s) | peak RSS (MB) | peak threads "
              "| peak open sockets | peak open descriptors | connect errors |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        print(f"| {args.hosts} | {args.parallel or 'default (32)'} | {proc.returncode} | "
              f"{args.hosts - len(problems)}/{args.hosts} | {wall:.2f} | {cpu:.2f} | {peaks.get('rss_mb', 0):.0f} | "
              f"{peaks.get('threads', 0)} | {peaks.get('sockets', 0)} | {peaks.get('fds', 0)} | {len(failures)} |")
        if proc.returncode or problems:
            print("\n".join(line for line in out.splitlines() if "FAILED" in line or "RESULT" in line
                            and " ok " not in line)[-3000:], problems[:5])
    finally:
        fleet.stop()


if __name__ == "__main__":
    main()
