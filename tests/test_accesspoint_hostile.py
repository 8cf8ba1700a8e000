"""The access point against one hostile node token (docs/access-point.md, *What a node can and cannot do*).

Each test starts a real `pampa access-point serve` process, on SQLite and on the suite's PostgreSQL, and
sends what a compromised or buggy node would: numbers and strings no route takes, writes outside its own
run, roles it does not have, floods. Loops and waits are bounded; nothing is timed.
"""
from __future__ import annotations

import threading
import time

import pytest
from apserve import KEY, NODES, Serve, call, ok, request, token


@pytest.fixture
def ap(ap_database):
    server = Serve("--db", ap_database)
    yield server
    server.stop()


def started(ap, name: str = "kepler-1", stage: str = "production", nodes=None) -> tuple[dict, str]:
    """A request, and ``name``'s token with its run started on it."""
    created = request(ap.port, stage, nodes)
    node = token(ap.port, name, stage)
    ok(ap.port, "POST", f"/deploys/{created['id']}/nodes/{name}/start", {}, key=node)
    return created, node


# -- class 1: the JSON door -----------------------------------------------------------------------------------
BAD_BODIES = {
    "NaN": b'{"detail": NaN}',
    "Infinity": b'{"detail": {"deep": [1, -Infinity]}}',
    "1e400 (infinite)": b'{"detail": 1e400}',
    "1e300 (no time)": b'{"detail": 1e300}',
    "huge integer": b'{"detail": 123456789012345678901234567890}',
    "lone surrogate": b'{"detail": "ab\\ud800cd"}',
    "NUL": b'{"detail": "a\\u0000b"}',
    "NUL in a key": b'{"a\\u0000b": 1}',
    "not UTF-8": b'{"detail": "\xff\xfe"}',
}


@pytest.mark.parametrize("bad", BAD_BODIES, ids=list(BAD_BODIES))
def test_every_route_that_takes_json_refuses_what_no_route_takes(ap, bad):
    created, node = started(ap)
    d = created["id"]
    admin_routes = ["/deploys", f"/deploys/{d}/take", f"/deploys/{d}/allow", f"/deploys/{d}/finish",
                    f"/deploys/{d}/cancel", "/tokens", "/nodes/kepler-1/version"]
    node_routes = [f"/deploys/{d}/nodes/kepler-1/progress", f"/deploys/{d}/nodes/kepler-1/finish",
                   "/nodes/kepler-1/hello", "/nodes/kepler-1/version", f"/deploys/{d}/nodes/kepler-1/start"]
    for key, routes in ((KEY, admin_routes), (node, node_routes)):
        for path in routes:
            status, answer, _ = call(ap.port, "POST", path, BAD_BODIES[bad], key=key)
            assert status == 400 and ("refused" in answer["error"] or "UTF-8" in answer["error"]), (path, answer)
    # nothing was written: the run still runs, the request is as it was, its events are what they were
    view = ok(ap.port, "GET", f"/deploys/{d}")
    assert view["state"] == "TAKEN" and {n["node"]: n["state"] for n in view["nodes"]}["kepler-1"] == "running"
    assert [e["kind"] for e in ok(ap.port, "GET", f"/deploys/{d}/events")["events"]] == ["created", "node", "taken"]
    assert len(ok(ap.port, "GET", "/deploys")["deploys"]) == 1


def test_progress_times_out_of_range_and_names_with_control_characters_are_refused(ap):
    created, node = started(ap)
    path = f"/deploys/{created['id']}/nodes/kepler-1/progress"
    for event in ({"kind": "step_finished", "step": "b", "started": 1e15},
                  {"kind": "step_finished", "step": "b", "started": -5},
                  {"kind": "output", "step": "b", "line": "x", "at": 99999999999},
                  {"kind": "step_started", "step": "b", "at": "yesterday"}):
        status, answer, _ = call(ap.port, "POST", path, {"events": [event]}, key=node)
        assert status == 400 and "Unix seconds" in answer["error"], (event, answer)
    status, answer, _ = call(ap.port, "POST", "/tokens", {"stage": "production", "node": "evil\x1b[2J", "roles": []})
    assert status == 400 and "control characters" in answer["error"]
    status, answer, _ = call(ap.port, "GET", "/deploys?stage=a%00b")
    assert status == 400


# -- class 2: a follower's poll costs what is new --------------------------------------------------------------
def test_a_followers_page_carries_the_runs_that_changed_not_the_whole_request(ap):
    nodes = [{"node": f"n{i}", "roles": ["newton"], "gated": False, "opens_gate": False} for i in range(2000)]
    created = request(ap.port, nodes=nodes)
    first = ok(ap.port, "GET", f"/deploys/{created['id']}/events?after=0")
    n7 = token(ap.port, "n7", roles=["newton"])
    ok(ap.port, "POST", f"/deploys/{created['id']}/nodes/n7/start", {}, key=n7)
    page = ok(ap.port, "GET", f"/deploys/{created['id']}/events?after={first['last']}&wait=5")
    assert [(n["node"], n["state"]) for n in page["deploy"]["nodes"]] == [("n7", "running")]
    assert [e.get("node") for e in page["events"]] == ["n7"] and page["deploy"]["state"] == "ALLOWED"
    again = ok(ap.port, "GET", f"/deploys/{created['id']}/events?after={page['last']}")  # nothing new: nothing
    assert again["events"] == [] and again["deploy"]["nodes"] == [] and again["last"] == page["last"]


def test_a_stalled_node_reaches_followers_as_an_event_and_its_return_too(ap_database):
    server = Serve("--db", ap_database, "--stall-after", "0.5")
    try:
        created, node = started(server, nodes=NODES[:2])  # the euler waits for the gate: never stalled
        d, cursor = created["id"], 0
        seen = []
        for _ in range(40):  # bounded: each poll waits for something new (at most 5 s)
            page = ok(server.port, "GET", f"/deploys/{d}/events?after={cursor}&wait=5")
            cursor = page["last"]
            seen += [(e["kind"], e.get("node"), e.get("stalled")) for e in page["events"] if e["kind"] == "stalled"]
            if seen:
                break
        assert seen and seen[0][:2] == ("stalled", "kepler-1") and "no report" in seen[0][2]
        assert page["deploy"]["stalled"] is True
        assert [n["stalled"] for n in page["deploy"]["nodes"] if n["node"] == "kepler-1"][0].startswith("no report")
        ok(server.port, "POST", f"/deploys/{d}/nodes/kepler-1/progress", {"events": []}, key=node)  # a heartbeat
        back = ok(server.port, "GET", f"/deploys/{d}/events?after={cursor}&wait=5")
        assert ("stalled", "kepler-1", None) in [(e["kind"], e.get("node"), e.get("stalled")) for e in back["events"]]
    finally:
        server.stop()


# -- class 4: quotas and retention ---------------------------------------------------------------------------
@pytest.fixture
def small_quota(ap_database):
    server = Serve("--db", ap_database, "--run-events", "40", "--run-kib", "24")
    yield server
    server.stop()


def test_a_runs_events_stop_at_its_quota_with_one_visible_marker(small_quota):
    ap = small_quota
    created, node = started(ap)
    d = created["id"]
    line = {"kind": "output", "step": "bundle", "line": "x" * 100}
    answers = [ok(ap.port, "POST", f"/deploys/{d}/nodes/kepler-1/progress", {"events": [line] * 10}, key=node)
               for _ in range(30)]
    assert answers[0] == {"ok": True} and answers[-1] == {"ok": True, "truncated": True}
    ok(ap.port, "POST", f"/deploys/{d}/nodes/kepler-1/progress", {"events": [{"kind": "step_started",
                                                                            "step": "restart"}]}, key=node)
    events = ok(ap.port, "GET", f"/deploys/{d}/events")["events"]
    outputs = [e for e in events if e["kind"] == "output"]  # progress events carry their own kind
    markers = [e for e in outputs if e.get("truncated")]
    assert len(markers) == 1 and "reached its quota (40 events or 24 KiB" in markers[0]["line"]
    assert len(outputs) <= 41 and sum(len(e["line"]) for e in outputs if not e.get("truncated")) <= 24 * 1024
    run = [n for n in ok(ap.port, "GET", f"/deploys/{d}")["nodes"] if n["node"] == "kepler-1"][0]
    assert run["step"] == "restart"  # over its quota, the run's step and heartbeat are still recorded
    finished = ok(ap.port, "POST", f"/deploys/{d}/nodes/kepler-1/finish", {"result": "ok", "revision": "abc"},
                  key=node)
    assert finished["state"] == "ok"  # and so is its outcome


def test_keep_drops_the_events_of_old_requests_not_the_requests(ap_database):
    server = Serve("--db", ap_database, "--keep", "3")
    try:
        ids = []
        for _ in range(4):
            created = request(server.port, nodes=[NODES[2]])
            ok(server.port, "POST", f"/deploys/{created['id']}/cancel", {"by": "ana"})
            ids.append(created["id"])
        request(server.port, nodes=[NODES[2]])  # a fifth: it and the two before it are the newest three
        kept = {d: len(ok(server.port, "GET", f"/deploys/{d}/events")["events"]) for d in ids}
        assert kept[ids[0]] == 0 and kept[ids[1]] == 0 and kept[ids[2]] > 0 and kept[ids[3]] > 0, kept
        assert ok(server.port, "GET", f"/deploys/{ids[0]}")["state"] == "CANCELLED"  # the request itself stays
    finally:
        server.stop()


# -- class 7: a node writes into its own run of its own stage's requests, and is who the access point says ------
def test_a_node_token_reports_versions_only_into_requests_that_list_it(ap):
    created, node = started(ap, "newton-1")
    other_stage = request(ap.port, "staging")
    not_listed = request(ap.port, nodes=[NODES[0]])
    version = {"stage": "production", "revision": "abc", "roles": ["newton"]}
    for deploy_id in (other_stage["id"], not_listed["id"], created["id"] + 1000):
        status, answer, _ = call(ap.port, "POST", "/nodes/newton-1/version", {**version, "deploy_id": deploy_id},
                                 key=node)
        assert status == 404, (deploy_id, answer)
    for deploy_id in (True, "1", -1, 1.5):
        status, _, _ = call(ap.port, "POST", "/nodes/newton-1/version", {**version, "deploy_id": deploy_id}, key=node)
        assert status == 400, deploy_id
    assert [e["kind"] for e in ok(ap.port, "GET", f"/deploys/{other_stage['id']}/events")["events"]] == ["created"]
    assert ok(ap.port, "POST", "/nodes/newton-1/version", {**version, "deploy_id": created["id"]}, key=node)


def test_a_node_cannot_record_itself_as_a_kepler(ap):
    created, node = started(ap, "newton-1")
    answer = ok(ap.port, "POST", "/nodes/newton-1/version", {"stage": "production", "revision": "abc",
                                                             "roles": ["kepler"], "deploy_id": created["id"]}, key=node)
    assert answer["roles"] == ["newton"]  # the request's roles for it
    stray = token(ap.port, "newton-9", roles=["newton"])
    answer = ok(ap.port, "POST", "/nodes/newton-9/version", {"stage": "production", "revision": "abc",
                                                             "roles": ["kepler"]}, key=stray)
    assert answer["roles"] == ["newton"]  # no request named: its token's roles
    recorded = {n["node"]: n["roles"] for n in ok(ap.port, "GET", "/nodes?stage=production")["nodes"]}
    assert recorded == {"newton-1": "newton", "newton-9": "newton"}


@pytest.mark.parametrize("field, value", [("gated", "false"), ("opens_gate", "false"), ("gated", 0),
                                          ("opens_gate", 1), ("gated", None)])
def test_gated_and_opens_gate_are_json_booleans(ap, field, value):
    nodes = [{**NODES[1], field: value}]
    status, answer, _ = call(ap.port, "POST", "/deploys", {"stage": "production", "branch": "main", "nodes": nodes})
    if value is None:
        assert status == 201  # absent or null: false
    else:
        assert status == 400 and f"'{field}' must be true or false" in answer["error"], answer


# -- class 8: a parked poll checks its credential when it wakes ---------------------------------------------------
def test_a_poll_parked_with_a_replaced_token_does_not_get_the_next_request(ap):
    old = token(ap.port, "newton-1")
    got = []
    poller = threading.Thread(target=lambda: got.append(call(ap.port, "GET", "/nodes/newton-1/next?wait=20", key=old)))
    poller.start()
    time.sleep(1.0)  # into its wait (were it not parked yet, it would find the token replaced at once: still 401)
    token(ap.port, "newton-1")  # a new token: the old one is revoked
    created = request(ap.port)
    poller.join(40)
    assert not poller.is_alive()
    status, answer, _ = got[0]
    assert status == 401 and "deploy" not in answer and "replaced or revoked" in answer["error"], (answer, created)


# -- issue 24 item 5: 10,000 nodes in one request, without a larger body for nodes ---------------------------------
def test_a_request_for_10000_nodes_is_taken_from_the_api_key_and_refused_to_a_node(ap):
    nodes = [{"node": f"newton-{i:05d}.fleet.example.com", "roles": ["newton"], "gated": False, "opens_gate": False}
             for i in range(10_000)]
    body = {"stage": "production", "branch": "main", "nodes": nodes}
    created = ok(ap.port, "POST", "/deploys", body)
    assert len(created["nodes"]) == 10_000 and created["state"] == "ALLOWED"  # no kepler: no gate to wait for
    node = token(ap.port, "newton-00001.fleet.example.com", roles=["newton"])
    status, answer, _ = call(ap.port, "POST", f"/deploys/{created['id']}/nodes/newton-00001.fleet.example.com/progress",
                             {"events": [], "padding": "x" * 300_000}, key=node)
    assert status == 413 and "over the limit of 262144" in answer["error"]
    status, answer, _ = call(ap.port, "POST", "/deploys", body, key=None)
    assert status == 401


# -- cancel ------------------------------------------------------------------------------------------------------
def test_a_cancelled_request_is_never_handed_out_its_gate_never_opens_and_running_nodes_are_told(ap):
    created, kepler = started(ap)
    d = created["id"]
    newton, euler = token(ap.port, "newton-1"), token(ap.port, "euler-1")
    status, _, _ = call(ap.port, "POST", f"/deploys/{d}/cancel", {}, key=kepler)
    assert status == 403
    cancelled = ok(ap.port, "POST", f"/deploys/{d}/cancel", {"by": "ana@laptop", "reason": "wrong branch"})
    assert cancelled["state"] == "CANCELLED" and cancelled["detail"] == "cancelled by ana@laptop: wrong branch"
    runs = {n["node"]: (n["state"], n["detail"]) for n in cancelled["nodes"]}
    assert runs["newton-1"] == ("skipped", "cancelled by ana@laptop: wrong branch; not touched")
    assert runs["kepler-1"][0] == "running"
    assert ok(ap.port, "GET", "/nodes/newton-1/next", key=newton)["deploy"] is None
    status, answer, _ = call(ap.port, "POST", f"/deploys/{d}/nodes/newton-1/start", {}, key=newton)
    assert status == 409 and answer["cancelled"] is True
    told = ok(ap.port, "POST", f"/deploys/{d}/nodes/kepler-1/progress",
              {"events": [{"kind": "step_started", "step": "migrate"}]}, key=kepler)
    assert told == {"ok": True, "cancelled": True}
    finished = ok(ap.port, "POST", f"/deploys/{d}/nodes/kepler-1/finish", {"result": "ok", "revision": "abc"},
                  key=kepler)
    assert finished["cancelled"] is True and finished["state"] == "ok"
    after = ok(ap.port, "GET", f"/deploys/{d}")
    assert after["state"] == "CANCELLED" and after["allowed_at"] is None  # a kepler's success opens no gate now
    assert ok(ap.port, "GET", "/nodes/euler-1/next", key=euler)["deploy"] is None
    assert ok(ap.port, "POST", f"/deploys/{d}/cancel", {})["state"] == "CANCELLED"  # again: the same answer
    kinds = [e["kind"] for e in ok(ap.port, "GET", f"/deploys/{d}/events")["events"]]
    assert kinds.count("cancelled") == 1 and "allowed" not in kinds
    push = ok(ap.port, "POST", "/deploys", {"stage": "production", "branch": "main"})
    status, answer, _ = call(ap.port, "POST", f"/deploys/{push['id']}/cancel", {})
    assert status == 409 and "push request" in answer["error"]
