"""The access point as an outsider probes it: idle connections, malformed requests, huge ids, key checks.

Real sockets on 127.0.0.1, port 0. Loops are bounded; socket timeouts only tell "answered" from "hung".
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from pampa_deployer.server import app as ap_server
from pampa_deployer.server.app import make_server
from pampa_deployer.server.http import Limits

KEY = "k3y-for-hardening"


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(limits: Limits | None = None):
        srv = make_server("127.0.0.1", 0, str(tmp_path / f"ap{len(started)}.sqlite3"), KEY, limits)
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        started.append((srv, thread))
        return srv

    yield start
    for srv, thread in started:
        srv.shutdown()
        srv.server_close()
        thread.join(10)


def connect(srv) -> socket.socket:
    return socket.create_connection(srv.server_address, timeout=20)


def exchange(srv, raw: bytes) -> bytes:
    """Send raw bytes, read until the server closes or a full response arrived."""
    with connect(srv) as s:
        s.sendall(raw)
        return read_response(s)


def read_response(s: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(body) >= length:
                return data


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def request(method: str, path: str, body: bytes = b"", headers: dict | None = None, key: str | None = KEY) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: ap", "Connection: close"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in (headers or {})):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def wait_until(predicate, what: str, bound: float = 30.0) -> None:
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def test_800_idle_unauthenticated_connections_cost_no_threads(serve):
    # The client's 800 ends and the server's 800 are in this one process: raise its open-file limit as
    # `pampa access-point serve` does at start (a soft limit of 1,024, as for a user without root, is not enough).
    from pampa_deployer.cli.accesspoint import open_files
    open_files()
    srv = serve()
    before = threading.active_count()
    sockets = []
    try:
        for _ in range(800):
            sockets.append(connect(srv))
        wait_until(lambda: srv.open_connections == 800, "the server holds the 800 connections")
        assert threading.active_count() <= before + 2  # one event loop serves them all
        # and it still answers a real client while they sit there
        assert status(exchange(srv, request("GET", "/api/v1/deploys"))) == 200
    finally:
        for s in sockets:
            s.close()
    wait_until(lambda: srv.open_connections == 0, "closed connections are released")


def test_idle_connections_are_closed_after_the_head_timeout(serve):
    srv = serve(Limits(head_timeout=0.3))
    with connect(srv) as s:
        assert s.recv(100) == b""  # closed by the server, no answer owed
    with connect(srv) as s:  # a client that starts a request and stalls gets 408
        s.sendall(b"GET /api/v1/deploys HTTP/1.1\r\nHost: ap\r\n")
        assert status(read_response(s)) == 408
    wait_until(lambda: srv.open_connections == 0, "timed-out connections are released")


def test_connections_over_the_cap_get_503(serve):
    srv = serve(Limits(max_connections=5))
    held = [connect(srv) for _ in range(5)]
    try:
        wait_until(lambda: srv.open_connections == 5, "five connections held")
        assert status(exchange(srv, request("GET", "/api/v1/deploys"))) == 503
    finally:
        for s in held:
            s.close()
    wait_until(lambda: srv.open_connections == 0, "released")
    assert status(exchange(srv, request("GET", "/api/v1/deploys"))) == 200


@pytest.mark.parametrize("length, expected", [("-1", 400), ("abc", 400), ("1e3", 400), ("+5", 400),
                                              ("99999999999999999999", 400), ("5000000", 413)])
def test_bad_content_length_gets_a_4xx_and_frees_the_handler(serve, length, expected):
    srv = serve()
    raw = request("POST", "/api/v1/deploys", headers={"Content-Length": length})
    assert status(exchange(srv, raw)) == expected
    assert status(exchange(srv, request("GET", "/api/v1/deploys"))) == 200  # nothing is stuck


def test_a_body_shorter_than_announced_times_out_with_408(serve):
    srv = serve(Limits(body_timeout=0.3))
    raw = request("POST", "/api/v1/deploys", headers={"Content-Length": "50"}) + b'{"stage":'
    assert status(exchange(srv, raw)) == 408


@pytest.mark.parametrize("raw, expected", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /api/v1/deploys HTTP/2.0\r\n\r\n", 400),
    (b"GET /api/v1/deploys HTTP/1.1\r\nNo colon here\r\n\r\n", 400),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /api/v1/deploys HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"POST /api/v1/deploys HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
    (b"POST /api/v1/deploys HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", 400),
])
def test_malformed_requests_get_a_4xx(serve, raw, expected):
    srv = serve()
    assert status(exchange(srv, raw)) == expected


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"[" * 100000])
def test_bad_bodies_get_400(serve, body):
    srv = serve()
    assert status(exchange(srv, request("POST", "/api/v1/deploys", body))) == 400


def test_huge_ids_get_404_not_a_dropped_connection(serve):
    srv = serve()
    huge = "9" * 5000
    for method, path in (("GET", f"/api/v1/deploys/{huge}"), ("POST", f"/api/v1/deploys/{huge[:1500]}/take"),
                         ("GET", f"/api/v1/deploys/{'9' * 16}")):
        response = exchange(srv, request(method, path, b"{}" if method == "POST" else b""))
        assert status(response) in (404, 414), response[:200]
    assert b"no deploy" in exchange(srv, request("GET", f"/api/v1/deploys/{'9' * 16}"))


def test_keys_are_compared_in_constant_time(serve, monkeypatch):
    calls = []
    real = ap_server.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(ap_server.hmac, "compare_digest", spy)
    srv = serve()
    assert status(exchange(srv, request("GET", "/api/v1/deploys", key="k3y-for-hardeninX"))) == 401
    assert status(exchange(srv, request("GET", "/api/v1/deploys", key=None))) == 401
    assert status(exchange(srv, request("GET", "/api/v1/deploys"))) == 200
    assert (b"k3y-for-hardeninX", KEY.encode()) in calls and (KEY.encode(), KEY.encode()) in calls


def test_keep_alive_serves_several_requests_on_one_connection(serve):
    srv = serve()
    with connect(srv) as s:
        for _ in range(3):
            s.sendall(request("GET", "/api/v1/deploys").replace(b"Connection: close", b"Connection: keep-alive"))
            assert status(read_response(s)) == 200


def test_an_idle_keep_alive_connection_is_closed(serve):
    srv = serve(Limits(keepalive_timeout=0.3))
    with connect(srv) as s:
        s.sendall(request("GET", "/api/v1/deploys").replace(b"Connection: close", b"Connection: keep-alive"))
        assert status(read_response(s)) == 200
        assert s.recv(100) == b""  # nothing more sent: the server closes it
    wait_until(lambda: srv.open_connections == 0, "released")
