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

import pytest

from pampa_deployer.accesspoint.client import AccessPointClient

KEY = "admin-k3y-pg"
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
