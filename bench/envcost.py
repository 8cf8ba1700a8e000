"""Does a command cost more CPU under SSH? The app's commands on one host, the same command three ways.

    bench/run envcost [--runs 7]

1. local bash with the floor's environment (the caller's, HOME = the host's home);
2. local bash with exactly the environment sshd gives a command (env -i: USER, LOGNAME, HOME,
   PATH, MAIL, SHELL, SSH_CLIENT, SSH_CONNECTION; no LANG), so only the environment differs;
3. over pampa's shell session on the host (real sshd, the host's mount namespace).
Each command's own CPU (user + system, from the shell's ``times``) is measured, rounds interleaved;
prints medians and the environment each way. Host 127.0.56.1.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import workload as wl  # noqa: E402
from compare import command, make_fleet, precompile, stop_fleet  # noqa: E402

from pampa_deployer.commands.command import Command  # noqa: E402
from pampa_deployer.engine.backends.ssh import SSHBackend, SSHSettings  # noqa: E402
from pampa_deployer.inventory import load_stage  # noqa: E402

COMMANDS = {
    "git fetch": "git fetch --all",
    "migrate": "bundle exec sequel -m db/migrations $DATABASE_URL",
    "bundle install": "bundle install",
    "ruby -e 1": "ruby -e 1",
    "puma boot (require)": "ruby -e 'require %q(bundler/setup); require %q(sequel); require %q(puma)'",
}
TIMES = re.compile(r"^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$")


def children_cpu(out: str) -> float:
    """The second line of bash's ``times``: the children's user and system time."""
    lines = [m for m in (TIMES.match(line) for line in out.strip().splitlines()) if m]
    m = lines[-1]
    return int(m[1]) * 60 + float(m[2]) + int(m[3]) * 60 + float(m[4])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--dir", default="/tmp/pampa-bench-envcost")
    args = p.parse_args()
    precompile()
    root = Path(args.dir)
    fleet = make_fleet(root / "fleet", 1, subnet="127.0.56")
    try:
        host = fleet.hosts[0]
        project = root / "work"
        project.mkdir(parents=True, exist_ok=True)
        wl.write_stage(fleet, [host], "app", 1, project)
        spec_file = wl.dump(wl.spec(fleet, [host], "app", project), project / "spec.json")
        revision = wl.reset(fleet, [host], "app")
        argv, env = command("pampa", spec_file, project, project, 1)
        subprocess.run(argv, env=env, cwd=project, check=True, capture_output=True)  # clone, install, start
        wl.verify(fleet, [host], "app", revision)
        stage = load_stage("bench", project / "stages")
        backend = SSHBackend(stage.hosts[0], SSHSettings.from_stage(stage))
        backend.connect()
        home = str(fleet.home(host.name))
        ssh_env = backend.run(Command("env")).stdout
        sshd_env = dict(line.split("=", 1) for line in ssh_env.splitlines() if "=" in line and
                        line.split("=", 1)[0] in ("USER", "LOGNAME", "HOME", "PATH", "MAIL", "SHELL", "SSH_CLIENT",
                                                  "SSH_CONNECTION"))
        ways = {"local, floor's environment": {**os.environ, "HOME": home},
                "local, sshd's environment": {**sshd_env, "HOME": home}}
        cpu: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.runs):
            for name, line in COMMANDS.items():
                body = ("export DATABASE_URL=sqlite://db/app.sqlite3 && cd ~/code/pampa-demo && "
                        f"{{ {line}; }} >/dev/null 2>&1; times")
                for way, env in ways.items():
                    out = subprocess.run(["bash", "-c", body.replace("~", home)], env=env, capture_output=True,
                                         text=True, timeout=120).stdout
                    cpu.setdefault((name, way), []).append(children_cpu(out))
                cpu.setdefault((name, "over pampa's session"), []).append(children_cpu(backend.run(Command(body)).stdout))
        backend.close()
    finally:
        stop_fleet(fleet)
    way_names = list(ways) + ["over pampa's session"]
    print(f"\nCPU-seconds per command (median of {args.runs}; user + system of the command and its children)\n")
    print("| command | " + " | ".join(way_names) + " |\n|---|" + "---|" * len(way_names))
    for name in COMMANDS:
        print(f"| {name} | " + " | ".join(f"{statistics.median(cpu[(name, w)]):.3f}" for w in way_names) + " |")
    print("\nEnvironment of a command under sshd (pampa's session):\n" + ssh_env)
    print("Floor adds, among others: " + ", ".join(sorted(k for k in os.environ if k not in sshd_env))[:600])


if __name__ == "__main__":
    main()
