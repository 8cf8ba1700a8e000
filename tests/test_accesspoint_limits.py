"""The access point process against a hostile client: memory, descriptors, connections, keys, files, errors, TLS.

Each test runs a real `pampa access-point serve` process (or, where a test must reach inside, the server in
a thread on real sockets) and attacks it as the issue's probes did. Loops and waits are bounded; resource
bounds are generous (a server's RSS, not a timing); nothing is timed.
"""
from __future__ import annotations

import os
import re
import resource
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
from apserve import KEY, Serve, call, ok, request, token, wait_until

from pampa_deployer.server.app import make_server
from pampa_deployer.server.http import Limits

SUBNET = os.environ.get("PAMPA_TEST_SUBNET", "127.0.30")


@pytest.fixture
def inproc(tmp_path):
    """The server in a thread (real sockets), for tests that must set its limits or read its state."""
    started = []

    def start(limits: Limits | None = None, db: str | None = None):
        srv = make_server("127.0.0.1", 0, db or str(tmp_path / f"ap{len(started)}.sqlite3"), KEY, limits)
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        started.append((srv, thread))
        return srv

    yield start
    for srv, thread in started:
        srv.shutdown()
        srv.server_close()
        thread.join(10)


def raw_request(path: str, key: str | None = KEY, extra: str = "", body: bytes = b"", keep: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1" if not body else f"POST {path} HTTP/1.1", "Host: ap",
             "Connection: keep-alive" if keep else "Connection: close"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode() + body


def read_all(sock: socket.socket, until_closed: bool = False) -> bytes:
    """What the server sends until it closes (``until_closed``: a timeout instead of its close fails)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except socket.timeout:
            if until_closed:
                raise AssertionError(f"the server never closed the connection (got {data[:60]!r})") from None
            return data
        if not chunk:
            return data
        data += chunk


# -- class 3: memory per connection ---------------------------------------------------------------------------
def test_a_client_that_pipelines_and_never_reads_is_dropped_not_buffered(inproc):
    srv = inproc(Limits(write_timeout=0.5))
    port = srv.server_address[1]
    nodes = [{"node": f"n{i}", "roles": ["newton"], "gated": False, "opens_gate": False} for i in range(2000)]
    big = request(port, nodes=nodes)["id"]
    one = raw_request(f"/api/v1/deploys/{big}")
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = 0
        try:
            for _ in range(200):  # 200 answers of ~480 KB: 96 MB if the server buffered what is not read
                s.sendall(one * 10)
                sent += 10
        except OSError:
            pass  # the server dropped us: what this test wants
        wait_until(lambda: srv.open_connections == 0, "the server dropped the connection whose answers are not read")
    assert sent < 2000 or srv.open_connections == 0
    assert ok(port, "GET", "/deploys")  # and serves others as before


def test_an_unknown_caller_is_answered_before_its_body_is_read(inproc):
    srv = inproc(Limits(body_timeout=30))
    with socket.create_connection(srv.server_address, timeout=20) as s:
        s.sendall(b"POST /api/v1/deploys HTTP/1.1\r\nHost: ap\r\nContent-Length: 200000\r\n\r\n" + b"{" * 1000)
        answer = read_all(s)  # the 200,000 bytes never sent: a server that waits for them answers 408 in 30 s
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:100]


def test_800_unauthenticated_256_kib_bodies_leave_no_lasting_memory(tmp_path):
    server = Serve("--db", str(tmp_path / "ap.sqlite3"))
    try:
        ok(server.port, "GET", "/deploys")
        before = server.rss_mb()
        body = b"{" + b" " * (256 * 1024 - 2) + b"}"
        head = f"POST /api/v1/deploys HTTP/1.1\r\nHost: ap\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        socks = []
        for i in range(800):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=20,
                                         source_address=(f"{SUBNET}.{20 + i % 4}", 0))
            s.setblocking(False)
            try:
                s.send(head + body)
            except BlockingIOError:
                pass
            socks.append(s)
        peak = server.rss_mb()
        for s in socks:
            s.close()
        assert ok(server.port, "GET", "/deploys")
        wait_until(lambda: server.rss_mb() - before < 40, f"RSS back near {before:.0f} MB (was {peak:.0f} MB, "
                                                           f"now {server.rss_mb():.0f} MB)", 40)
        assert peak - before < 120, (before, peak)
    finally:
        server.stop()


# -- class 5: descriptors, connections, the log, the backlog ----------------------------------------------------
def _limit_files(soft: int, hard: int | None = None):
    def preexec():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard if hard is not None else
                                                    resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    return preexec


def test_serve_raises_its_open_file_limit_to_the_hard_limit(tmp_path):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    server = Serve("--db", str(tmp_path / "ap.sqlite3"), preexec=_limit_files(1024))
    try:
        limits = open(f"/proc/{server.pid}/limits").read()
        soft_now = int(re.search(r"Max open files\s+(\d+)", limits).group(1))
        assert soft_now == hard > 1024
    finally:
        server.stop()


def test_the_connection_cap_stays_below_what_the_process_can_open(tmp_path):
    server = Serve("--db", str(tmp_path / "ap.sqlite3"), preexec=_limit_files(256, 256))
    socks = []
    try:
        for i in range(400):  # more than the process may open: each one beyond the cap gets a 503, none a stall
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=20,
                                                  source_address=(f"{SUBNET}.{30 + i % 4}", 0)))
        time.sleep(2)  # the 503s are sent as each is accepted: all there by now
        answers = []
        for s in socks:
            s.setblocking(False)
            try:
                answers.append(s.recv(12))
            except BlockingIOError:
                answers.append(b"")  # under the cap: nothing owed yet
        cap = int(re.search(r"at most (\d+) connections", server.proc.stderr.readline()).group(1))
        # over the cap: a 503 (some may still wait in the kernel's queue, unaccepted: nothing yet), never an error
        assert cap < 256 and b"HTTP/1.1 503" in answers and set(answers) <= {b"", b"HTTP/1.1 503"}, cap
    finally:
        for s in socks:
            s.close()
    try:
        assert ok(server.port, "GET", "/deploys")
    finally:
        err = server.stop()
    assert "out of system resource" not in err and "Too many open files" not in err, err[-2000:]


def test_a_connection_over_the_cap_gets_its_503_and_is_closed(inproc):
    srv = inproc(Limits(max_connections=3))
    held = [socket.create_connection(srv.server_address, timeout=20) for _ in range(3)]
    try:
        wait_until(lambda: srv.open_connections == 3, "three connections held")
        for _ in range(20):
            with socket.create_connection(srv.server_address, timeout=20) as over:
                answer = read_all(over, until_closed=True)  # closed after its 503: no CLOSE-WAIT on the server's side
            assert answer.startswith(b"HTTP/1.1 503 ") and b"too many connections" in answer
    finally:
        for s in held:
            s.close()


def test_connections_per_source_address_are_capped(inproc):
    srv = inproc(Limits(max_per_source=3))
    mine = [socket.create_connection(srv.server_address, timeout=20, source_address=(f"{SUBNET}.41", 0))
            for _ in range(3)]
    try:
        wait_until(lambda: srv.open_connections == 3, "three connections from one address")
        with socket.create_connection(srv.server_address, timeout=20, source_address=(f"{SUBNET}.41", 0)) as s:
            s.sendall(raw_request("/api/v1/deploys", keep=False))
            assert read_all(s).startswith(b"HTTP/1.1 503 ")
        assert ok(srv.server_address[1], "GET", "/deploys", source=f"{SUBNET}.42")  # another address: served
    finally:
        for s in mine:
            s.close()


def test_the_listen_backlog_asked_for_is_the_one_the_kernel_has(inproc):
    srv = inproc(Limits(backlog=700))
    out = subprocess.run(["ss", "-Hltn", f"sport = :{srv.server_address[1]}"], capture_output=True, text=True,
                         timeout=30).stdout.split()
    assert int(out[2]) == min(700, int(open("/proc/sys/net/core/somaxconn").read())), out  # Send-Q: the backlog


# -- class 6: the API key, wrong keys, files ------------------------------------------------------------------
def test_the_api_key_comes_from_a_file_or_the_environment_never_the_command_line(tmp_path):
    key_file = tmp_path / "ap.key"
    key_file.write_text(KEY + "\n")
    server = Serve("--db", str(tmp_path / "ap.sqlite3"), "--api-key-file", str(key_file), key=None)
    try:
        assert KEY not in open(f"/proc/{server.pid}/cmdline").read()
        assert ok(server.port, "GET", "/deploys") == {"deploys": []}
    finally:
        server.stop()
    server = Serve("--db", str(tmp_path / "ap2.sqlite3"), "--api-key", KEY, key=None)
    assert "--api-key shows the key to every user of this machine" in server.stop()


@pytest.mark.parametrize("key", ["k", "fifteen-chars-k"])
def test_a_short_api_key_is_refused_with_one_line(tmp_path, key):
    server = Serve("--db", str(tmp_path / "ap.sqlite3"), key=key, wait=False)
    out, err = server.communicate()
    assert server.proc.returncode == 2
    assert err.strip() == (f"pampa: error: access-point serve: the API key has {len(key)} characters; use at least "
                           "16 (e.g. `openssl rand -hex 24 > ap.key`, then --api-key-file ap.key)")
    assert not (tmp_path / "ap.sqlite3").exists()


def test_wrong_keys_are_counted_per_address_logged_without_the_key_and_held_back(tmp_path):
    server = Serve("--db", str(tmp_path / "ap.sqlite3"))
    guesser, other = f"{SUBNET}.51", f"{SUBNET}.52"
    try:
        statuses = [call(server.port, "GET", "/deploys", key=f"guess-number-{i:04d}", source=guesser)[0]
                    for i in range(40)]
        assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
        status, answer, headers = call(server.port, "GET", "/deploys", source=guesser)  # the right key: held too
        assert status == 429 and int(headers["retry-after"]) >= 1 and guesser in answer["error"]
        assert ok(server.port, "GET", "/deploys", source=other)  # another address is not
        assert call(server.port, "GET", "/deploys", key=None, source=other)[0] == 401  # no key is no guess
    finally:
        err = server.stop()
    lines = [line for line in err.splitlines() if "wrong API key or node token" in line]
    assert len(lines) == 1 and guesser in lines[0] and "guess-number" not in err


def test_database_files_are_created_private(tmp_path):
    old = os.umask(0o022)
    try:
        server = Serve("--db", str(tmp_path / "ap.sqlite3"))
    finally:
        os.umask(old)
    try:
        ok(server.port, "POST", "/deploys", {"stage": "production", "branch": "main"})
        files = [p for p in tmp_path.iterdir() if p.name.startswith("ap.sqlite3")]
        assert {p.name for p in files} >= {"ap.sqlite3", "ap.sqlite3-wal", "ap.sqlite3-shm", "ap.sqlite3.lock"}
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}
    finally:
        server.stop()


# -- class 9: one process per SQLite file, errors, HEAD and 405 ---------------------------------------------------
def test_a_second_serve_on_the_same_sqlite_file_is_refused_with_a_hint(tmp_path):
    first = Serve("--db", str(tmp_path / "ap.sqlite3"))
    try:
        second = Serve("--db", str(tmp_path / "ap.sqlite3"), wait=False)
        _, err = second.communicate()
        assert second.proc.returncode == 2
        assert err.strip() == (f"pampa: error: access-point serve: another access point process (pid {first.pid}) "
                               f"serves {tmp_path / 'ap.sqlite3'}: one SQLite file takes one process; for several, use "
                               "PostgreSQL (--database postgresql://..., docs/pull-mode.md)")
    finally:
        first.stop()


def test_an_event_cursor_beyond_any_id_is_a_400_not_a_500(tmp_path):
    server = Serve("--db", str(tmp_path / "ap.sqlite3"))
    try:
        d = request(server.port)["id"]
        for after in ("1" + "0" * 20, "-1", "1e3"):
            status, answer, _ = call(server.port, "GET", f"/deploys/{d}/events?after={after}")
            assert status == 400 and "'after' must be an event number" in answer["error"]
    finally:
        err = server.stop()
    assert "Traceback" not in err


def test_head_answers_without_a_body_and_a_wrong_method_gets_405_with_allow(inproc):
    srv = inproc()
    port = srv.server_address[1]
    with socket.create_connection(srv.server_address, timeout=20) as s:
        s.sendall(raw_request("/api/v1/deploys", keep=False).replace(b"GET ", b"HEAD ", 1))
        answer = read_all(s)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: 15" in head and rest == b""
    status, answer, headers = call(port, "DELETE", "/deploys")
    assert status == 405 and headers["allow"] == "GET, HEAD, POST" and "takes GET, HEAD, POST" in answer["error"]
    status, _, headers = call(port, "GET", "/deploys/1/cancel")
    assert status == 405 and headers["allow"] == "POST"
    assert call(port, "GET", "/nothing/here")[0] == 404


@pytest.mark.parametrize("bad", [{"deploy_id": True}, {"deploy_id": False}, {"stage": "prod\x00uction"}])
def test_postgresql_a_nul_or_a_boolean_id_is_a_400_not_a_503(postgres, bad):
    server = Serve("--db", postgres.fresh_url())
    try:
        node = token(server.port, "newton-1")
        body = {"stage": "production", "revision": "abc", **bad}
        status, answer, _ = call(server.port, "POST", "/nodes/newton-1/version", body, key=node)
        assert status == 400, answer
        status, _, _ = call(server.port, "GET", "/deploys?stage=prod%00uction")
        assert status == 400
    finally:
        server.stop()


def in_namespace(script: str) -> list[str]:
    """A prefix that runs the server in its own mount namespace after ``script`` (mounts only it sees)."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", f'{script} && exec "$@"', "sh"]


def test_a_full_disk_is_a_503_with_the_reason_logged_once_never_a_bare_500(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a private tmpfs needs root")
    folder = tmp_path / "db"
    folder.mkdir()
    server = Serve("--db", str(folder / "ap.sqlite3"), "--run-kib", "100000", "--run-events", "1000000",
                   prefix=in_namespace(f"mount -t tmpfs -o size=600k tmpfs {folder}"))
    try:
        created = request(server.port)
        node = token(server.port, "kepler-1")
        ok(server.port, "POST", f"/deploys/{created['id']}/nodes/kepler-1/start", {}, key=node)
        line = {"kind": "output", "step": "bundle", "line": "x" * 1900}
        answers = []
        for _ in range(60):
            status, answer, _ = call(server.port, "POST", f"/deploys/{created['id']}/nodes/kepler-1/progress",
                                     {"events": [line] * 20}, key=node)
            answers.append((status, answer))
            if status != 200:
                break
        status, answer = answers[-1]
        assert status == 503 and "disk is full" in answer["error"] and "retry later" in answer["error"], answers[-1]
        assert all(s in (200, 503) for s, _ in answers)
        for _ in range(5):
            call(server.port, "POST", f"/deploys/{created['id']}/nodes/kepler-1/progress", {"events": [line] * 20},
                 key=node)
    finally:
        err = server.stop()
    assert len([x for x in err.splitlines() if "disk is full" in x]) == 1, err[-3000:]


def test_a_read_only_database_is_said_at_start_and_writes_are_503(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a read-only mount needs root")
    (tmp_path / "ro").mkdir()
    seed = Serve("--db", str(tmp_path / "ro" / "ap.sqlite3"))
    ok(seed.port, "POST", "/deploys", {"stage": "production", "branch": "main"})
    seed.stop()
    folder = tmp_path / "ro"
    server = Serve("--db", str(folder / "ap.sqlite3"),
                   prefix=in_namespace(f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}"))
    try:
        status, answer, _ = call(server.port, "POST", "/deploys", {"stage": "production", "branch": "main"})
        assert status == 503 and "read" in answer["error"] and "retry later" in answer["error"], answer
    finally:
        err = server.stop()
    assert "warning: the database cannot be written" in err


# -- class 10: TLS -----------------------------------------------------------------------------------------------
def test_serve_speaks_tls_with_its_own_certificate(tmp_path):
    import http.client
    import json
    import ssl
    cert, key = tmp_path / "ap.crt", tmp_path / "ap.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=120)
    server = Serve("--db", str(tmp_path / "ap.sqlite3"), "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert server.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=20)
        conn.request("GET", "/api/v1/deploys", headers={"Authorization": f"Bearer {KEY}"})
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read()) == {"deploys": []}
        conn.close()
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:  # plain HTTP: no answer in clear
            s.sendall(raw_request("/api/v1/deploys", keep=False))
            assert b"deploys" not in read_all(s)
    finally:
        server.stop()
    bad = Serve("--db", str(tmp_path / "ap2.sqlite3"), "--tls-cert", str(cert), "--tls-key", str(cert), wait=False)
    _, err = bad.communicate()
    assert bad.proc.returncode == 2 and err.startswith(f"pampa: error: access-point serve: cannot use the certificate "
                                                       f"{cert} with the key {cert}")
    assert len(err.strip().splitlines()) == 1


# -- `access-point token --out` in a folder others share --------------------------------------------------------
@pytest.fixture
def stage_dir(tmp_path, inproc):
    srv = inproc()
    stages = tmp_path / "stages"
    stages.mkdir()
    (stages / "local.yml").write_text(f"app: demo\nrepo: /nonexistent.git\naccess_point: {{url: "
                                      f"\"http://127.0.0.1:{srv.server_address[1]}\", api_key: \"{KEY}\"}}\n"
                                      "hosts:\n  k1: {roles: [kepler]}\n")
    return stages


def _token(stages, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pampa_deployer", "--stages", str(stages), "access-point", "token",
                           "local", "--out", str(out)], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_token_out_replaces_a_planted_link_and_never_writes_through_it(stage_dir, tmp_path):
    out, victim = tmp_path / "tokens", tmp_path / "victim"
    out.mkdir(mode=0o700)
    victim.write_text("precious\n")
    (out / "local-k1.token").symlink_to(victim)
    (out / ".local-k1.token.tmp").symlink_to(victim)  # where the temp file used to be written
    done = _token(stage_dir, out)
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious\n"
    written = out / "local-k1.token"
    assert not written.is_symlink() and written.read_text().startswith("pnt_")
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode, sticky_ok", [(0o777, False), (0o1777, True), (0o770, False)])
def test_token_out_refuses_a_folder_others_can_write_without_the_sticky_bit(stage_dir, tmp_path, mode, sticky_ok):
    out = tmp_path / "shared"
    out.mkdir()
    out.chmod(mode)
    done = _token(stage_dir, out)
    if sticky_ok:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 2 and done.stderr.strip() == (
            f"pampa: error: access-point token: refusing --out {out}: others can write in it (mode {mode:04o}); "
            f"`chmod 700 {out}` or pick another")
        assert list(out.iterdir()) == []


def test_token_out_refuses_a_folder_that_is_a_link(stage_dir, tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    done = _token(stage_dir, tmp_path / "link")
    assert done.returncode == 2 and "it is a symbolic link; give the folder itself" in done.stderr
    assert list(real.iterdir()) == []


def test_an_internal_error_is_logged_once_with_its_traceback_and_answered_503(inproc, monkeypatch):
    import io

    from pampa_deployer.server.log import ServerLog
    srv = inproc()
    log = io.StringIO()
    srv.log.stream = srv.app.log.stream = log  # the server's stderr, read here

    def broken(*args):
        raise ValueError("a bug in the store")
    monkeypatch.setattr(srv.store, "list", broken)
    for _ in range(5):
        status, answer, _ = call(srv.server_address[1], "GET", "/deploys")
        assert status == 503 and answer["error"] == ("the access point failed on this request (ValueError); it is in "
                                                     "its log; retry later")
    text = log.getvalue()
    assert text.count("internal error answering GET /api/v1/deploys: ValueError: a bug in the store") == 1
    assert "Traceback (most recent call last)" in text and "in broken" in text
    assert isinstance(srv.log, ServerLog)


def test_followers_at_one_cursor_share_one_read_of_the_database_per_change(inproc):
    """300 followers of one request made a legitimate client wait 14.6 s: each poll read the whole request.
    Now a change is read once for every follower at the same cursor (counted in statements, not timed)."""
    srv = inproc()
    port = srv.server_address[1]
    created = request(port)
    node = token(port, "kepler-1")
    ok(port, "POST", f"/deploys/{created['id']}/nodes/kepler-1/start", {}, key=node)
    cursor = ok(port, "GET", f"/deploys/{created['id']}/events")["last"]
    answers = []
    followers = [threading.Thread(target=lambda: answers.append(
        ok(port, "GET", f"/deploys/{created['id']}/events?after={cursor}&wait=20"))) for _ in range(30)]
    for f in followers:
        f.start()
    wait_until(lambda: srv.open_connections >= 30, "30 followers connected")
    time.sleep(1.0)  # and parked in their long poll (one not parked yet finds the change itself: still one read)
    reads = []
    srv.store.db.conn.set_trace_callback(lambda sql: reads.append(sql) if sql.startswith("SELECT id, kind") else None)
    ok(port, "POST", f"/deploys/{created['id']}/nodes/kepler-1/progress",
       {"events": [{"kind": "step_started", "step": "migrate"}]}, key=node)
    for f in followers:
        f.join(60)
    srv.store.db.conn.set_trace_callback(None)
    assert len(answers) == 30 and all([e["step"] for e in a["events"]] == ["migrate"] for a in answers)
    assert 1 <= len(reads) <= 3, len(reads)
