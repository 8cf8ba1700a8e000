"""``pampa logs STAGE``: each host's recent log lines, prefixed by host; ``-f`` follows until Ctrl-C."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait

from ..commands.logs import host_units, log_command
from ..engine.backends.pool import open_pool
from ..errors import ConnectError, DeployFailed, Interrupted, UsageError
from ..inventory import load_stage
from ..plan import select_hosts, template_variables
from .interrupt import interruptible
from .parser import csv


def declare(cmd) -> None:
    p = cmd("logs", "the last lines of each host's logs (journald units, or the stage's log files), "
                    "prefixed by host; -f follows until Ctrl-C",
            "pampa logs production --roles newton -n 50 -f")
    p.add_argument("stage")
    p.add_argument("--roles", type=csv, help="only hosts of these roles, comma-separated")
    p.add_argument("--hosts", type=csv, help="only these hosts (names or shell globs), comma-separated")
    p.add_argument("--unit", "-u", action="append", metavar="UNIT",
                   help="only this unit (repeatable); default: the units the host's roles restart")
    p.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="lines per log (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    p.add_argument("--accept-new-host-keys", action="store_true",
                   help="trust and save unknown host keys (changed keys are always refused)")
    p.set_defaults(handler=logs)


def _targets(stage, hosts, args) -> list[tuple]:
    """(host, command) for every host that has something to show; fails when none has."""
    wanted = set(args.roles or [])
    found = []
    for host in hosts:
        roles = tuple(r for r in host.roles if not wanted or r in wanted)
        variables = template_variables(stage, host)
        units = list(args.unit) if args.unit else host_units(stage, host, variables, roles)
        command = log_command(stage, host, variables, units, args.lines, args.follow)
        if command is not None:
            found.append((host, command))
    if not found:
        raise UsageError(f"pampa logs {stage.name}: the selected hosts restart no unit and `logs.files` is not "
                         "set; pass --unit UNIT or set `logs.files` in the stage")
    return found


def logs(args) -> int:
    if args.lines < 0:
        raise UsageError("-n/--lines: expected zero or more lines")
    stage = load_stage(args.stage, args.stages)
    targets = _targets(stage, select_hosts(stage, args.roles, args.hosts), args)
    width = max(len(h.name) for h, _ in targets)
    pool = open_pool(stage, accept_new=args.accept_new_host_keys, channels=True)
    printing = threading.Lock()
    failed: dict[str, str] = {}

    def emit(host, lines) -> None:
        with printing:
            for line in lines:
                print(f"{host.name.ljust(width)} | {line}", flush=True)

    def one(host, command) -> None:
        lines: list[str] = []
        live = args.follow
        on_line = (lambda stream, line: emit(host, [line])) if live else \
            (lambda stream, line: lines.append(line))
        try:
            result = pool.connect(host).run(command, on_line)
            if not result.ok and not stopped.is_set():
                failed[host.name] = f"exit {result.exit_code}"
        except ConnectError as e:
            failed[host.name] = e.message
            lines.append(f"unreachable: {e.message}")
            if live:
                emit(host, lines)
        except Exception as e:  # noqa: BLE001 - one host's SSH error must not hide the others' logs
            failed[host.name] = f"{type(e).__name__}: {e}"
        if not live:
            emit(host, lines)

    stopped = threading.Event()
    ex = ThreadPoolExecutor(max_workers=max(1, min(64, len(targets))))
    try:
        with interruptible() as signals:
            futures = [ex.submit(one, h, c) for h, c in targets]
            try:
                while not all(f.done() for f in futures):
                    wait(futures, timeout=0.5)
            except KeyboardInterrupt:
                stopped.set()
                pool.abort_all()  # closes the channels: each host's tail/journalctl is stopped there
                wait(futures, timeout=30)
                if args.follow and signals.signum == 2:
                    return 0  # Ctrl-C is how `logs -f` ends
                raise Interrupted("logs interrupted; stopped on every host", signals.signum or 2) from None
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
        pool.close_all()
    if failed:
        raise DeployFailed("logs: " + "; ".join(f"{h}: {why}" for h, why in sorted(failed.items())))
    return 0
