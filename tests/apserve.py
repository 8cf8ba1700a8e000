"""A real `pampa access-point serve` process for the tests, and a raw HTTP client that sends what a hostile
node would (bodies no JSON library writes, any header, any source address on loopback).

``PAMPA_TEST_SERVER_SRC=/path/to/a/checkout`` runs that checkout's server instead: how a test is shown to
fail on the code before a fix.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import subprocess
import sys
import time
from pathlib import Path

KEY = "admin-k3y-for-hostile-tests"


class Serve:
    """``pampa access-point serve --port 0 ARGS``; ``url`` from its first line; ``stop()`` -> its stderr."""

    def __init__(self, *args: str, env: dict | None = None, preexec=None, cwd: Path | None = None,
                 key: str | None = KEY, wait: bool = True, prefix: list[str] | None = None):
        environment = {**os.environ, **({"PAMPA_AP_KEY": key} if key is not None else {}), **(env or {})}
        self.proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", "pampa_deployer", "access-point", "serve",
                                      "--port", "0", *args], env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=preexec,
                                     cwd=cwd or os.environ.get("PAMPA_TEST_SERVER_SRC") or None)
        self.pid = self.proc.pid
        self.url = self.port = None
        self.first_line = ""
        if wait:
            self._started()

    def _started(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            ready = sel.select(timeout=60)
        self.first_line = self.proc.stdout.readline() if ready else ""
        found = re.search(r"(https?)://[^:]+:(\d+)", self.first_line)
        if not found:
            out, err = self.communicate()
            raise AssertionError(f"the access point did not start: {self.first_line!r} {out!r} {err[-3000:]}")
        self.scheme, self.port = found.group(1), int(found.group(2))
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"

    def communicate(self, timeout: float = 30) -> tuple[str, str]:
        try:
            return self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate(timeout=30)

    def stop(self) -> str:
        """Stop it (SIGTERM); everything it wrote on stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.communicate()[1]

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def call(port: int, method: str, path: str, body=None, key: str | None = KEY, source: str | None = None,
         headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, dict]:
    """One request on its own connection: (status, JSON answer or {}, headers). ``body``: bytes as they are,
    anything else as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
    sent = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {}),
            **(headers or {})}
    try:
        try:
            conn.request(method, "/api/v1" + path, body=data, headers=sent)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the whole body was sent (401, 413): the answer is still there to read
        response = conn.getresponse()
        raw = response.read()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {"raw": raw}
        return response.status, answer, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def ok(port: int, method: str, path: str, body=None, key: str | None = KEY, **kw) -> dict:
    status, answer, _ = call(port, method, path, body, key, **kw)
    assert status < 300, (method, path, status, answer)
    return answer


def wait_until(predicate, what: str, bound: float = 30.0) -> None:
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


NODES = [{"node": "kepler-1", "roles": ["kepler"], "gated": False, "opens_gate": True},
         {"node": "euler-1", "roles": ["euler"], "gated": True, "opens_gate": False},
         {"node": "newton-1", "roles": ["newton"], "gated": False, "opens_gate": False}]


def token(port: int, node: str, stage: str = "production", roles: list | None = None) -> str:
    roles = roles or [n["roles"] for n in NODES if n["node"] == node][0]
    return ok(port, "POST", "/tokens", {"stage": stage, "node": node, "roles": roles})["token"]


def request(port: int, stage: str = "production", nodes: list | None = None) -> dict:
    return ok(port, "POST", "/deploys", {"stage": stage, "branch": "main", "nodes": nodes or NODES,
                                         "requested_by": "ana"})
