"""The access point against a hostile client: a legitimate agent's latency, the server's memory and the
database's growth while one client misbehaves (not part of the test suite).

    bench/run hostile [--scenarios idle,slowloris,followers,pipelined,bodies,flood] [--seconds 15] [--postgres]
    bench/run hostile --before /work/main           # each scenario on that checkout's server, then on this one

The server is a real `pampa access-point serve` process (SQLite, or a throwaway PostgreSQL with
`--postgres`). The attackers run in this process (asyncio), each from its own source address in
`--subnet` (127.0.130 by default: loopback answers on all of 127/8). The legitimate client is a
separate process (so the attackers' own event loop does not delay it): an agent of a small request
that, 25 times a second on a fresh connection each time, alternates `GET /nodes/NAME/next?wait=0`
(a read) and an empty `POST .../progress` (a heartbeat: a write), as a real agent does.

Scenarios (each runs `--seconds` after a short warm-up):
- baseline: nothing else;
- idle: 800 connections that send nothing (reopened when the server closes them);
- slowloris: 800 connections that send a request head one byte a second;
- followers: a 2,000-node request, 300 followers long-polling its events (`after=` their cursor),
  while 20 of its nodes report progress 4 times a second each;
- pipelined: 20 connections each pipelining requests for the 2,000-node request and never reading;
- bodies: 800 unauthenticated connections each sending a 256 KiB body, again and again;
- flood: one node token posting 120 events of 2,000 characters per call (just under 256 KiB), on 4
  connections, as fast as the server takes them.

Per scenario: the legitimate client's p50/p99/max latency and errors, the server's peak RSS and its RSS
at the end (after the attack stopped and 3 s passed), the database's growth, the server's CPU, and the
load average (the machine is shared: read every number beside it).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from procwatch import cpu_seconds  # noqa: E402

KEY = "bench-hostile-admin-key"
SCENARIOS = ("baseline", "idle", "slowloris", "followers", "pipelined", "bodies", "flood")


# -- a minimal HTTP/1.1 client on asyncio streams ----------------------------------------------------------
class Conn:
    def __init__(self, port: int, token: str | None, source: str | None = None):
        self.port, self.token, self.source = port, token, source
        self.reader = self.writer = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(self.source, 0) if self.source else None)

    def head(self, method: str, path: str, body: bytes = b"", auth: bool = True) -> bytes:
        lines = [f"{method} /api/v1{path} HTTP/1.1", "Host: ap", f"Content-Length: {len(body)}"]
        if auth and self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def call(self, method: str, path: str, body: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
        if self.writer is None:
            await self.open()
        self.writer.write(self.head(method, path, json.dumps(body).encode() if body is not None else b""))
        await self.writer.drain()
        return await self.answer(timeout)

    async def answer(self, timeout: float = 60) -> tuple[int, dict]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(raw.split(b" ", 2)[1])
        length = next((int(line.split(b":")[1]) for line in raw.split(b"\r\n")
                       if line.lower().startswith(b"content-length")), 0)
        payload = await asyncio.wait_for(self.reader.readexactly(length), timeout) if length else b""
        if b"connection: close" in raw.lower():
            self.close()
        try:
            return status, json.loads(payload) if payload else {}
        except ValueError:
            return status, {}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def must(conn: Conn, method: str, path: str, body: dict | None = None) -> dict:
    status, answer = await conn.call(method, path, body)
    if status >= 400:
        raise RuntimeError(f"{method} {path}: {status} {answer}")
    return answer


# -- the legitimate client: its own process ----------------------------------------------------------------
def probe(port: int, token: str, node: str, deploy_id: int, seconds: float, source: str) -> None:
    """Print JSON {"latencies": [...], "errors": n}: 25 calls a second, each on a new connection."""
    import http.client
    latencies, errors = [], 0
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        t0 = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            if i % 2:
                conn.request("GET", f"/api/v1/nodes/{node}/next?wait=0", headers=headers)
            else:
                conn.request("POST", f"/api/v1/deploys/{deploy_id}/nodes/{node}/progress", body=b'{"events": []}',
                             headers=headers)
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status >= 400:
                errors += 1
        except OSError:
            errors += 1
        took = time.monotonic() - t0
        latencies.append(took)
        time.sleep(max(0.0, 0.04 - took))
    print(json.dumps({"latencies": latencies, "errors": errors}), flush=True)


# -- the attackers ----------------------------------------------------------------------------------------
class Attack:
    def __init__(self, port: int, subnet: str, stop: asyncio.Event, info: dict):
        self.port, self.subnet, self.stop, self.info = port, subnet, stop, info
        self.counts: dict[str, int] = {}

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    async def idle(self, n: int = 800) -> None:
        await asyncio.gather(*(self._idle_one(i) for i in range(n)))

    async def _idle_one(self, i: int) -> None:
        while not self.stop.is_set():
            try:
                r, w = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(f"{self.subnet}.11", 0))
                self.count("opened")
                await asyncio.wait_for(r.read(1 << 16), 30)  # the server closes it (or 30 s pass)
                w.close()
            except (OSError, asyncio.TimeoutError):
                self.count("refused")
                await asyncio.sleep(0.5)
            await asyncio.sleep(0)

    async def slowloris(self, n: int = 800) -> None:
        await asyncio.gather(*(self._slow_one(i) for i in range(n)))

    async def _slow_one(self, i: int) -> None:
        head = b"GET /api/v1/deploys HTTP/1.1\r\nHost: ap\r\nX-Slow: " + b"a" * 200
        while not self.stop.is_set():
            try:
                r, w = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(f"{self.subnet}.12", 0))
                self.count("opened")
                for byte in head:
                    if self.stop.is_set() or r.at_eof():
                        break
                    w.write(bytes([byte]))
                    await w.drain()
                    await asyncio.sleep(1.0)
                w.close()
            except OSError:
                self.count("refused")
                await asyncio.sleep(0.5)

    async def followers(self, n: int = 300, reporters: int = 20) -> None:
        big, tokens = self.info["big"], self.info["big_tokens"]
        tasks = [self._follow(big) for _ in range(n)]
        tasks += [self._report(big, name, token) for name, token in list(tokens.items())[:reporters]]
        await asyncio.gather(*tasks)

    async def _follow(self, deploy_id: int) -> None:
        conn, last = Conn(self.port, KEY, f"{self.subnet}.13"), 0
        while not self.stop.is_set():
            try:
                status, page = await conn.call("GET", f"/deploys/{deploy_id}/events?after={last}&wait=20")
                self.count(f"follow {status}")
                if status == 200:
                    last = page.get("last", last)
                else:
                    await asyncio.sleep(1)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError,
                    ValueError):
                conn.close()
                self.count("follow error")
                await asyncio.sleep(0.5)

    async def _report(self, deploy_id: int, name: str, token: str) -> None:
        conn, i = Conn(self.port, token, f"{self.subnet}.14"), 0
        while not self.stop.is_set():
            i += 1
            try:
                status, _ = await conn.call("POST", f"/deploys/{deploy_id}/nodes/{name}/progress",
                                            {"events": [{"kind": "output", "step": "bundle", "line": f"line {i}"}]})
                self.count(f"report {status}")
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                conn.close()
            await asyncio.sleep(0.25)

    async def pipelined(self, n: int = 20) -> None:
        await asyncio.gather(*(self._pipeline_one(i) for i in range(n)))

    async def _pipeline_one(self, i: int) -> None:
        conn = Conn(self.port, KEY, f"{self.subnet}.15")
        request = conn.head("GET", f"/deploys/{self.info['big']}")
        while not self.stop.is_set():
            try:
                await conn.open()
                while not self.stop.is_set():
                    conn.writer.write(request * 50)
                    self.count("sent 50")
                    while not self.stop.is_set():  # never read; write more only when the server took these
                        try:
                            await asyncio.wait_for(conn.writer.drain(), 1.0)
                            break
                        except asyncio.TimeoutError:
                            continue
            except OSError:
                self.count("closed by server")
            conn.close()
            await asyncio.sleep(0.2)

    async def bodies(self, n: int = 800) -> None:
        await asyncio.gather(*(self._body_one(i) for i in range(n)))

    async def _body_one(self, i: int) -> None:
        body = b"{" + b" " * (256 * 1024 - 2) + b"}"
        while not self.stop.is_set():
            conn = Conn(self.port, None, f"{self.subnet}.16")
            try:
                await conn.open()
                conn.writer.write(conn.head("POST", "/deploys", body, auth=False))
                await conn.writer.drain()
                status, _ = await conn.answer(30)
                self.count(f"body {status}")
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                self.count("body error")
            conn.close()
            await asyncio.sleep(0.05)

    async def flood(self, n: int = 4) -> None:
        await asyncio.gather(*(self._flood_one() for _ in range(n)))

    async def _flood_one(self) -> None:
        name, token, deploy_id = self.info["flood_node"], self.info["flood_token"], self.info["flood"]
        events = {"events": [{"kind": "output", "step": "bundle", "line": "x" * 2000} for _ in range(120)]}
        conn = Conn(self.port, token, f"{self.subnet}.17")
        while not self.stop.is_set():
            try:
                status, _ = await conn.call("POST", f"/deploys/{deploy_id}/nodes/{name}/progress", events)
                self.count(f"flood {status}")
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                conn.close()
                await asyncio.sleep(0.1)


# -- the server -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def db_bytes(database: str, postgres) -> int:
    if postgres is not None:
        import psycopg
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            return conn.execute("SELECT pg_database_size('postgres')").fetchone()[0]
    import sqlite3  # the database's pages in use (the WAL counted in, free pages out), not its files' sizes
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        pages, free, size = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count",
                                                                                 "page_size"))
    return (pages - free) * size


def start_server(port: int, database: str, src: str | None, nice: int = 0) -> subprocess.Popen:
    env = {**os.environ, "PAMPA_AP_KEY": KEY}
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-m", "pampa_deployer", "access-point", "serve",
                             "--port", str(port), "--database", database], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=open(Path(tempfile.gettempdir()) / f"pampa-hostile-{port}.log", "w"),
                            cwd=src or None)


async def wait_up(port: int) -> None:
    for _ in range(200):
        try:
            await must(Conn(port, KEY), "GET", "/deploys")
            return
        except OSError:
            await asyncio.sleep(0.1)
    sys.exit("the access point did not start")


def nodes(prefix: str, n: int) -> list[dict]:
    return [{"node": f"{prefix}-{i}", "roles": ["newton"], "gated": False, "opens_gate": False} for i in range(1, n + 1)]


async def setup(port: int) -> dict:
    """A small request the legitimate agent runs, a 2,000-node request to follow, a request to flood."""
    admin = Conn(port, KEY)
    info = {}
    legit = await must(admin, "POST", "/tokens", {"stage": "legit", "node": "legit-1", "roles": ["newton"]})
    info["legit_token"] = legit["token"]
    small = await must(admin, "POST", "/deploys", {"stage": "legit", "branch": "main", "nodes": nodes("legit", 2)})
    info["small"] = small["id"]
    await must(Conn(port, legit["token"]), "POST", f"/deploys/{small['id']}/nodes/legit-1/start", {})
    big_nodes = nodes("node", 2000)
    status, created = await admin.call("POST", "/deploys", {"stage": "bench", "branch": "main", "nodes": big_nodes})
    if status >= 400:  # an old server's body limit: the node list in two requests is not a thing it knows
        created = await must(admin, "POST", "/deploys", {"stage": "bench", "branch": "main", "nodes": big_nodes[:1500]})
    info["big"] = created["id"]
    info["big_tokens"] = {}
    for n in big_nodes[:20]:
        token = (await must(admin, "POST", "/tokens", {"stage": "bench", "node": n["node"], "roles": ["newton"]}))
        info["big_tokens"][n["node"]] = token["token"]
        await must(Conn(port, token["token"]), "POST", f"/deploys/{created['id']}/nodes/{n['node']}/start", {})
    flood = await must(admin, "POST", "/tokens", {"stage": "flood", "node": "flood-1", "roles": ["newton"]})
    request = await must(admin, "POST", "/deploys", {"stage": "flood", "branch": "main", "nodes": nodes("flood", 1)})
    await must(Conn(port, flood["token"]), "POST", f"/deploys/{request['id']}/nodes/flood-1/start", {})
    info.update(flood=request["id"], flood_node="flood-1", flood_token=flood["token"])
    admin.close()
    return info


async def scenario(name: str, args, port: int, pid: int, info: dict, database: str, postgres) -> dict:
    stop = asyncio.Event()
    attack = Attack(port, args.subnet, stop, info)
    db0, cpu0 = db_bytes(database, postgres), cpu_seconds(pid)
    peak = [rss_mb(pid)]
    start_rss = peak[0]
    task = None if name == "baseline" else asyncio.create_task(getattr(attack, name)())
    await asyncio.sleep(3)  # the attack is in place
    probe_proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--probe", str(port), info["legit_token"], "legit-1", str(info["small"]),
        str(args.seconds), f"{args.subnet}.2", stdout=asyncio.subprocess.PIPE)
    watch_until = time.monotonic() + args.seconds + 30
    out = asyncio.create_task(probe_proc.communicate())
    while not out.done() and time.monotonic() < watch_until:
        peak.append(rss_mb(pid))
        await asyncio.sleep(0.2)
    stdout, _ = await out
    load = os.getloadavg()[0]
    stop.set()
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(3)
    measured = json.loads(stdout or b'{"latencies": [], "errors": -1}')
    lat = sorted(measured["latencies"]) or [float("nan")]
    return {"scenario": name, "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
            "max_ms": 1000 * lat[-1], "calls": len(measured["latencies"]), "errors": measured["errors"],
            "rss_start_mb": start_rss, "rss_peak_mb": max(peak), "rss_end_mb": rss_mb(pid), "db_growth_mb": (db_bytes(database, postgres) - db0) / 1e6,
            "server_cpu_s": cpu_seconds(pid) - cpu0, "load": load, "attack": dict(attack.counts)}


async def main_async(args) -> None:
    """Each scenario on a fresh server process and database, so its RSS and growth are its own; with --before,
    each scenario runs on that checkout's server and then on this one, side by side under the same load."""
    postgres = None
    if args.postgres:
        sys.path.insert(0, str(HERE.parent / "tests"))
        import pgserver
        why = pgserver.why_not()
        if why:
            sys.exit(f"--postgres: {why}")
        postgres = pgserver.PostgresServer().start()
    sources = ([("before", args.before)] if args.before else []) + [("after" if args.before else "", args.server_src)]
    print(f"access point on {'PostgreSQL' if postgres else 'SQLite'}"
          f"{'; before: ' + args.before if args.before else ''}; {args.seconds:g} s per scenario, a fresh server each",
          flush=True)
    print(f"{'scenario':<18} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'calls':>6} {'errors':>6} "
          f"{'RSS peak':>9} {'RSS end':>8} {'DB +MB':>7} {'CPU s':>6} {'load':>5}", flush=True)
    try:
        for name in args.scenarios.split(","):
            for label, src in sources:
                await one_scenario(f"{name} {label}".strip(), name, src, args, postgres)
    finally:
        if postgres is not None:
            postgres.stop()


async def one_scenario(title: str, name: str, src: str | None, args, postgres) -> None:
    database = postgres.fresh_url() if postgres else str(Path(tempfile.mkdtemp(prefix="pampa-hostile-")) / "ap.sqlite3")
    port = free_port()
    server = start_server(port, database, src, args.server_nice)
    try:
        await wait_up(port)
        info = await setup(port)
        r = await scenario(name, args, port, server.pid, info, database, postgres)
        alive = "" if server.poll() is None else f" (the server exited: {server.returncode})"
        print(f"{title:<18} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['max_ms']:8.0f} {r['calls']:6d} "
              f"{r['errors']:6d} {r['rss_peak_mb']:7.0f}MB {r['rss_end_mb']:6.0f}MB {r['db_growth_mb']:7.1f} "
              f"{r['server_cpu_s']:6.1f} {r['load']:5.1f}  {r['attack']}{alive}", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        port, token, node, deploy_id, seconds, source = sys.argv[2:8]
        probe(int(port), token, node, int(deploy_id), float(seconds), source)
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    p.add_argument("--seconds", type=float, default=15.0, help="how long the legitimate client measures, per scenario")
    p.add_argument("--subnet", default="127.0.130", help="source addresses of the clients (SUBNET.2, .11-.17)")
    p.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL as the store")
    p.add_argument("--server-src", help="run the server from this checkout instead of this one")
    p.add_argument("--before", metavar="CHECKOUT", help="run each scenario on CHECKOUT's server first, then on this one")
    p.add_argument("--server-nice", type=int, default=0, help="the server's nice value (-10: ahead of the other work "
                   "of a shared machine, as if it had its own core)")
    args = p.parse_args()
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
