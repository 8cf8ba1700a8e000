"""``pampa exec STAGE [--roles R] [--hosts H] -- COMMAND``: one command on many hosts at once.

Each host's output is collected and printed as one block when the host finishes, so
blocks never interleave; then a summary. The exit code is 1 when any host failed or
could not be reached.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from ..commands.adhoc import adhoc_command, adhoc_script
from ..engine.backends.pool import open_pool
from ..errors import ConnectError, DeployFailed, Interrupted, UsageError
from ..inventory import load_stage
from ..plan import select_hosts
from ..render.words import count
from .interrupt import interruptible
from .parser import csv


def declare(cmd) -> None:
    p = cmd("exec", "run one command on many hosts at once: output grouped per host, per-host exit codes",
            "pampa exec production --roles newton -- 'tail -n 3 log/worker.log'\n"
            "  pampa exec production --json -- git rev-parse HEAD")
    p.add_argument("stage")
    p.add_argument("argv", nargs="*", metavar="-- COMMAND",
                   help="the command, run in each host's code path with the stage's prefix and env")
    p.add_argument("--roles", type=csv, help="only hosts of these roles, comma-separated")
    p.add_argument("--hosts", type=csv, help="only these hosts (names or shell globs), comma-separated")
    p.add_argument("--parallel", type=int, help="hosts at once (default: stage `parallel`)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="stop the command on a host after this long (it fails with exit 124)")
    p.add_argument("--json", action="store_true", help="print every host's exit code and output as JSON")
    p.add_argument("--accept-new-host-keys", action="store_true",
                   help="trust and save unknown host keys (changed keys are always refused)")
    p.set_defaults(handler=exec_)


@dataclass
class HostOutput:
    """What one host said and how its command ended."""

    host: str
    roles: tuple[str, ...]
    exit_code: int | None = None
    error: str | None = None
    lines: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    def as_json(self) -> dict:
        return {"host": self.host, "roles": list(self.roles), "ok": self.ok, "exit_code": self.exit_code,
                "error": self.error, "seconds": round(self.seconds, 3),
                "stdout": "".join(line + "\n" for s, line in self.lines if s == "stdout"),
                "stderr": "".join(line + "\n" for s, line in self.lines if s == "stderr")}


def block(out: HostOutput) -> list[str]:
    """One host's block: a header with its result, then every line it printed."""
    if out.error is not None:
        head = f"=== {out.host} [{','.join(out.roles)}] UNREACHABLE: {out.error}"
    else:
        state = "ok" if out.ok else "FAILED"
        head = f"=== {out.host} [{','.join(out.roles)}] {state} (exit {out.exit_code}, {out.seconds:.2f}s)"
    return [head] + [line for _, line in out.lines]


def summary(outs: list[HostOutput]) -> str:
    bad = [o for o in outs if not o.ok]
    text = f"exec on {count(len(outs), 'host')}: {len(outs) - len(bad)} ok, {len(bad)} failed"
    if bad:
        text += " (" + ", ".join(f"{o.host} " + ("unreachable" if o.error else f"exit {o.exit_code}")
                                 for o in bad[:10]) + (" ..." if len(bad) > 10 else "") + ")"
    return text


def run_everywhere(pool, hosts, argv, redactor, timeout, parallel, on_done) -> list[HostOutput]:
    """Run on every host at once; ``on_done(HostOutput)`` is called (serialised) as each host ends."""
    printing = threading.Lock()
    stopped = threading.Event()
    results = {h.name: HostOutput(h.name, h.roles) for h in hosts}

    def one(host) -> None:
        out = results[host.name]
        t0 = time.monotonic()
        try:
            backend = pool.connect(host)
            if stopped.is_set():
                out.error = "interrupted before it started"
            else:
                result = backend.run(adhoc_command(host, argv, redactor, timeout),
                                     lambda stream, line: out.lines.append((stream, line)))
                out.exit_code = result.exit_code
                if result.exit_code == 124 and "[pampa] timed out" in result.stderr:
                    out.lines.append(("stderr", f"[pampa] timed out after {timeout:g}s; stopped on the host"))
        except ConnectError as e:
            out.error = e.message
        except Exception as e:  # noqa: BLE001 - one host's SSH error fails that host, not the others
            out.error = f"{type(e).__name__}: {e}"
        finally:
            out.seconds = time.monotonic() - t0
            pool.done(host)
        with printing:
            on_done(out)

    ex = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts))))
    futures = [ex.submit(one, h) for h in hosts]
    try:
        while not all(f.done() for f in futures):
            wait(futures, timeout=0.5)
    except KeyboardInterrupt:
        stopped.set()
        pool.abort_all()  # closes every channel: each remote command is stopped (commands/watch.py)
        wait(futures, timeout=30)
        raise
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
    return [results[h.name] for h in hosts]


def exec_(args) -> int:
    argv = list(args.argv or [])
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv or not adhoc_script(argv).strip():
        raise UsageError("pampa exec: give the command after `--`, e.g. `pampa exec production -- uptime`")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout: expected a positive number of seconds")
    stage = load_stage(args.stage, args.stages)
    hosts = select_hosts(stage, args.roles, args.hosts)
    parallel = args.parallel if args.parallel is not None else stage.parallel
    pool = open_pool(stage, accept_new=args.accept_new_host_keys, channels=True)

    def show(out: HostOutput) -> None:
        if not args.json:
            print("\n".join(block(out)), flush=True)

    outs: list[HostOutput] = []
    try:
        with interruptible() as signals:
            try:
                outs = run_everywhere(pool, hosts, argv, stage.redactor, args.timeout, parallel, show)
            except KeyboardInterrupt:
                signum = signals.signum or 2
                raise Interrupted("exec interrupted; the command was stopped on every host still running it",
                                  signum) from None
    finally:
        pool.close_all()
    if args.json:
        print(json.dumps({"stage": stage.name, "command": stage.redactor.mask(adhoc_script(argv)),
                          "ok": all(o.ok for o in outs), "hosts": [o.as_json() for o in outs]}, indent=2))
    else:
        print(summary(outs), flush=True)
    bad = [o.host for o in outs if not o.ok]
    if bad:
        raise DeployFailed(f"exec failed on {len(bad)} of {count(len(outs), 'host')}: {', '.join(bad[:10])}"
                           f"{' ...' if len(bad) > 10 else ''}")
    return 0


__all__ = ["exec_", "run_everywhere", "block", "summary", "HostOutput"]
