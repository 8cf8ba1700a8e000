"""Pull mode at scale: one access point process, N agents long-polling it (not part of the test suite).

    bench/run pull [--agents 1000] [--keplers 10] [--requests 3] [--step-seconds 0.5] [--subnet 127.0.130]
    bench/run pull --agents 10000                # issue 24's target: one process, 10,000 agents
    bench/run pull --postgres --servers 2     # two access point processes sharing one PostgreSQL

The access point runs as its own process (`pampa access-point serve`, SQLite), or as `--servers K`
processes on a throwaway PostgreSQL (`--postgres`, the test suite's tests/pgserver.py), the agents
spread over them round-robin, so wake-ups cross processes (LISTEN/NOTIFY). The agents are
simulated in this process with asyncio, one keep-alive connection each, speaking the real protocol:
long-poll `next`, `start`, a few `progress` events, `finish ok`. Their sequences are not run
(that is the fleet tests' job): each "step" is a sleep, so what is measured is the coordinator.

Per request it prints:
- request -> every kepler started: from `POST /deploys` returning to the last kepler's `start` answered;
- request -> every ungated node started (newtons);
- ALLOWED -> every gated node started: from the last kepler's `finish` answered (the gate opens in that
  call) to the last euler/copernico `start` answered;
- request -> DONE;
and for the whole run the server's CPU seconds (user+system, from /proc/PID/stat), its CPU share,
its peak RSS and thread count (sampled every 100 ms).
With `--profile FILE` the server runs under cProfile (read it with `python -m pstats FILE`).
Roles: `--keplers` keplers, the rest split half newtons, a quarter eulers, a quarter copernicos.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from procwatch import cpu_seconds, sample  # noqa: E402

KEY = "bench-pull-admin-key"


class Conn:
    """One keep-alive HTTP/1.1 connection (what urllib does not give): enough for the protocol."""

    def __init__(self, host: str, port: int, token: str, source: str | None = None):
        self.host, self.port, self.token, self.source = host, port, token, source
        self.reader = self.writer = None

    async def call(self, method: str, path: str, body: dict | None = None, timeout: float = 60) -> dict:
        for attempt in range(3):
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(
                        self.host, self.port, local_addr=(self.source, 0) if self.source else None)
                data = json.dumps(body).encode() if body is not None else b""
                head = (f"{method} /api/v1{path} HTTP/1.1\r\nHost: ap\r\nAuthorization: Bearer {self.token}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
                self.writer.write(head + data)
                await self.writer.drain()
                raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
                status = int(raw.split(b" ", 2)[1])
                length = next(int(l.split(b":")[1]) for l in raw.split(b"\r\n") if l.lower().startswith(b"content-length"))
                payload = json.loads(await self.reader.readexactly(length)) if length else {}
                if b"connection: close" in raw.lower():
                    self.close()
                if status >= 400:
                    raise RuntimeError(f"{method} {path}: {status} {payload}")
                return payload
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                self.close()
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


FAILURES: dict[str, int] = {}
SERVERS: list = []


async def agent(name: str, token: str, port: int, step_seconds: float, log: dict, stop: asyncio.Event,
                source: str | None = None) -> None:
    """An agent that never gives up (as a real one backs off and retries); its failures are counted."""
    while not stop.is_set():
        try:
            await agent_once(name, token, port, step_seconds, log, stop, source)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, RuntimeError, ValueError) as e:
            why = f"{type(e).__name__}: {str(e)[:60]}"
            FAILURES[why] = FAILURES.get(why, 0) + 1
            await asyncio.sleep(1)


async def agent_once(name: str, token: str, port: int, step_seconds: float, log: dict, stop: asyncio.Event,
                     source: str | None = None) -> None:
    conn = Conn("127.0.0.1", port, token, source)
    while not stop.is_set():
        try:
            found = (await conn.call("GET", f"/nodes/{name}/next?wait=25", timeout=40))["deploy"]
        except RuntimeError:
            await asyncio.sleep(1)
            continue
        if found is None:
            continue
        did = found["id"]
        try:
            await conn.call("POST", f"/deploys/{did}/nodes/{name}/start", {})
        except RuntimeError:
            continue
        log.setdefault(did, {})[name] = {"started": time.time()}
        for step in ("bundle", "restart"):
            await conn.call("POST", f"/deploys/{did}/nodes/{name}/progress",
                            {"events": [{"kind": "step_started", "step": step}]})
            await asyncio.sleep(step_seconds)
            await conn.call("POST", f"/deploys/{did}/nodes/{name}/progress",
                            {"events": [{"kind": "step_finished", "step": step, "ok": True}]})
        await conn.call("POST", f"/deploys/{did}/nodes/{name}/finish", {"result": "ok", "revision": "0" * 40})
        log[did][name]["finished"] = time.time()
    conn.close()


def start_postgres():
    """A throwaway PostgreSQL server, the one the test suite uses (tests/pgserver.py)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import pgserver
    why = pgserver.why_not()
    if why:
        sys.exit(f"--postgres: {why}")
    return pgserver.PostgresServer().start()


def postgres_cpu(server) -> float:
    """CPU seconds of every process of the PostgreSQL server (its postmaster and backends)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"postgres" in stat.read_bytes().split(b"\0")[0]:
                total += cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):
            pass
    return total


def total_cpu(servers) -> float:
    return sum(cpu_seconds(s.pid) for s in servers)


async def wait_until_up(conn: "Conn") -> None:
    for _ in range(100):
        try:
            await conn.call("GET", "/deploys")
            conn.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    sys.exit("an access point process did not start")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fleet(args) -> tuple[list[str], dict, list[dict]]:
    """Names, role per name, and the request's node list: keplers, then half newtons, a quarter eulers, copernicos."""
    names = [f"kepler-{i}" for i in range(args.keplers)]
    rest = args.agents - args.keplers
    newtons, eulers = rest // 2, rest // 4
    names += [f"newton-{i}" for i in range(newtons)] + [f"euler-{i}" for i in range(eulers)]
    names += [f"copernico-{i}" for i in range(rest - newtons - eulers)]
    role = {n: n.split("-")[0] for n in names}
    nodes = [{"node": n, "roles": [role[n]], "gated": role[n] in ("euler", "copernico"),
              "opens_gate": role[n] == "kepler"} for n in names]
    return names, role, nodes


def start_servers(args, database: str) -> tuple[list[subprocess.Popen], list[int]]:
    ports = [free_port() for _ in range(args.servers)]
    profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    more = ["--max-connections", str(args.agents + 1000)] if args.agents + 1000 > 4096 else []  # one each, and room
    env = {**os.environ, "PAMPA_AP_KEY": KEY}
    if args.server_src:
        env["PYTHONPATH"] = args.server_src
    logs = Path(tempfile.mkdtemp(prefix="pampa-pull-logs-"))
    servers = [subprocess.Popen([sys.executable, *(profile if i == 0 else []), "-m", "pampa_deployer", "access-point",
                                 "serve", "--port", str(p), "--database", database, *more], env=env,
                                cwd=args.server_src or None, stdout=subprocess.DEVNULL,
                                stderr=open(logs / f"server-{i}.log", "w")) for i, p in enumerate(ports)]
    for server, i in zip(servers, range(len(servers))):
        server.log = logs / f"server-{i}.log"
    return servers, ports


async def issue_tokens(port: int, names: list[str], role: dict) -> dict:
    tokens = {}

    async def issue(batch):
        conn = Conn("127.0.0.1", port, KEY)
        for n in batch:
            tokens[n] = (await conn.call("POST", "/tokens", {"stage": "bench", "node": n, "roles": [role[n]]}))["token"]
        conn.close()
    await asyncio.gather(*(issue(names[i::8]) for i in range(8)))
    return tokens


async def one_request(admin: Conn, nodes: list[dict], names: list[str], role: dict, log: dict, args) -> dict:
    """Request, wait for DONE (the request's row from the list, not its runs), and read the agents' log."""
    created = await admin.call("POST", "/deploys", {"stage": "bench", "branch": "main", "nodes": nodes,
                                                    "requested_by": "bench"})
    requested, did = time.time(), created["id"]
    deadline = time.monotonic() + args.timeout
    while True:
        d = next(x for x in (await admin.call("GET", "/deploys?stage=bench"))["deploys"] if x["id"] == did)
        if d["state"] in ("DONE", "FAILED"):
            break
        if time.monotonic() > deadline or any(server.poll() is not None for server in SERVERS):
            gone = [f"{server.log}: {server.log.read_text()[-1500:]}" for server in SERVERS if server.poll() is not None]
            if gone:
                sys.exit(f"an access point process ended: {gone}")
            d = await admin.call("GET", f"/deploys/{did}")
            waiting = [n["node"] for n in d["nodes"] if n["state"] in ("waiting", "running")]
            sys.exit(f"request {did} not done after {args.timeout:g} s: {len(waiting)} nodes still waiting or "
                     f"running ({', '.join(waiting[:5])}...); agents' failures: {dict(list(FAILURES.items())[:5])}")
        await asyncio.sleep(0.5)
    runs = log[did]

    def last(roles, what):
        return max(runs[n][what] for n in names if role[n] in roles)
    return {"request->keplers started": last(("kepler",), "started") - requested,
            "request->newtons started": last(("newton",), "started") - requested,
            "ALLOWED->gated started": last(("euler", "copernico"), "started") - last(("kepler",), "finished"),
            "request->DONE": d["ended_at"] - d["created_at"], "state": d["state"]}


def report(args, rows: list[dict], servers, peaks, cpu: float, wall: float, postgres) -> None:
    rest = args.agents - args.keplers
    print(f"pull mode: {args.agents} agents ({args.keplers} keplers, {rest // 2} newtons, {rest // 4} eulers, "
          f"{rest - rest // 2 - rest // 4} copernicos), {len(servers)} access point process(es) on "
          f"{'PostgreSQL' if postgres else 'SQLite'}{' from ' + args.server_src if args.server_src else ''}")
    for i, r in enumerate(rows, 1):
        print(f"  request {i}: " + ", ".join(f"{k} {v:.2f}s" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in r.items()))
    for key in ("request->keplers started", "request->newtons started", "ALLOWED->gated started"):
        print(f"  median {key}: {statistics.median(r[key] for r in rows):.2f}s")
    print(f"  server CPU (all processes): {cpu:.1f}s over {wall:.1f}s ({100 * cpu / wall:.0f}% of one core); "
          f"per process peak RSS {max(p.get('rss_mb', 0) for p in peaks):.0f} MB, "
          f"peak threads {max(p.get('threads', 0) for p in peaks)}; load average {os.getloadavg()[0]:.1f}")
    if postgres:
        print(f"  PostgreSQL's own processes: {postgres_cpu(postgres):.1f} CPU-s since it started")
    if FAILURES:
        print(f"  agents' failed calls (each retried): {dict(list(FAILURES.items())[:10])}")


async def run(args) -> None:
    names, role, nodes = fleet(args)
    database, postgres = str(Path(tempfile.mkdtemp(prefix="pampa-pull-bench-")) / "ap.sqlite3"), None
    if args.postgres:
        postgres = start_postgres()
        database = postgres.fresh_url()
    servers, ports = start_servers(args, database)
    SERVERS[:] = servers
    peaks: list[dict] = [{} for _ in servers]
    stop_sampling = threading.Event()
    try:
        admin = Conn("127.0.0.1", ports[0], KEY)
        for port in ports:
            await wait_until_up(Conn("127.0.0.1", port, KEY))
        tokens = await issue_tokens(ports[0], names, role)
        for server, peak in zip(servers, peaks):
            threading.Thread(target=sample, args=(server.pid, peak, stop_sampling), daemon=True).start()
        log: dict = {}
        stop = asyncio.Event()
        # at most 1,000 agents per source address (the server allows 1,024 connections from one address), started
        # 500 at a time: this one process is also every agent, and a connect storm of 10,000 starves it
        tasks = []
        for i, n in enumerate(names):
            tasks.append(asyncio.create_task(agent(n, tokens[n], ports[i % len(ports)], args.step_seconds, log, stop,
                                                   f"{args.subnet}.{1 + i // 1000}")))
            if i % 500 == 499:
                await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # every agent parked in its long poll
        cpu0, t0 = total_cpu(servers), time.monotonic()
        rows = []
        for _ in range(args.requests):
            rows.append(await one_request(admin, nodes, names, role, log, args))
            await asyncio.sleep(2)
        wall, cpu = time.monotonic() - t0, total_cpu(servers) - cpu0
        stop.set()
        report(args, rows, servers, peaks, cpu, wall, postgres)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        stop_sampling.set()
        for server in servers:
            server.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)  # cProfile writes on SIGINT
        for server in servers:
            server.wait(30)
        if postgres:
            postgres.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--keplers", type=int, default=10)
    p.add_argument("--requests", type=int, default=3)
    p.add_argument("--step-seconds", type=float, default=0.5)
    p.add_argument("--servers", type=int, default=1, help="access point processes sharing one database "
                   "(agents spread over them; more than one needs --postgres)")
    p.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL and use it as the store")
    p.add_argument("--profile", metavar="FILE", help="run the server under cProfile and write its stats to FILE")
    p.add_argument("--server-src", help="run the server from this checkout (before/after comparisons)")
    p.add_argument("--timeout", type=float, default=300, help="give up on a request not done after this (s)")
    p.add_argument("--subnet", default="127.0.130", help="the agents' source addresses: SUBNET.1, .2, ... (1,000 each)")
    args = p.parse_args()
    if args.servers > 1 and not args.postgres:
        p.error("--servers above 1 needs --postgres (several processes on one SQLite file are not supported)")
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.agents + 256)), hard))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
