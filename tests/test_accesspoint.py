"""The reference access point over real HTTP on loopback: the protocol, its states and its errors."""
from __future__ import annotations

import threading

import pytest

from pampa_deployer.accesspoint.client import AccessPointClient
from pampa_deployer.errors import AccessPointError
from pampa_deployer.server.app import make_server


@pytest.fixture
def server(ap_database):
    srv = make_server("127.0.0.1", 0, ap_database, "k3y-for-tests")
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_the_seed_flow(server):
    ap = AccessPointClient(server, "k3y-for-tests")
    deploy = ap.create_deploy("production", "main", "ana", "abc123")
    assert deploy["state"] == "PENDING"
    assert ap.take(deploy["id"], "kepler-1")["state"] == "TAKEN"
    ap.report_version("kepler-1", "production", "abc123", ("kepler",), deploy["id"])
    assert ap.allow(deploy["id"])["state"] == "ALLOWED"
    allowed = ap._call("GET", "/deploys?state=ALLOWED")["deploys"]
    assert [d["id"] for d in allowed] == [deploy["id"]]  # what gated nodes poll for
    ap.report_version("euler-1", "production", "abc123", ("euler",), deploy["id"])
    done = ap.finish(deploy["id"], "done")
    assert done["state"] == "DONE" and done["taken_by"] == "kepler-1"
    assert {n["node"]: n["revision"] for n in ap.nodes("production")} == {"kepler-1": "abc123", "euler-1": "abc123"}


def test_states_only_move_forward(server):
    ap = AccessPointClient(server, "k3y-for-tests")
    deploy = ap.create_deploy("production", "main", "ana")
    with pytest.raises(AccessPointError, match="409 Conflict: deploy 1 is PENDING; it cannot become ALLOWED"):
        ap.allow(deploy["id"])
    ap.take(deploy["id"], "kepler-1")
    ap.finish(deploy["id"], "failed", "kepler-1 failed at migrate")
    with pytest.raises(AccessPointError, match="409"):
        ap.finish(deploy["id"], "done")


def test_wrong_key_bad_input_and_unknown_ids(server):
    with pytest.raises(AccessPointError, match="401 Unauthorized: missing or wrong API key") as info:
        AccessPointClient(server, "wrong-key-value").create_deploy("production", "main", "ana")
    assert "wrong-key-value" not in str(info.value)
    ap = AccessPointClient(server, "k3y-for-tests")
    with pytest.raises(AccessPointError, match="400 Bad Request: 'branch' is required"):
        ap._call("POST", "/deploys", {"stage": "production"})
    with pytest.raises(AccessPointError, match="404"):
        ap.deploy(999)
    with pytest.raises(AccessPointError, match="400 Bad Request: 'result' must be 'done' or 'failed'"):
        ap.finish(ap.create_deploy("s", "b", "u")["id"], "maybe")


def test_unreachable_access_point_is_one_clear_error():
    with pytest.raises(AccessPointError, match=r"access point http://127.0.0.1:9: POST /deploys failed: .* \(is it "
                                               r"running, and is the stage's `access_point.url` right\?\)$"):
        AccessPointClient("http://127.0.0.1:9", "k", timeout=2).create_deploy("s", "b", "u")
