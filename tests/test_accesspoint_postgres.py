"""Several access point processes on one PostgreSQL database (the session's real server, never mocked).

Each test starts two real `pampa access-point serve` processes on one fresh schema: a long poll
parked on one is woken by a request created on the other (LISTEN/NOTIFY), and the gate opens
exactly once when the keplers' finishes reach both processes at the same moment (row locks).
"""
from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pampa_deployer.accesspoint.client import AccessPointClient

KEY = "admin-k3y-postgres"
KEPLERS = [f"kepler-{i}" for i in range(1, 7)]
GATED = ["euler-1", "copernico-1"]
NODES = [{"node": k, "roles": ["kepler"], "gated": False, "opens_gate": True} for k in KEPLERS] + \
        [{"node": g, "roles": [g.split("-")[0]], "gated": True, "opens_gate": False} for g in GATED]


def serve(args: list[str], env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """A real server process; its URL from the first line it prints (bounded wait, never a hang)."""
    proc = subprocess.Popen([sys.executable, "-m", "pampa_deployer", "access-point", "serve", "--port", "0", *args],
                            env={**os.environ, "PAMPA_AP_KEY": KEY, **(env or {})}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=60)
    line = proc.stdout.readline() if ready else ""
    found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
    if not found:
        proc.kill()
        raise AssertionError(f"the access point did not start: {line!r} {proc.communicate(timeout=30)[1][-2000:]}")
    return proc, found.group(1)


@pytest.fixture
def two_processes(postgres):
    """Process A takes the URL with --database, process B from $PAMPA_AP_DATABASE (as a systemd unit would)."""
    url = postgres.fresh_url()
    a, url_a = serve(["--database", url])
    b, url_b = serve([], env={"PAMPA_AP_DATABASE": url})
    yield url_a, url_b
    for proc in (a, b):
        proc.terminate()
    for proc in (a, b):
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_the_printed_address_hides_the_database_password(postgres):
    url = postgres.fresh_url().replace(f"{postgres.user}@", f"{postgres.user}:not-the-password@")
    proc, _ = serve(["--database", url])  # trust auth: the password is not checked, only shown
    proc.terminate()
    out, err = proc.communicate(timeout=30)
    assert "not-the-password" not in out + err


def test_a_poll_on_one_process_is_woken_by_a_request_created_on_the_other(two_processes):
    url_a, url_b = two_processes
    admin_a, admin_b = AccessPointClient(url_a, KEY), AccessPointClient(url_b, KEY)
    node = AccessPointClient(url_a, admin_b.issue_token("production", "kepler-1", ["kepler"])["token"])
    got = []
    started = time.monotonic()
    poller = threading.Thread(target=lambda: got.append((node.next_request("kepler-1", wait=25),
                                                         time.monotonic() - started)))
    poller.start()
    time.sleep(1.0)  # let the poll park on A (had it not yet, it would find the request at once: still woken)
    assert poller.is_alive(), "the poll returned before any request existed"
    created = admin_b.create_request("production", "main", NODES, "ana")
    poller.join(40)
    assert not poller.is_alive()
    found, waited = got[0]
    assert found["id"] == created["id"]
    # Woken, not timed out: without the NOTIFY from B the poll on A answers only when its 25 s run out.
    assert waited < 20, f"the poll on A waited {waited:.1f}s: it was not woken by B's request"
    assert admin_a.deploy(created["id"])["state"] == "PENDING"


def _finish_concurrently(clients: dict, deploy_id: int, results: dict) -> list:
    """Every kepler posts its finish at the same moment, alternating between the two processes."""
    barrier = threading.Barrier(len(results))
    errors: list = []

    def finish(name):
        try:
            barrier.wait(30)
            clients[name].finish_run(deploy_id, name, results[name], revision="abc123")
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append((name, e))

    threads = [threading.Thread(target=finish, args=(name,)) for name in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return errors


def _keplers_started(url_a, url_b, admin, request) -> dict:
    clients = {}
    for i, name in enumerate(KEPLERS + GATED):
        role = [n["roles"] for n in NODES if n["node"] == name][0]
        clients[name] = AccessPointClient((url_a, url_b)[i % 2], admin.issue_token("production", name, role)["token"])
    for name in KEPLERS:
        clients[name].start_run(request["id"], name)
    return clients


def test_the_gate_opens_exactly_once_when_keplers_finish_on_both_processes_at_once(two_processes):
    url_a, url_b = two_processes
    admin = AccessPointClient(url_a, KEY)
    for _ in range(3):  # a few rounds: a race that loses the gate would show in one of them
        request = admin.create_request("production", "main", NODES, "ana")
        clients = _keplers_started(url_a, url_b, admin, request)
        assert _finish_concurrently(clients, request["id"], {k: "ok" for k in KEPLERS}) == []
        deploy = AccessPointClient(url_b, KEY).deploy(request["id"])
        assert deploy["state"] == "ALLOWED" and deploy["allowed_at"]
        kinds = [e["kind"] for e in admin.events(request["id"])["events"]]
        assert kinds.count("allowed") == 1
        assert {n["node"]: n["state"] for n in deploy["nodes"] if n["node"] in GATED} == dict.fromkeys(GATED, "waiting")
        for name in GATED:  # each gated node, on either process, now gets the request
            assert clients[name].next_request(name)["id"] == request["id"]


def test_a_kepler_failing_while_others_succeed_on_the_other_process_fails_the_request_once(two_processes):
    url_a, url_b = two_processes
    admin = AccessPointClient(url_b, KEY)
    request = admin.create_request("production", "main", NODES, "ana")
    clients = _keplers_started(url_a, url_b, admin, request)
    results = {k: "ok" for k in KEPLERS}
    results[KEPLERS[3]] = "failed"
    assert _finish_concurrently(clients, request["id"], results) == []
    deploy = AccessPointClient(url_a, KEY).deploy(request["id"])
    assert deploy["state"] == "FAILED" and deploy["allowed_at"] is None
    assert {n["node"]: n["state"] for n in deploy["nodes"] if n["node"] in GATED} == dict.fromkeys(GATED, "skipped")
    kinds = [e["kind"] for e in admin.events(request["id"])["events"]]
    assert kinds.count("failed") == 1 and "allowed" not in kinds
    for name in GATED:
        assert clients[name].next_request(name) is None


def test_a_follower_misses_no_event_when_nodes_report_to_both_processes_at_once(two_processes):
    """Event ids follow commit order per request, so reading "after the last one I saw" skips nothing."""
    url_a, url_b = two_processes
    admin = AccessPointClient(url_a, KEY)
    request = admin.create_request("production", "main", NODES, "ana")
    clients = _keplers_started(url_a, url_b, admin, request)
    done = threading.Event()
    seen: list[int] = []

    def follow():
        last = 0
        while not done.is_set():
            got = AccessPointClient(url_a, KEY).events(request["id"], after=last)
            seen.extend(e["seq"] for e in got["events"])
            last = got["last"]

    def report(name):
        for i in range(25):
            clients[name].progress(request["id"], name, [{"kind": "output", "step": "migrate", "line": f"{name} {i}"}])

    follower = threading.Thread(target=follow)
    follower.start()
    reporters = [threading.Thread(target=report, args=(name,)) for name in KEPLERS]
    for t in reporters:
        t.start()
    for t in reporters:
        t.join(120)
    done.set()
    follower.join(60)
    assert not follower.is_alive() and not any(t.is_alive() for t in reporters)
    every = [e["seq"] for e in admin.events(request["id"])["events"]]
    assert len(every) > 6 * 25
    tail = AccessPointClient(url_b, KEY).events(request["id"], after=seen[-1] if seen else 0)["events"]
    assert seen + [e["seq"] for e in tail] == every  # nothing skipped, nothing twice, in order


# -- the recipe of docs/pull-mode.md, run as written (host, port and the sudo prefix adapted) ----------------
DOC = Path(__file__).resolve().parent.parent / "docs" / "pull-mode.md"
DOC_URL = "postgresql://pampa@db.internal/pampa_access_point"
DOC_KEY_FILE = "/etc/pampa/ap.key"


def _doc_section() -> str:
    text = DOC.read_text()
    return text[text.index("## Several access point processes on PostgreSQL"):text.index("## Deploying")]


def test_the_documented_recipe_creates_the_database_and_runs_two_processes_on_it(postgres, tmp_path):
    section = _doc_section()
    assert "pip install './pampa-deployer[postgres]'" in section
    assert 'postgres = ["psycopg[binary]' in (DOC.parent.parent / "pyproject.toml").read_text()
    setup = [line.strip() for line in section.splitlines() if line.strip().startswith("sudo -u postgres ")]
    assert [line.split()[3] for line in setup] == ["createuser", "createdb"]
    where = ["-h", "127.0.0.1", "-p", str(postgres.port), "-U", postgres.user]
    for line in setup:
        words = line.split()[3:]
        subprocess.run([f"{postgres.bin}/{words[0]}", *where, *words[1:]], check=True, timeout=60,
                       capture_output=True, stdin=subprocess.DEVNULL)
    url = f"postgresql://pampa@127.0.0.1:{postgres.port}/pampa_access_point"
    commands = [line.strip() for line in section.splitlines() if "pampa access-point serve" in line]
    assert len(commands) == 2 and all(DOC_URL in c and "--port 875" in c and DOC_KEY_FILE in c for c in commands)
    key_file = tmp_path / "ap.key"
    key_file.write_text(KEY + "\n")
    procs, urls = [], []
    try:
        for command in commands:
            command = re.sub(r"--port \d+", "--port 0", command.replace(DOC_URL, url).replace(DOC_KEY_FILE, str(key_file)))
            env = dict(word.split("=", 1) for word in command.split() if "=" in word and not word.startswith("-"))
            argv = [w for w in command.split() if w not in {f"{k}={v}" for k, v in env.items()}]
            assert argv[:3] == ["pampa", "access-point", "serve"]
            proc, address = serve(argv[3:], env={**env, "PAMPA_AP_KEY": ""})
            procs.append(proc)
            urls.append(address)
        created = AccessPointClient(urls[0], KEY).create_request("production", "main", NODES, "ana")
        assert AccessPointClient(urls[1], KEY).deploy(created["id"])["state"] == "PENDING"
    finally:
        for proc in procs:
            proc.terminate()
            proc.communicate(timeout=30)


# -- in one process: what happens when the database makes a write wait --------------------------------------
@pytest.fixture
def in_process(postgres, monkeypatch):
    yield from _in_process(postgres, monkeypatch, 1)  # the documented 10 s, shortened for the test


@pytest.fixture
def in_process_patient(postgres, monkeypatch):
    yield from _in_process(postgres, monkeypatch, 60)  # a lock is waited for until the test lets it go


def _in_process(postgres, monkeypatch, statement_timeout: int):
    from pampa_deployer.server import database
    from pampa_deployer.server.app import make_server
    monkeypatch.setattr(database, "STATEMENT_TIMEOUT", statement_timeout)
    url = postgres.fresh_url()
    srv = make_server("127.0.0.1", 0, url, KEY)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, url, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    thread.join(10)


def test_a_request_row_locked_too_long_is_a_503_not_a_hang(in_process):
    import psycopg

    from pampa_deployer.errors import AccessPointError
    srv, url, address = in_process
    admin = AccessPointClient(address, KEY)
    request = admin.create_request("production", "main", NODES, "ana")
    kepler = AccessPointClient(address, admin.issue_token("production", "kepler-1", ["kepler"])["token"])
    with psycopg.connect(url) as other:  # another process holding the request's row
        other.execute("SELECT id FROM deploys WHERE id = %s FOR UPDATE", (request["id"],))
        with pytest.raises(AccessPointError, match="503"):
            kepler.start_run(request["id"], "kepler-1")
    assert kepler.start_run(request["id"], "kepler-1")["state"] == "running"  # the lock gone: it works


def test_a_broken_listen_connection_reconnects_and_wakes_the_polls(in_process):
    import psycopg

    from pampa_deployer.server.store import Store
    srv, url, address = in_process
    admin = AccessPointClient(address, KEY)
    node = AccessPointClient(address, admin.issue_token("production", "kepler-1", ["kepler"])["token"])
    with psycopg.connect(postgres_admin_url(url), autocommit=True) as conn:
        killed = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'"
                              ).fetchall()
    assert killed, "no LISTEN connection to break"
    got = []
    started = time.monotonic()
    poller = threading.Thread(target=lambda: got.append((node.next_request("kepler-1", wait=25),
                                                         time.monotonic() - started)))
    poller.start()
    time.sleep(1.0)
    other = Store(url)  # another process's write
    try:
        created = other.create({"stage": "production", "branch": "main", "nodes": NODES})
    finally:
        other.close()
    poller.join(40)
    found, waited = got[0]
    assert found["id"] == created["id"] and waited < 20, waited


def postgres_admin_url(url: str) -> str:
    return url.split("?", 1)[0]


def test_a_dropped_database_connection_is_a_503_and_the_next_call_reconnects(in_process):
    import psycopg

    from pampa_deployer.errors import AccessPointError
    from pampa_deployer.server import database
    srv, url, address = in_process
    admin = AccessPointClient(address, KEY)
    request = admin.create_request("production", "main", NODES, "ana")
    with psycopg.connect(postgres_admin_url(url), autocommit=True) as conn:  # as if the server restarted
        killed = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                              "AND backend_type = 'client backend' AND query NOT LIKE 'LISTEN %%'").fetchall()
    assert killed
    failures = []  # each worker thread's connection was dropped: each may cost one 503, never a hang
    for _ in range(2 * database.Postgres.workers):
        try:
            state = admin.deploy(request["id"])["state"]
            break
        except AccessPointError as e:
            failures.append(str(e))
    assert state == "PENDING"
    assert len(failures) <= database.Postgres.workers and all("503" in f for f in failures), failures


def test_a_write_waiting_on_a_row_lock_holds_up_no_other_client(in_process_patient):
    """Database work runs in worker threads, each with its own connection: a start waiting for another process's
    row lock does not stop the server from answering everyone else (before: the event loop waited with it)."""
    import psycopg

    srv, url, address = in_process_patient
    admin = AccessPointClient(address, KEY)
    locked = admin.create_request("production", "main", NODES, "ana")
    kepler = AccessPointClient(address, admin.issue_token("production", "kepler-1", ["kepler"])["token"], timeout=60)
    outcome = []
    with psycopg.connect(url) as other:
        other.execute("SELECT id FROM deploys WHERE id = %s FOR UPDATE", (locked["id"],))
        waiting = threading.Thread(target=lambda: outcome.append(_attempt(kepler.start_run, locked["id"], "kepler-1")))
        waiting.start()
        deadline = time.monotonic() + 30
        with psycopg.connect(postgres_admin_url(url), autocommit=True) as watch:
            while not watch.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchall():
                assert time.monotonic() < deadline, "the start never waited on the lock"
                time.sleep(0.05)
        # the lock is still held: others are answered meanwhile (a bound that tells answered from held up)
        fast = AccessPointClient(address, KEY, timeout=20)
        assert fast.deploys("production")[0]["id"] == locked["id"]
        other_request = fast.create_request("staging", "main", NODES, "ana")
        assert fast.deploy(other_request["id"])["state"] == "PENDING"
        assert waiting.is_alive()  # and the start still waits
    waiting.join(60)
    assert outcome and outcome[0] == "running"


def _attempt(fn, *args):
    try:
        return fn(*args)["state"]
    except Exception as e:  # noqa: BLE001 - the test reads it
        return repr(e)
