"""The coordinator protocol of pull mode, over real HTTP on loopback: tokens, the gate, runs, stalls, long polls."""
from __future__ import annotations

import threading
import time

import pytest

from pampa_deployer.accesspoint import rules
from pampa_deployer.accesspoint.client import AccessPointClient
from pampa_deployer.errors import AccessPointError
from pampa_deployer.server.app import make_server
from pampa_deployer.server.store import Store

KEY = "admin-k3y-pull-mode"
NODES = [
    {"node": "kepler-1", "roles": ["kepler"], "gated": False, "opens_gate": True},
    {"node": "kepler-2", "roles": ["kepler"], "gated": False, "opens_gate": True},
    {"node": "euler-1", "roles": ["euler"], "gated": True, "opens_gate": False},
    {"node": "newton-1", "roles": ["newton"], "gated": False, "opens_gate": False},
]


@pytest.fixture
def ap(ap_database):
    srv = make_server("127.0.0.1", 0, ap_database, KEY, stall_after=60)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    admin = AccessPointClient(url, KEY)

    class AP:
        server = srv

        def node(self, name: str, stage: str = "production", roles=None) -> AccessPointClient:
            roles = roles or [n["roles"] for n in NODES if n["node"] == name][0]
            return AccessPointClient(url, admin.issue_token(stage, name, roles)["token"])

    AP.admin, AP.url = admin, url
    yield AP()
    srv.shutdown()
    srv.server_close()
    thread.join(10)


def states(deploy) -> dict:
    return {n["node"]: n["state"] for n in deploy["nodes"]}


def test_gate_opens_when_every_kepler_succeeded(ap):
    d = ap.admin.create_request("production", "main", NODES, "ana", "ship it")
    assert d["state"] == "PENDING" and d["mode"] == "pull" and set(states(d).values()) == {"waiting"}
    k1, k2, e1, n1 = (ap.node(n) for n in ("kepler-1", "kepler-2", "euler-1", "newton-1"))
    assert e1.next_request("euler-1") is None  # gated: nothing before ALLOWED
    assert k1.next_request("kepler-1")["id"] == d["id"] and n1.next_request("newton-1")["id"] == d["id"]
    k1.start_run(d["id"], "kepler-1")
    k2.start_run(d["id"], "kepler-2")
    with pytest.raises(AccessPointError, match="409.*waits for the gate"):
        e1.start_run(d["id"], "euler-1")
    k1.progress(d["id"], "kepler-1", [{"kind": "step_started", "step": "migrate"},
                                      {"kind": "output", "step": "migrate", "stream": "stdout", "line": "== 2 up"}])
    k1.finish_run(d["id"], "kepler-1", "ok", revision="abc")
    assert ap.admin.deploy(d["id"])["state"] == "TAKEN"  # one kepler left
    k2.finish_run(d["id"], "kepler-2", "ok", revision="abc")
    allowed = ap.admin.deploy(d["id"])
    assert allowed["state"] == "ALLOWED" and allowed["allowed_at"] is not None
    assert e1.next_request("euler-1")["id"] == d["id"]
    e1.start_run(d["id"], "euler-1")
    e1.finish_run(d["id"], "euler-1", "ok")
    assert ap.admin.deploy(d["id"])["state"] == "ALLOWED"  # newton still waiting
    n1.start_run(d["id"], "newton-1")
    n1.finish_run(d["id"], "newton-1", "ok")
    done = ap.admin.deploy(d["id"])
    assert done["state"] == "DONE" and set(states(done).values()) == {"ok"} and not done["stalled"]
    kinds = [e["kind"] for e in ap.admin.events(d["id"])["events"]]
    assert kinds[0] == "created" and "allowed" in kinds and kinds[-1] == "done"


def test_a_kepler_failure_fails_the_request_and_gated_nodes_never_act(ap):
    d = ap.admin.create_request("production", "main", NODES, "ana")
    k1, k2, e1 = ap.node("kepler-1"), ap.node("kepler-2"), ap.node("euler-1")
    k1.start_run(d["id"], "kepler-1")
    k1.finish_run(d["id"], "kepler-1", "failed", step="migrate", detail="exit code 1")
    failed = ap.admin.deploy(d["id"])
    assert failed["state"] == "FAILED" and "kepler-1 failed at migrate" in failed["detail"]
    assert states(failed)["euler-1"] == "skipped"
    assert [n["detail"] for n in failed["nodes"] if n["node"] == "euler-1"] == \
        ["gate closed: kepler-1 failed at migrate; not touched"]
    assert e1.next_request("euler-1") is None
    with pytest.raises(AccessPointError, match="409"):
        e1.start_run(d["id"], "euler-1")
    k2.start_run(d["id"], "kepler-2")  # the other kepler still finishes and reports; FAILED stays
    k2.finish_run(d["id"], "kepler-2", "ok")
    assert ap.admin.deploy(d["id"])["state"] == "FAILED"


def test_a_node_never_runs_a_request_twice_and_a_restart_is_reported(ap):
    d = ap.admin.create_request("production", "main", NODES, "ana")
    n1 = ap.node("newton-1")
    n1.start_run(d["id"], "newton-1")
    with pytest.raises(AccessPointError, match="409.*already has run"):
        n1.start_run(d["id"], "newton-1")
    n1.progress(d["id"], "newton-1", [{"kind": "step_started", "step": "bundle"}])
    assert n1.hello("newton-1")["interrupted"] == [d["id"]]  # the agent came back: the run was cut short
    run = [n for n in ap.admin.deploy(d["id"])["nodes"] if n["node"] == "newton-1"][0]
    assert run["state"] == "interrupted" and run["detail"] == "the agent restarted during bundle"
    assert n1.next_request("newton-1") is None
    with pytest.raises(AccessPointError, match="409.*already ended"):
        n1.finish_run(d["id"], "newton-1", "ok")


def test_the_newest_request_supersedes_older_ones_a_node_never_started(ap):
    old = ap.admin.create_request("production", "main", NODES, "ana")
    new = ap.admin.create_request("production", "main", NODES, "ana")
    n1 = ap.node("newton-1")
    assert n1.next_request("newton-1")["id"] == new["id"]
    n1.start_run(new["id"], "newton-1")
    run = [n for n in ap.admin.deploy(old["id"])["nodes"] if n["node"] == "newton-1"][0]
    assert run["state"] == "skipped" and run["detail"] == f"superseded by deploy {new['id']}"


def test_node_tokens_are_scoped_to_their_stage_and_node(ap):
    prod = ap.admin.create_request("production", "main", NODES, "ana")
    staging = ap.admin.create_request("staging", "main", NODES, "ana")
    n1 = ap.node("newton-1")
    assert [d["id"] for d in n1._call("GET", "/deploys")["deploys"]] == [prod["id"]]
    with pytest.raises(AccessPointError, match="403.*stage production"):
        n1._call("GET", "/deploys?stage=staging")
    with pytest.raises(AccessPointError, match="404"):
        n1.deploy(staging["id"])
    with pytest.raises(AccessPointError, match="404"):
        n1.events(staging["id"])
    with pytest.raises(AccessPointError, match="404"):
        n1.start_run(staging["id"], "newton-1")
    with pytest.raises(AccessPointError, match="403.*not kepler-1"):
        n1.start_run(prod["id"], "kepler-1")
    with pytest.raises(AccessPointError, match="403.*not kepler-1"):
        n1.finish_run(prod["id"], "kepler-1", "ok")
    with pytest.raises(AccessPointError, match="403.*not kepler-1"):
        n1.report_version("kepler-1", "production", "abc", ("kepler",), None)
    with pytest.raises(AccessPointError, match="403.*stage production, not staging"):
        n1.report_version("newton-1", "staging", "abc", ("newton",), None)
    for call in (lambda: n1.create_request("production", "main", NODES, "x"), lambda: n1.allow(prod["id"]),
                 lambda: n1.issue_token("production", "kepler-1", ["kepler"]), lambda: n1.nodes("production")):
        with pytest.raises(AccessPointError, match="403"):
            call()
    with pytest.raises(AccessPointError, match="401"):
        AccessPointClient(ap.url, "pnt_forged").next_request("newton-1")
    with pytest.raises(AccessPointError, match="403.*takes a node token"):
        ap.admin.next_request("newton-1")
    # a new token replaces the old one
    old = n1.api_key
    ap.node("newton-1")
    with pytest.raises(AccessPointError, match="401"):
        AccessPointClient(ap.url, old).next_request("newton-1")


def test_tokens_are_stored_as_digests(ap):
    token = ap.admin.issue_token("production", "kepler-1", ["kepler"])["token"]
    rows = ap.server.store.db.execute("SELECT digest FROM tokens").fetchall()
    assert rows and all(token not in r["digest"] for r in rows)


def test_long_poll_returns_as_soon_as_a_request_arrives(ap):
    k1 = ap.node("kepler-1")
    got = []
    poller = threading.Thread(target=lambda: got.append(k1.next_request("kepler-1", wait=25)))
    poller.start()
    deadline = time.monotonic() + 20
    while not ap.server.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    d = ap.admin.create_request("production", "main", NODES, "ana")
    poller.join(30)
    assert not poller.is_alive() and got[0]["id"] == d["id"]


def test_long_poll_of_events_follows_a_request(ap):
    d = ap.admin.create_request("production", "main", NODES, "ana")
    first = ap.admin.events(d["id"])
    assert [e["kind"] for e in first["events"]] == ["created"]
    k1 = ap.node("kepler-1")
    got = []
    poller = threading.Thread(target=lambda: got.append(ap.admin.events(d["id"], after=first["last"], wait=25)))
    poller.start()
    deadline = time.monotonic() + 20
    while not ap.server.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    k1.start_run(d["id"], "kepler-1")
    poller.join(30)
    later = got[0]
    assert [(e["kind"], e.get("node"), e.get("state")) for e in later["events"]][0] == ("node", "kepler-1", "running")
    assert later["deploy"]["state"] == "TAKEN" and later["last"] > first["last"]


def test_bad_pull_requests_get_400(ap):
    for nodes in ([], [{"node": "a"}], [{"node": "a/b", "roles": []}], "x",
                  [{"node": "a", "roles": ["kepler"]}, {"node": "a", "roles": ["kepler"]}]):
        with pytest.raises(AccessPointError, match="400"):
            ap.admin.create_request("production", "main", nodes, "ana")
    d = ap.admin.create_request("production", "main", NODES, "ana")
    k1 = ap.node("kepler-1")
    k1.start_run(d["id"], "kepler-1")
    with pytest.raises(AccessPointError, match="400"):
        k1.progress(d["id"], "kepler-1", [{"kind": "rm -rf"}])
    with pytest.raises(AccessPointError, match="400"):
        k1.finish_run(d["id"], "kepler-1", "maybe")


# -- the rules without HTTP: a fake clock for stalls -------------------------------------------------------
def test_a_request_whose_nodes_stop_reporting_is_stalled_never_done(ap_database):
    clock = [1000.0]
    store = Store(ap_database, stall_after=60, clock=lambda: clock[0])
    d = store.create({"stage": "p", "branch": "main", "nodes": NODES[:1] + NODES[3:]})
    store.start(d["id"], "p", "kepler-1")
    clock[0] += 30
    assert store.get(d["id"])["stalled"] is False
    clock[0] += 31  # kepler-1 silent for 61s, newton-1 could have started 61s ago
    view = store.get(d["id"])
    assert view["stalled"] is True and view["state"] != "DONE"
    why = {n["node"]: n["stalled"] for n in view["nodes"]}
    assert why["kepler-1"].startswith("no report for 61s") and why["newton-1"].startswith("not started 61s")
    store.progress(d["id"], "p", "kepler-1", [])  # a heartbeat
    assert store.get(d["id"])["nodes"][0]["stalled"] is None


def test_request_state_rule_table():
    def run(node, state, opens=False, gated=False):
        return {"node": node, "state": state, "opens_gate": opens, "gated": gated, "step": None}

    assert rules.request_state("PENDING", [run("e", "waiting", gated=True)]) == "ALLOWED"  # no kepler
    assert rules.request_state("PENDING", [run("k", "running", True), run("e", "waiting", gated=True)]) == "TAKEN"
    assert rules.request_state("TAKEN", [run("k", "ok", True), run("e", "waiting", gated=True)]) == "ALLOWED"
    assert rules.request_state("TAKEN", [run("k", "interrupted", True), run("n", "running")]) == "FAILED"
    assert rules.request_state("ALLOWED", [run("k", "ok", True), run("n", "failed")]) == "FAILED"
    assert rules.request_state("ALLOWED", [run("k", "ok", True), run("n", "ok")]) == "DONE"
    assert rules.request_state("FAILED", [run("k", "ok", True)]) == "FAILED"  # never backwards


def test_request_state_reads_only_which_kinds_of_run_occur():
    """The store settles a request from one stand-in per distinct (opens_gate, state) (Store._run_kinds),
    not from every run: that must give the same state for every mix of runs and every current state."""
    import itertools

    kinds = [(g, st) for g in (True, False) for st in rules.NODE_STATES]
    for size in range(1, 4):
        for combo in itertools.product(kinds, repeat=size):
            runs = [{"opens_gate": g, "state": st} for g, st in combo] * 2  # duplicates, as a fleet has
            distinct = [{"opens_gate": g, "state": st} for g, st in set(combo)]
            for current in rules.ORDER:
                assert rules.request_state(current, runs) == rules.request_state(current, distinct), (current, combo)


def test_settling_a_large_request_does_not_read_every_run(tmp_path):
    """Each start or finish settles the request; reading all 2,000 runs each time made one request
    O(nodes²) at 1,000 agents. Counted in rows fetched, not timed."""
    store = Store(str(tmp_path / "ap.sqlite3"))
    nodes = [{"node": "k", "roles": ["kepler"], "gated": False, "opens_gate": True}] + \
        [{"node": f"n{i}", "roles": ["newton"], "gated": False, "opens_gate": False} for i in range(2000)]
    d = store.create({"stage": "p", "branch": "main", "mode": "pull", "nodes": nodes})
    fetched = []
    store.db.conn.set_trace_callback(fetched.append)
    store.start(d["id"], "p", "n7")
    store.finish_run(d["id"], "p", "n7", {"result": "ok"})
    store.db.conn.set_trace_callback(None)
    every_run = f"SELECT * FROM runs WHERE deploy_id = {d['id']} ORDER BY"
    assert fetched and not [q for q in fetched if q.startswith(every_run)]
    assert store.get(d["id"])["state"] == "TAKEN"


def test_serve_command_takes_stall_after(tmp_path):
    import os
    import re
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "pampa_deployer", "access-point", "serve", "--port", "0",
                             "--db", str(tmp_path / "s.sqlite3"), "--stall-after", "0.5"],
                            env={**os.environ, "PAMPA_AP_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        first = proc.stdout.readline()
        port = re.search(r"http://127.0.0.1:(\d+)", first).group(1)
        admin = AccessPointClient(f"http://127.0.0.1:{port}", KEY)
        d = admin.create_request("production", "main", NODES, "ana")
        deadline = time.monotonic() + 30
        while not admin.deploy(d["id"])["stalled"]:
            assert time.monotonic() < deadline, "never stalled"
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_pull_request_records_the_revision_its_keplers_reached_and_rollbacks_name_theirs(ap):
    """The history a pull-mode rollback goes back in (docs/pull-mode.md, Rolling back)."""
    rev = "a" * 40
    d = ap.admin.create_request("production", "main", NODES, "ana")
    k1, k2 = ap.node("kepler-1"), ap.node("kepler-2")
    for name, node in (("kepler-1", k1), ("kepler-2", k2)):
        node.start_run(d["id"], name)
    k1.finish_run(d["id"], "kepler-1", "ok", None, "", rev)
    assert ap.admin.deploy(d["id"])["revision"] is None  # one kepler is not the gate
    k2.finish_run(d["id"], "kepler-2", "ok", None, "", rev)
    opened = ap.admin.deploy(d["id"])
    assert opened["state"] == "ALLOWED" and opened["revision"] == rev and opened["kind"] == "deploy"

    back = ap.admin.create_request("production", "main", NODES, "ana", "B broke", kind="rollback", revision="b" * 40)
    assert back["kind"] == "rollback" and back["revision"] == "b" * 40
    assert ap.node("newton-1").next_request("newton-1")["kind"] == "rollback"  # the agent learns what to do
    with pytest.raises(AccessPointError, match="400.*needs 'revision'"):
        ap.admin.create_request("production", "main", NODES, "ana", kind="rollback")
    with pytest.raises(AccessPointError, match="400.*'kind' must be one of deploy, rollback"):
        ap.admin.create_request("production", "main", NODES, "ana", kind="restart", revision=rev)
    with pytest.raises(AccessPointError, match="400.*a rollback request is a pull request"):
        ap.admin._call("POST", "/deploys", {"stage": "production", "branch": "main", "kind": "rollback",
                                            "revision": rev})


def test_gate_revision_rule():
    kepler = {"opens_gate": True, "revision": "r1"}
    assert rules.gate_revision([kepler, {**kepler}, {"opens_gate": False, "revision": "other"}]) == "r1"
    assert rules.gate_revision([kepler, {**kepler, "revision": "r2"}]) is None  # keplers disagree
    assert rules.gate_revision([kepler, {**kepler, "revision": None}]) is None
    assert rules.gate_revision([{"opens_gate": False, "revision": "r1"}]) is None  # no kepler, no gate
