"""The client side against a hostile node or access point, without root (issue 20, classes 1 and 6).

A node posts what the protocol does not allow (non-finite times, a lone surrogate, terminal escape
sequences); an access point redirects the credential elsewhere, or answers garbage. Against a real
access point (`make_server`, both databases where the database matters) or a hostile one on loopback
(tests/hostileap.py), with the real `pampa request` command in a subprocess: it never exits 70,
never shows a control sequence, never sends its credential to another origin.
"""
from __future__ import annotations

import json
import math
import os
import pty
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hostileap import Hostile

from pampa_deployer.accesspoint import client as client_module
from pampa_deployer.accesspoint.client import AccessPointClient
from pampa_deployer.errors import AccessPointError
from pampa_deployer.server.app import make_server

KEY = "k3y-hostile-client"
NODES = [{"node": "k1", "roles": ["kepler"], "gated": False, "opens_gate": True},
         {"node": "e1", "roles": ["euler"], "gated": True, "opens_gate": False}]
#: Bytes that must never reach a terminal from a remote string: ESC, BEL, CR, C1 CSI/OSC.
CONTROL = ("\x1b", "\x07", "\r", "\x9b", "\x9d")


@pytest.fixture
def ap(ap_database):
    srv = make_server("127.0.0.1", 0, ap_database, KEY)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    thread.join(10)


def stages(tmp_path: Path, url: str) -> Path:
    folder = tmp_path / "stages"
    folder.mkdir(exist_ok=True)
    (folder / "local.yml").write_text(f"""
app: demo
repo: /nonexistent/repo.git
access_point: {{url: "{url}", api_key: "${{PAMPA_AP_KEY}}", timeout: 5}}
hosts:
  k1: {{address: 127.0.0.2, roles: [kepler]}}
  e1: {{address: 127.0.0.3, roles: [euler]}}
""")
    return folder


def pampa(tmp_path: Path, url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PAMPA_AP_KEY": KEY, "CI": "true"}
    return subprocess.run([sys.executable, "-m", "pampa_deployer", "--stages", str(stages(tmp_path, url)), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def pull_request(url: str) -> tuple[dict, AccessPointClient, AccessPointClient]:
    admin = AccessPointClient(url, KEY)
    d = admin.create_request("local", "main", NODES, "ana")
    k1 = AccessPointClient(url, admin.issue_token("local", "k1", ["kepler"])["token"])
    k1.start_run(d["id"], "k1")
    return d, admin, k1


def assert_printable(text: str) -> None:
    for c in CONTROL:
        assert c not in text, (c, text[-2000:])
    assert "internal error" not in text and "Traceback" not in text


# -- class 1: bad data ----------------------------------------------------------------------------------
@pytest.mark.parametrize("event", [
    {"kind": "step_finished", "step": "migrate", "ok": True, "started": math.inf},
    {"kind": "step_finished", "step": "migrate", "ok": True, "started": math.nan},
    {"kind": "step_finished", "step": "migrate", "ok": True, "started": 1e300},
    {"kind": "output", "step": "migrate", "line": "half \ud800 a pair"},
])
def test_the_access_point_refuses_bad_progress_at_the_door_and_keeps_nothing(ap, event):
    srv, url = ap
    d, admin, k1 = pull_request(url)
    before = admin.events(d["id"])["last"]
    with pytest.raises(AccessPointError, match="answered 400 Bad Request: "):  # its words: tests/test_wire.py
        k1.progress(d["id"], "k1", [{"kind": "step_started", "step": "migrate"}, event])
    assert admin.events(d["id"])["last"] == before  # the whole call was refused: nothing was written
    k1.progress(d["id"], "k1", [{"kind": "step_started", "step": "migrate"}])  # the node goes on
    assert [e["step"] for e in admin.events(d["id"], before)["events"]] == ["migrate"]


POISON = [  # what an older access point accepted and still serves: each one made every follower exit 70
    {"kind": "step_started", "step": "migrate", "node_at": 1.0},
    {"kind": "step_finished", "step": "migrate", "ok": True, "started": math.inf, "exit_code": "zero"},
    {"kind": "step_started", "step": "bundle"},
    {"kind": "output", "step": "bundle", "line": "half \ud800 a pair \x1b]0;pwned\x07\x1b[2J", "stream": 7},
    {"kind": "step_finished", "step": "bundle", "ok": "yes", "started": math.nan, "message": ["x"]},
    {"kind": "step_started", "step": "restart_puma", "node_at": 1e300},
    {"kind": "step_finished", "step": "restart_puma", "ok": True, "started": -math.inf, "stderr_tail": None},
]


def test_following_a_request_whose_events_an_older_server_accepted_never_exits_70(ap, tmp_path):
    """Non-finite, out-of-range and wrongly typed fields, a lone surrogate: written straight into the store
    (the door refuses them now), then followed through the real server by the real command."""
    srv, url = ap
    d, admin, k1 = pull_request(url)
    store, now = srv.store, time.time()
    with store._write():
        for body in POISON:
            store._event(d["id"], "progress", {"node": "k1", **body}, now)
    k1.finish_run(d["id"], "k1", "failed", step="restart_puma", detail="bad \x1b[31mred\x1b[0m\rend")

    followed = pampa(tmp_path, url, "request", "local", "--follow", str(d["id"]), "-v", "--report", "r.json")

    assert followed.returncode == 1, followed.stdout + followed.stderr  # k1 failed, e1 skipped: deploy's code
    assert_printable(followed.stdout + followed.stderr)
    assert "RESULT k1 [kepler] failed at restart_puma" in followed.stdout
    assert "bad red end" in followed.stdout and "half \ufffd a pair" in followed.stdout
    report = json.loads((tmp_path / "r.json").read_text())  # finite, in-range times only
    k1_steps = next(h for h in report["hosts"] if h["name"] == "k1")["steps"]
    assert [s["name"] for s in k1_steps] == ["migrate", "bundle", "restart_puma"]
    assert all(s["duration"] >= 0 for s in k1_steps)


def test_escape_sequences_from_nodes_never_reach_the_terminal_live_view(ap, tmp_path):
    """At a terminal (a pty): the live view, the summary table and the timeline show the text, not its codes."""
    srv, url = ap
    d, admin, k1 = pull_request(url)
    evil = "\x1b]0;pwned-title\x07\x1b[2J\x9b2Jmigrating\rdone"
    k1.progress(d["id"], "k1", [{"kind": "step_started", "step": "mig\x1b[5mrate"},
                                {"kind": "output", "step": "mig\x1b[5mrate", "line": evil},
                                {"kind": "step_finished", "step": "mig\x1b[5mrate", "ok": False, "exit_code": 3,
                                 "message": "exit code 3", "stderr_tail": f"line one\n{evil}", "at": time.time(),
                                 "started": time.time() - 1}])
    k1.finish_run(d["id"], "k1", "failed", step="mig\x1b[5mrate", detail=evil)
    main, child = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    proc = subprocess.Popen([sys.executable, "-m", "pampa_deployer", "--stages", str(stages(tmp_path, url)),
                             "request", "local", "--follow", str(d["id"]), "-v"], cwd=tmp_path,
                            env={**env, "PAMPA_AP_KEY": KEY, "TERM": "xterm", "COLUMNS": "150"},
                            stdin=child, stdout=child, stderr=child)
    os.close(child)
    shown = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    os.close(main)
    assert proc.wait(30) == 1, shown.decode(errors="replace")[-3000:]
    text = shown.decode("utf-8", "replace")
    assert "migratingdone" in text.replace(" ", "") or "migrating done" in text  # the text is there...
    for injected in ("\x1b]0;", "\x1b[2J", "\x1b[5m", "\x9b", "\x07"):  # ...its codes are not (rich's own remain)
        assert injected not in text, injected
    assert "internal error" not in text


# -- a hostile access point -------------------------------------------------------------------------------
def _request(state: str = "TAKEN", **extra) -> dict:
    return {"id": 1, "stage": "local", "branch": "main", "mode": "pull", "state": state, "created_at": time.time(),
            "nodes": [{"node": "k1", "roles": ["kepler"], "gated": False, "opens_gate": True, "state": "running"},
                      {"node": "e1", "roles": ["euler"], "gated": True, "opens_gate": False, "state": "waiting"}],
            **extra}


GARBAGE_PAGES = [
    {"events": "not a list", "last": 1},
    [],
    {"events": [None, 5, "x", [], {"kind": ["unhashable"]}, {"kind": "node", "node": {"a": 1}, "state": []}],
     "last": 10 ** 20, "deploy": {"id": "one"}},
    {"events": [{"seq": 2, "kind": "step_started", "node": "k1", "step": {"x": 1}, "at": "now"},
                {"seq": 3, "kind": "output", "node": "nobody", "line": "not a node of the request"},
                {"seq": 4, "kind": "step_finished", "node": "k1", "started": 1e308, "at": -1, "exit_code": 2 ** 80},
                {"seq": 5, "kind": "allowed", "at": math.inf}],
     "last": "5", "deploy": {**_request(), "nodes": "k1,e1"}},
    {"events": [{"seq": 6, "kind": "node", "node": "k1", "state": "ok", "detail": "\x1b]0;x\x07ok",
                 "revision": ["abc"]}], "last": 6,
     "deploy": _request("DONE", nodes=[{"node": "k1", "roles": "kepler", "gated": 0, "opens_gate": True,
                                        "state": "ok", "revision": "abc", "ended_at": 4.0e9},
                                       {"node": "e1", "roles": None, "gated": True, "state": "ok",
                                        "started_at": math.nan, "ended_at": 1e300}])},
]


def test_a_follower_survives_anything_the_access_point_sends(tmp_path):
    pages = iter(GARBAGE_PAGES)

    def answer(method, path, headers, body):
        if path == "/api/v1/deploys/1":
            return 200, _request(), {}
        if path.startswith("/api/v1/deploys/1/events"):
            return 200, next(pages, GARBAGE_PAGES[-1]), {}
        return 404, {"error": "no"}, {}

    hostile = Hostile(answer)
    try:
        followed = pampa(tmp_path, hostile.url, "request", "local", "--follow", "1", "-v", "--report", "r.json")
    finally:
        hostile.close()
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert_printable(followed.stdout + followed.stderr)
    assert "RESULT k1 [kepler] ok" in followed.stdout and "RESULT e1 [euler] ok" in followed.stdout
    assert "event(s) or page(s) that were not what the protocol says; they were left out" in followed.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert all(0 <= h["duration"] < 3600 for h in report["hosts"])  # no node ends in 2096, whatever it says


# -- class 6: credentials and redirects -------------------------------------------------------------------
def _redirecting(target: str, code: int = 307) -> Hostile:
    return Hostile(lambda method, path, headers, body: (code, {}, {"Location": target + path}))


def _certificate(tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(cert), str(key)


def test_a_redirect_to_another_origin_never_gets_the_credential(tmp_path):
    elsewhere = Hostile(lambda *a: (200, {"deploys": []}, {}))
    redirector = _redirecting(elsewhere.url)
    try:
        client = AccessPointClient(redirector.url, KEY)
        for call in (lambda: client.deploys("local"), lambda: client.create_deploy("local", "main", "ana")):
            with pytest.raises(AccessPointError, match=rf"answered 307, a redirect to {elsewhere.url}/api/v1/deploys"
                                                       r".*another host or port would receive the credential"):
                call()
        assert elsewhere.received == []  # nothing, so no credential, reached the other origin
        made = pampa(tmp_path, redirector.url, "request", "local", "-m", "x")
        assert made.returncode == 1 and elsewhere.received == []
        assert made.stderr.count("\n") == 1 and "pampa does not follow it" in made.stderr and KEY not in made.stderr
    finally:
        elsewhere.close()
        redirector.close()


def test_https_is_never_downgraded_to_http(tmp_path, monkeypatch):
    plain = Hostile(lambda *a: (200, {"deploys": []}, {}))
    secure = Hostile(lambda method, path, headers, body: (302, {}, {"Location": plain.url + path}),
                     certificate=_certificate(tmp_path))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))  # the client trusts our test certificate
    try:
        client = AccessPointClient(secure.url, KEY)
        with pytest.raises(AccessPointError, match="answered 302, a redirect to http://.*it changes https to http"):
            client.deploys("local")
        assert len(secure.received) == 1 and secure.received[0][2]["authorization"] == f"Bearer {KEY}"
        assert plain.received == []
    finally:
        plain.close()
        secure.close()


def test_a_same_origin_read_is_followed_and_a_write_is_not():
    def answer(method, path, headers, body):
        if path.startswith("/old"):
            return 301, {}, {"Location": path.replace("/old", "", 1)}
        return 200, {"deploys": [{"id": 1}], "seen": headers.get("authorization")}, {}

    hostile = Hostile(answer)
    try:
        assert AccessPointClient(hostile.url + "/old", KEY).deploys("local") == [{"id": 1}]
        assert hostile.received[-1][2]["authorization"] == f"Bearer {KEY}"  # same origin: the credential is its own
        with pytest.raises(AccessPointError, match="a POST is not repeated elsewhere"):
            AccessPointClient(hostile.url + "/old", KEY).create_deploy("local", "main", "ana")
    finally:
        hostile.close()


def test_a_credential_over_plain_http_to_a_remote_address_is_warned_once(monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(client_module, "_WARNED", set())
    remote = AccessPointClient("http://ap.example.com:8750", KEY, warn=said.append)
    remote._warn_if_plain()
    remote._warn_if_plain()
    AccessPointClient("http://ap.example.com:8750", "other", warn=said.append)._warn_if_plain()
    for quiet in ("http://127.0.0.1:8750", "http://localhost:1", "http://[::1]:2", "https://ap.example.com"):
        AccessPointClient(quiet, KEY, warn=said.append)._warn_if_plain()
    assert said == ["the access point credential goes to http://ap.example.com:8750 over plain http: anyone on "
                    "the way can read and reuse it; use an https:// access_point.url (docs/access-point.md, TLS)"]


def _own_address() -> str | None:
    """This machine's own address on a non-loopback interface (the traffic stays on this machine), or None."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route's source address
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_pampa_request_warns_once_when_its_key_goes_over_plain_http(tmp_path):
    address = _own_address()
    if address is None:
        pytest.skip("no non-loopback address on this machine")
    done = _request("DONE", nodes=[{"node": "k1", "roles": ["kepler"], "state": "ok"}])
    hostile = Hostile(lambda method, path, headers, body:
                      (200, {"events": [], "last": 0, "deploy": done} if "/events" in path else done, {}), bind=address)
    try:
        followed = pampa(tmp_path, hostile.url, "request", "local", "--follow", "1")
    finally:
        hostile.close()
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert followed.stderr.count("over plain http") == 1, followed.stderr  # said once, for several calls
    assert len(hostile.received) >= 2


def test_status_shows_what_the_access_point_says_without_control_sequences_or_a_crash(tmp_path):
    """`pampa status` prints the stage's last pull request and open requests, from the access point."""
    evil = "\x1b]0;pwned\x07ana\x1b[2J"
    answers = {
        "/api/v1/nodes?stage=local": {"nodes": [{"node": ["k1"]}, {"node": "k1", "revision": "abc\x1b[31m"}, 7]},
        "/api/v1/deploys?stage=local": {"deploys": [
            {"id": 3, "mode": "pull"}, {"id": 2, "state": "TAKEN", "taken_by": evil}, {"state": "TAKEN"}]},
        "/api/v1/deploys/3": {**_request("TAKEN", requested_by=evil), "id": 3, "branch": "ma\rin",
                              "nodes": [{"node": "k1", "roles": ["kepler"], "state": "running",
                                         "stalled": evil}, {"node": "e1", "state": {"x": 1}}]},
    }
    hostile = Hostile(lambda method, path, headers, body: (200, answers.get(path, {"error": "no"}), {}))
    try:
        shown = pampa(tmp_path, hostile.url, "status", "local")
    finally:
        hostile.close()
    assert shown.returncode == 1, shown.stdout + shown.stderr  # the hosts are unreachable: status cannot vouch
    assert_printable(shown.stdout + shown.stderr)
    assert "last pull request 3 (branch ma in)" in shown.stdout and "stalled: k1 (ana)" in shown.stdout
    assert "access point: deploy request 2 TAKEN (taken by ana)" in shown.stdout
