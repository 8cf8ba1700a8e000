"""`pampa pending` and `pampa history` against `pampa status`, side by side, on one fleet (issue 23).

    bench/run readers [--hosts 20] [--rounds 7] [--subnet 127.0.5]

A fleet of N hosts (newton role, in-place checkouts) is deployed once; then a release with a new
migration and a changed Gemfile.lock is pushed to the origin, so `pending` has real git work. Each
round runs `status`, `pending` and `history` as whole processes, one after the other (interleaved, so
a machine that slows down slows all three); the medians and the ratios to `status` are printed, with
the load average. `pending` reads each host once (like `status`) and adds the git work: one fetch of
the operator's mirror, overlapped with the hosts' answers, and one compare per group of hosts.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pampa_deployer.fleet import Fleet  # noqa: E402

ROOT = Path("/tmp/pampa-bench/readers")


def pampa(project: Path, *args: str) -> float:
    t = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pampa_deployer", *args], cwd=project, capture_output=True,
                            text=True, timeout=600, stdin=subprocess.DEVNULL)
    took = time.perf_counter() - t
    if result.returncode != 0:
        raise SystemExit(f"pampa {' '.join(args)} exited {result.returncode}: {result.stderr[-500:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--subnet", default="127.0.5")
    args = parser.parse_args()
    if ROOT.exists():
        shutil.rmtree(ROOT)
    fleet = Fleet(ROOT / "fleet", [(f"n{i:03}", ("newton",)) for i in range(args.hosts)], subnet=args.subnet,
                  first=11)
    fleet.create()
    fleet.start()
    project = ROOT / "project"
    try:
        fleet.write_stage(project / "stages", "bench", steps={"bundle": {"enabled": False},
                                                              "migrate": {"enabled": False},
                                                              "restart_workers": {"enabled": False}})
        pampa(project, "deploy", "bench", "-m", "baseline")
        lock = (fleet.work / "Gemfile.lock").read_text().replace("  specs:\n", "  specs:\n    pampa_bench (1.0.0)\n", 1)
        fleet.commit("A release to preview", {"db/migrations/050_bench.rb": "Sequel.migration do\nend\n",
                                              "Gemfile.lock": lock})
        pampa(project, "pending", "bench")  # the mirror's first clone is set-up, not the steady state
        times: dict[str, list[float]] = {"status": [], "pending": [], "history": []}
        for _ in range(args.rounds):
            for name in times:
                times[name].append(pampa(project, name, "bench"))
    finally:
        fleet.stop()
    load = os.getloadavg()
    base = statistics.median(times["status"])
    print(f"{args.hosts} hosts, {args.rounds} rounds, whole process, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}")
    print("| command | median s | min s | max s | median of its ratio to status, round by round |")
    print("|---|---|---|---|---|")
    for name, runs in times.items():
        ratio = statistics.median(a / b for a, b in zip(runs, times["status"]))
        print(f"| pampa {name} | {statistics.median(runs):.3f} | {min(runs):.3f} | {max(runs):.3f} | {ratio:.2f} |")
    print(f"pending - status (medians): {statistics.median(times['pending']) - base:+.3f} s")


if __name__ == "__main__":
    main()
