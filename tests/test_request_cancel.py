"""`pampa request STAGE --cancel ID` and following a cancelled request, without root.

The access point's cancel endpoint (``POST /deploys/ID/cancel``, the API key) puts a pull request in
state CANCELLED: waiting nodes never start it, running ones stop at their next step. Here a stand-in
access point on loopback answers it (tests/hostileap.py); the agent's side runs against the real one
in tests/test_agent.py. The real `pampa request` runs in a subprocess.
"""
from __future__ import annotations

import getpass
import json
import socket
import time

from hostileap import Hostile
from test_hostile_client import assert_printable, pampa

NODES = [{"node": "k1", "roles": ["kepler"], "gated": False, "opens_gate": True, "state": "running",
          "step": "migrate"},
         {"node": "e1", "roles": ["euler"], "gated": True, "opens_gate": False, "state": "waiting"}]


CANCELLED_NODES = [NODES[0], {**NODES[1], "state": "skipped", "detail": "cancelled by ana@laptop: wrong branch; "
                                                                          "not touched"}]


def request(state: str, nodes=NODES, stage: str = "local") -> dict:
    """The request as the access point shows it (its cancel: server/requests.py, issue 20)."""
    return {"id": 4, "stage": stage, "branch": "main", "mode": "pull", "state": state, "created_at": time.time() - 5,
            "nodes": nodes, **({"detail": "cancelled by ana@laptop: wrong branch"} if state == "CANCELLED" else {})}


class CancellingAP:
    """GET the request, POST its cancel, then serve the nodes ending: k1 interrupted, e1 never started."""

    def __init__(self, stage: str = "local", cancel_status: int = 200):
        self.state, self.stage, self.cancel_status = "TAKEN", stage, cancel_status
        self.hostile = Hostile(self.answer)

    def answer(self, method, path, headers, body):
        if method == "POST" and path == "/api/v1/deploys/4/cancel":
            if self.cancel_status == 409:
                return 409, {"error": "deploy 4 already ended as DONE: nothing to cancel"}, {}
            if self.cancel_status != 200:
                return self.cancel_status, {"error": f"no route POST {path}"}, {}
            self.cancel_body, self.state = json.loads(body), "CANCELLED"
            return 200, request("CANCELLED", CANCELLED_NODES, stage=self.stage), {}
        if path == "/api/v1/deploys/4":
            return 200, request(self.state, stage=self.stage), {}
        if path.startswith("/api/v1/deploys/4/events"):
            ended = [{**NODES[0], "state": "interrupted", "step": "restart_puma",
                      "detail": "cancelled by ana@laptop: wrong branch; interrupted before restart_puma"},
                     CANCELLED_NODES[1]]
            return 200, {"events": [
                {"seq": 1, "kind": "node", "node": "e1", "state": "skipped", "detail": CANCELLED_NODES[1]["detail"],
                 "at": time.time()},
                {"seq": 1, "kind": "cancelled", "at": time.time(), "by": "ana@laptop",
                 "detail": "cancelled by ana@laptop: wrong branch"},
                {"seq": 2, "kind": "step_finished", "node": "k1", "step": "migrate", "ok": True, "at": time.time(),
                 "started": time.time() - 2, "skipped": "no migration changed"},
                {"seq": 3, "kind": "node", "node": "k1", "state": "interrupted", "step": "restart_puma",
                 "detail": ended[0]["detail"], "at": time.time()}],
                "last": 3, "deploy": request("CANCELLED", ended)}, {}
        return 404, {"error": "no"}, {}


def test_cancel_asks_the_access_point_and_says_what_it_means(tmp_path):
    ap = CancellingAP()
    try:
        done = pampa(tmp_path, ap.hostile.url, "request", "local", "--cancel", "4", "-m", "wrong branch")
    finally:
        ap.hostile.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ("request 4 CANCELLED: 1 waiting node(s) will not start it; 1 running node(s) "
                                   "stop at their next step (follow it: --follow 4)")
    assert ap.cancel_body == {"by": f"{getpass.getuser()}@{socket.gethostname()}", "reason": "wrong branch"}


def test_a_cancelled_request_is_followed_to_its_end_and_exits_1(tmp_path):
    ap = CancellingAP()
    try:
        done = pampa(tmp_path, ap.hostile.url, "request", "local", "--cancel", "4", "--wait", "--report", "r.json")
    finally:
        ap.hostile.close()
    out = done.stdout
    assert done.returncode == 1, out + done.stderr  # the request did not deploy every node: deploy's code
    assert_printable(out + done.stderr)
    assert "warning: request 4 was cancelled by ana@laptop: running nodes stop at their next step" in out
    assert "gate closed: cancelled by ana@laptop: wrong branch" in out
    assert "RESULT k1 [kepler] interrupted at restart_puma" in out
    assert "cancelled by ana@laptop: wrong branch; interrupted before restart_puma" in out
    assert "RESULT e1 [euler] skipped" in out and "cancelled by ana@laptop: wrong branch; not touched" in out
    assert "NOTE request 4 was cancelled by ana@laptop; it did not deploy every node" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["result"] == "failed"
    k1 = next(h for h in report["hosts"] if h["name"] == "k1")
    assert [(s["name"], s["skipped"]) for s in k1["steps"]] == [("migrate", "no migration changed")]


def test_cancel_refuses_another_stages_request_and_says_when_the_access_point_cannot(tmp_path):
    other = CancellingAP(stage="production")
    old = CancellingAP(cancel_status=404)
    ended = CancellingAP(cancel_status=409)
    try:
        wrong = pampa(tmp_path, other.hostile.url, "request", "local", "--cancel", "4")
        unsupported = pampa(tmp_path, old.hostile.url, "request", "local", "--cancel", "4")
        mixed = pampa(tmp_path, old.hostile.url, "request", "local", "--cancel", "4", "--follow", "4")
        late = pampa(tmp_path, ended.hostile.url, "request", "local", "--cancel", "4")
    finally:
        for ap in (other, old, ended):
            ap.hostile.close()
    assert late.returncode == 1 and "answered 409 Conflict: deploy 4 already ended as DONE: nothing to cancel" \
        in late.stderr
    assert wrong.returncode == 2 and "--cancel: deploy 4 is not a pull request of stage local" in wrong.stderr
    assert not any(m == "POST" for m, _, _ in other.hostile.received)
    assert unsupported.returncode == 1
    assert "this access point cannot cancel requests: upgrade it" in unsupported.stderr
    assert mixed.returncode == 2 and "--cancel ID goes alone" in mixed.stderr
