"""``pampa demo``: a local fleet of real sshd hosts, a real origin, the access point, and a real deploy."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from ..errors import Refused
from ..fleet import AddressTaken, Fleet, listening
from . import output, types


def declare(cmd) -> None:
    p = cmd("demo", "run a real deploy to a local fleet of sshd hosts (root, Debian)", "pampa demo; pampa demo down")
    p.add_argument("action", nargs="?", default="up", choices=["up", "down"])
    p.add_argument("--dir", default="/tmp/pampa-demo", help="where the demo fleet lives (default /tmp/pampa-demo)")
    p.add_argument("--per-role", type=types.positive_int, default=1, help="hosts per role (default 1)")
    p.add_argument("--subnet", default="127.0.0", type=types.subnet,
                   help="loopback subnet: hosts on SUBNET.11..., the access point on SUBNET.1 (default 127.0.0)")
    p.set_defaults(handler=demo)

NEEDED = {"sshd": "openssh-server", "git": "git", "ruby": "ruby", "puma": "puma", "bundle": "ruby-bundler",
          "unshare": "util-linux"}
AP_PORT = 8750
DEFAULT_SUBNET = "127.0.0"
"""Hosts on SUBNET.11, .12...; the access point on SUBNET.1 (``--subnet`` moves them all)."""
AP_KEY_ENV = "PAMPA_AP_KEY"
DEMO_KEY = "pampa-demo-access-point-key"


def fleet_hosts(per_role: int) -> list[tuple[str, tuple[str, ...]]]:
    hosts = []
    for role in ("kepler", "euler", "newton", "copernico"):
        for i in range(1, per_role + 1):
            hosts.append((f"{role}-{i}", (role,)))
    return hosts


#: A process of the demo app is up when its heartbeat comes from the pid its restart recorded.
_BEATING = 'test "$(cut -d" " -f1 ~/run/{0}.heartbeat 2>/dev/null)" = "$(cat ~/run/{0}.pid)"'

#: The demo's health checks: puma answers with the revision just deployed; processes keep beating.
DEMO_CHECKS = {
    "web": {"roles": ["kepler", "euler"], "url": "http://{address}:9292/", "contains": "revision={revision}",
            "retries": 20, "interval": 0.5, "timeout": 3},
    "processes": {"roles": ["kepler", "copernico"], "retries": 20, "interval": 0.5, "timeout": 3,
                  "run": " && ".join(_BEATING.format(p) for p in ("dispatcher", "jobs", "planner"))},
    "workers": {"roles": ["newton"], "retries": 20, "interval": 0.5, "timeout": 3, "run": _BEATING.format("worker")},
}


def ap_address(fleet: Fleet) -> str:
    """The access point's address: SUBNET.1 of the fleet's subnet."""
    return fleet.hosts[0].address.rsplit(".", 1)[0] + ".1"


def demo_stage(fleet: Fleet) -> dict:
    """The demo stage: the fleet's hosts, its access point, the app's pid-file restart script, checks."""
    data = fleet.stage_data(
        access_point={"url": f"http://{ap_address(fleet)}:{AP_PORT}",
                      "api_key": f"${{{AP_KEY_ENV}:-{DEMO_KEY}}}"},
        # Every demo host has its own checkout, so divisions and dispatchers update code as well.
        sequences={"euler": ["git_fetch", "git_reset", "bundle", "restart_puma", "report_version"],
                   "copernico": ["git_fetch", "git_reset", "bundle", "restart_processes", "report_version"]},
        # The demo app's bin/restart appends each process's output to ~/log/NAME.log (no journald here).
        logs={"files": ["~/log/{unit}.log"]},
        checks=DEMO_CHECKS)
    return data


DEFAULT_DIR = "/tmp/pampa-demo"


def demo_fleet(root: Path | str = DEFAULT_DIR, per_role: int = 1, subnet: str = DEFAULT_SUBNET) -> Fleet:
    return Fleet(root, fleet_hosts(per_role), subnet=subnet, first=11)


def demo_stage_text(fleet: Fleet) -> str:
    header = ("# The demo stage, written by `pampa demo` for its local fleet of sshd hosts\n"
              "# (stages/demo.yml in the repository is the one for the default --dir /tmp/pampa-demo).\n"
              "# Restarts use the demo app's pid-file script instead of systemd; see units.restart. Puma runs\n"
              "# in cluster mode and restarts one worker at a time (units.puma_restart: phased), so a deploy\n"
              "# refuses no request; the other services are drained (TERM, then KILL after units.stop_timeout).\n"
              "# Checks run on each host after the restarts: puma must answer with the revision just deployed,\n"
              "# and every restarted process must be the one writing its heartbeat.\n")
    return header + yaml.safe_dump(demo_stage(fleet), sort_keys=False)


def write_demo_stage(fleet: Fleet, stages: Path) -> Path:
    stages.mkdir(parents=True, exist_ok=True)
    path = stages / "demo.yml"
    path.write_text(demo_stage_text(fleet))
    return path


def _preflight() -> None:
    missing = [pkg for tool, pkg in NEEDED.items() if not shutil.which(tool) and
               not (tool == "sshd" and os.path.exists("/usr/sbin/sshd"))]
    if missing:
        raise Refused(f"demo: missing tools; install them with: apt-get install -y {' '.join(sorted(set(missing)))} "
                      "ruby-sequel ruby-sqlite3 ruby-rack (or run ./setup.sh demo)")
    if os.geteuid() != 0:
        raise Refused("demo: the local fleet uses mount namespaces for per-host homes, which needs root; "
                      "run it as root (e.g. in a throwaway VM or container)")


def _ours_running(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


def check_addresses(root: Path, fleet: Fleet) -> None:
    """Refuse when another demo or fleet already answers on our addresses (we would meet its host keys)."""
    taken = [f"{h.address}:{h.port}" for h in fleet.hosts
             if listening(h.address, h.port) and not (root / "hosts" / h.name / "sshd" / "unshare.pid").exists()]
    if listening(ap_address(fleet), AP_PORT) and not _ours_running(root / "access-point.pid"):
        taken.append(f"{ap_address(fleet)}:{AP_PORT}")
    if taken:
        raise Refused(f"demo: {', '.join(taken)} {'is' if len(taken) == 1 else 'are'} already taken by another "
                      "process (another `pampa demo` from another --dir?); stop it with `pampa demo down --dir "
                      f"THAT_DIR`, or give this one other addresses with --subnet{_free_subnet_hint(fleet)}")


def _free_subnet_hint(fleet: Fleet) -> str:
    """``, e.g. --subnet 127.0.6``: a subnet where none of this fleet's addresses answers now (not the taken one)."""
    ours = fleet.hosts[0].address.rsplit(".", 1)[0]
    for third in range(5, 255):
        subnet = f"127.0.{third}"
        if subnet == ours:
            continue
        addresses = [(f"{subnet}.{h.address.rsplit('.', 1)[1]}", h.port) for h in fleet.hosts]
        if not any(listening(a, port, timeout=0.2) for a, port in [*addresses, (f"{subnet}.1", AP_PORT)]):
            return f", e.g. --subnet {subnet} (free now)"
    return ""


def _start_access_point(root: Path, fleet: Fleet) -> None:
    pidfile = root / "access-point.pid"
    if pidfile.exists() and _ours_running(pidfile):
        return
    address = ap_address(fleet)
    log = open(root / "access-point.log", "ab")
    env = {**os.environ, AP_KEY_ENV: os.environ.get(AP_KEY_ENV, DEMO_KEY)}
    proc = subprocess.Popen([sys.executable, "-m", "pampa_deployer", "access-point", "serve", "--port", str(AP_PORT),
                             "--bind", address, "--db", str(root / "access-point.sqlite3")], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    pidfile.write_text(str(proc.pid))
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://{address}:{AP_PORT}/api/v1/nodes", timeout=1)
        except urllib.error.HTTPError:
            return  # 401 without a key: it is up
        except OSError:
            time.sleep(0.05)


def _down(root: Path, console) -> int:
    pidfile = root / "access-point.pid"
    if not (root / "fleet.json").exists() and not pidfile.exists():
        console.print(f"no demo fleet in {root}: nothing to stop (pass the --dir the demo was started with)")
        return 0
    if (root / "fleet.json").exists():
        Fleet(root).stop()
    if pidfile.exists():
        try:
            os.killpg(int(pidfile.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        pidfile.unlink()
    console.print(f"demo fleet in {root} stopped (files kept; remove the folder to start afresh)")
    return 0


def next_steps(root: Path) -> list[str]:
    """What to try after the demo; names --dir when it is not the default, so `down` stops this fleet."""
    where = "" if str(root) == DEFAULT_DIR else f" --dir {root}"
    return [f"try: pampa --stages {root / 'stages'} status demo", f"stop it: pampa demo down{where}"]


def demo(args) -> int:
    root = Path(args.dir)
    console = output.console(args)
    if args.action == "down":
        return _down(root, console)
    _preflight()
    subnet = getattr(args, "subnet", DEFAULT_SUBNET)
    fleet = demo_fleet(root, args.per_role, subnet)
    check_addresses(root, fleet)
    console.print(f"demo: starting {len(fleet.hosts)} sshd hosts on {subnet}.x:{fleet.port} in {root}")
    fleet.create()
    try:
        fleet.start()
    except AddressTaken as e:
        raise Refused(f"demo: {e}; stop the other one, or pass --subnet{_free_subnet_hint(fleet)}") from None
    _start_access_point(root, fleet)
    stages = root / "stages"
    path = write_demo_stage(fleet, stages)
    console.print(f"demo: stage file {path}; origin {fleet.origin} at {fleet.revisions()[0][:12]}")
    from .run import run
    deploy_args = argparse.Namespace(
        command="deploy", stage="demo", stages=str(stages), branch=None, roles=None, hosts=None, dry_run=False,
        parallel=None, batch=None, batch_wait=0.0, max_fail=None, message="pampa demo", lock_wait=10.0,
        no_lock=False, grace=30.0, accept_new_host_keys=False, report=None, junit=None, verbose=False,
        ci=getattr(args, "ci", False))
    try:
        run(deploy_args)
    finally:
        _print_urls(fleet, console)
    for line in next_steps(root):
        console.print(line)
    return 0


def _print_urls(fleet: Fleet, console) -> None:
    for host in fleet.hosts:
        if not {"kepler", "euler"} & set(host.roles):
            continue
        url = f"http://{host.address}:9292/"
        body = "not answering"
        for _ in range(60):
            try:
                body = urllib.request.urlopen(url, timeout=1).read().decode().strip()
                break
            except OSError:
                time.sleep(0.25)
        console.print(f"{host.name}: {url} -> {body}")
