"""The wire codec of progress events (accesspoint/wire.py) and what a client makes printable, without root.

The codec is the one place the progress events' kinds and fields are named: the agent encodes, the
server decodes at its door (refusing what the protocol does not allow), and the follower reads
leniently. Random garbage is fed to every reader: none may raise but with ``WireError``.
"""
from __future__ import annotations

import json
import math
import random

import pytest

from pampa_deployer.accesspoint import wire
from pampa_deployer.engine import events as ev
from pampa_deployer.engine.results import StepResult
from pampa_deployer.printable import printable

NOW = 1_800_000_000.0


def test_every_kind_goes_to_the_wire_and_back():
    events = [wire.Progress(wire.STEP_STARTED, "migrate", NOW),
              wire.Progress(wire.COMMAND, "migrate", NOW, display="bundle exec sequel -m db/migrations"),
              wire.Progress(wire.OUTPUT, "migrate", NOW, line="== 2 AddVisits", stream="stderr"),
              wire.Progress(wire.STEP_FINISHED, "migrate", NOW + 2, ok=False, exit_code=3, message="exit code 3",
                            stderr_tail="boom\nfatal", started=NOW),
              wire.Progress(wire.STEP_FINISHED, "bundle", NOW + 3, ok=True, exit_code=0, started=NOW + 2,
                            skipped="gems already installed")]
    for p in events:
        sent = json.loads(json.dumps(wire.encode(p)))  # what the agent posts, through real JSON
        assert wire.decode(sent) == p
        body = wire.stored(p, "kepler-1", NOW + 1)
        assert body["node"] == "kepler-1" and body["node_at"] == p.at and "at" not in body
        served = {"seq": 7, "kind": body["kind"], "at": NOW + 1, **json.loads(json.dumps(body))}
        assert wire.served(served) == p
    assert wire.encode(events[0]) == {"kind": "step_started", "step": "migrate", "at": NOW}
    assert set(wire.encode(events[3])) == {"kind", "step", "at", "ok", "exit_code", "message", "stderr_tail", "started",
                                         "skipped"}


def test_the_reporter_and_the_follower_translate_through_the_codec():
    from pampa_deployer.agent.reporter import progress_of
    finished = ev.StepFinished(host="n1", result=StepResult("bundle", True, NOW, NOW + 1), at=NOW + 1)
    assert progress_of(finished) == wire.Progress(wire.STEP_FINISHED, "bundle", NOW + 1, ok=True, started=NOW)
    assert progress_of(ev.HostConnecting(host="n1")) is None
    skipped = ev.StepFinished(host="n1", at=NOW + 1,
                              result=StepResult("bundle", True, NOW, NOW + 1, 0, skipped="gems already installed"))
    assert progress_of(skipped).skipped == "gems already installed"


def test_a_skip_travels_only_with_a_step_that_succeeded():
    """A pull request's follower learns which steps skipped their work (the JSON report's steps[].skipped),
    and a failed step never claims it skipped."""
    sent = {"kind": "step_finished", "step": "bundle", "ok": True, "skipped": "gems already installed"}
    assert wire.decode(sent).skipped == "gems already installed"
    assert wire.decode({**sent, "ok": False}).skipped == ""
    assert wire.served({**sent, "at": NOW}).skipped == "gems already installed"
    assert wire.served({**sent, "at": NOW, "ok": False}).skipped == ""
    assert wire.served({**sent, "at": NOW, "skipped": ["x"]}).skipped == ""


@pytest.mark.parametrize("event, why", [
    ({"kind": "step_finished", "step": "x", "started": math.inf}, "'started' must be a finite time"),
    ({"kind": "step_finished", "step": "x", "started": -math.inf}, "'started' must be a finite time"),
    ({"kind": "step_finished", "step": "x", "started": math.nan}, "'started' must be a finite time"),
    ({"kind": "step_finished", "step": "x", "started": 1e300}, "'started' must be a finite time"),
    ({"kind": "output", "step": "x", "at": -5}, "'at' must be a finite time"),
    ({"kind": "output", "step": "x", "at": True}, "'at' must be a finite time"),
    ({"kind": "output", "step": "x", "line": "a\ud800b"}, "'line' is not valid Unicode"),
    ({"kind": "step_started", "step": "\udfff"}, "'step' is not valid Unicode"),
    ({"kind": "output", "step": "x", "line": 5}, "'line' must be a string"),
    ({"kind": "output", "step": "x", "stream": "stdin"}, "'stream' must be stdout or stderr"),
    ({"kind": "step_finished", "step": "x", "ok": "false"}, "'ok' must be true or false"),
    ({"kind": "step_finished", "step": "x", "exit_code": 2 ** 40}, "'exit_code' must be a small integer"),
    ({"kind": "step_finished", "step": "x", "exit_code": True}, "'exit_code' must be a small integer"),
    ({"kind": "rm -rf", "step": "x"}, "needs 'kind'"),
    ({"step": "x"}, "needs 'kind'"),
    (["kind", "output"], "needs 'kind'"),
    (None, "needs 'kind'"),
])
def test_the_door_refuses_what_the_protocol_does_not_allow(event, why):
    with pytest.raises(wire.WireError, match=why):
        wire.decode_batch([event])


def test_the_door_bounds_sizes_and_counts():
    with pytest.raises(wire.WireError, match="at most 500 events"):
        wire.decode_batch([{"kind": "step_started", "step": "x"}] * 501)
    with pytest.raises(wire.WireError, match="must be a list"):
        wire.decode_batch({"kind": "step_started"})
    long = wire.decode({"kind": "output", "step": "s" * 500, "line": "x" * 10_000})
    assert len(long.step) == wire.MAX_NAME and len(long.line) == wire.MAX_LINE  # cut, as the protocol says
    assert wire.decode({"kind": "step_started"}) == wire.Progress(wire.STEP_STARTED)  # missing: defaults


SCALARS = [None, True, False, 0, -1, 2 ** 70, 1e300, -1e300, math.inf, math.nan, "", "x", "\ud800",
           "\x1b]0;pwned\x07", "a" * 5000, "step_started", "output", "step_finished", "command", "node", "allowed",
           "failed", "cancelled", "waiting", "running", "ok", NOW]


def _garbage(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth < 3 and roll < 0.15:
        return [_garbage(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 3 and roll < 0.45:
        return {k: _garbage(rng, depth + 1) for k in rng.sample(KEYS, rng.randint(0, 8))}
    return rng.choice(SCALARS)


KEYS = ["id", "seq", "kind", "at", "node_at", "node", "step", "line", "stream", "display", "ok", "exit_code",
        "message", "stderr_tail", "started", "state", "detail", "revision", "nodes", "roles", "gated",
        "opens_gate", "stalled", "created_at", "branch", "stage", "cancelled", "by", "events", "last", "deploy"]


def test_no_reader_fails_on_garbage_but_with_wire_error():
    rng = random.Random(20)
    for _ in range(20_000):
        value = _garbage(rng)
        wire.served(value)  # never raises
        wire.text(value)
        wire.moment(value)
        for reader in (wire.decode, wire.request_view, wire.offered):
            try:
                reader(value)
            except wire.WireError:
                pass


def test_a_served_time_is_the_nodes_only_when_its_clock_is_near_the_servers():
    near = wire.served({"kind": "output", "at": NOW, "node_at": NOW - 3})
    far = wire.served({"kind": "output", "at": NOW, "node_at": NOW - 10 * 86400})
    broken = wire.served({"kind": "output", "at": math.inf, "node_at": "yesterday"})
    assert near.at == NOW - 3 and far.at == NOW and broken.at is None


def test_a_request_view_has_every_field_of_its_type():
    view = wire.request_view({"id": 3, "nodes": [{"node": "k1", "roles": "kepler,euler", "gated": "true",
                                                   "opens_gate": 1, "state": ["x"], "stalled": "no report"},
                                                  {"node": "k1"}, {"roles": []}, "junk"],
                              "created_at": math.nan, "state": "CANCELLED"})
    assert [n["node"] for n in view["nodes"]] == ["k1"]  # named once, named at all
    k1 = view["nodes"][0]
    assert k1["roles"] == ["kepler", "euler"] and k1["gated"] is False and k1["opens_gate"] is False
    assert k1["state"] == "waiting" and k1["stalled"] == "no report"
    assert view["created_at"] is None and view["cancelled"] is True and view["stage"] == ""
    with pytest.raises(wire.WireError):
        wire.request_view({"id": True})


def test_what_a_node_is_offered_is_checked():
    assert wire.offered({"id": 4, "branch": "main"})["kind"] == "deploy"
    for bad in ({}, {"id": "4"}, {"id": 0}, {"id": 4, "kind": "nuke"}, {"id": 4, "kind": "rollback"}, [], None):
        with pytest.raises(wire.WireError):
            wire.offered(bad)


@pytest.mark.parametrize("text, one_line, kept", [
    ("plain text", "plain text", "plain text"),
    ("title\x1b]0;pwned\x07 after", "title after", "title after"),
    ("\x1b[2J\x1b[1;31mred\x1b[0m", "red", "red"),
    ("link \x1b]8;;http://evil\x1b\\here\x1b]8;;\x1b\\", "link here", "link here"),
    ("50%\r100%", "50% 100%", "50%\n100%"),
    ("forged\n12:00:00.000 kepler-1 migrate ok", "forged 12:00:00.000 kepler-1 migrate ok",
     "forged\n12:00:00.000 kepler-1 migrate ok"),
    ("a\tb", "a       b", "a       b"),
    ("lone \ud800 surrogate", "lone \ufffd surrogate", "lone \ufffd surrogate"),
    ("c1 \x9b31m csi and \x9d0;t\x9c osc", "c1  csi and  osc", "c1  csi and  osc"),
    ("bell\x07 nul\x00 del\x7f bidi\u202e", "bell nul del bidi", "bell nul del bidi"),
])
def test_printable_strips_every_control_sequence(text, one_line, kept):
    assert printable(text) == one_line
    assert printable(text, lines=True) == kept
    plain = "nothing to do here"
    assert printable(plain) is plain  # the common case costs no copy


def test_every_string_an_event_carries_reaches_a_renderer_printable():
    """render/shown.py: nested records (a step's result in its event, a host's result with its steps and
    notes) are cleaned too; stderr tails keep their lines; an event with nothing to clean is itself."""
    from pampa_deployer.engine.results import HostResult
    from pampa_deployer.render.shown import shown
    step = StepResult("mig\x1b[5mrate", False, NOW, NOW + 1, 3, "first\x1b]0;x\x07\nsecond\r\n", "exit\rcode")
    event = shown(ev.StepFinished(host="k\x1b[2J1", result=step))
    assert (event.host, event.step, event.stderr_tail, event.message) == \
        ("k1", "migrate", "first\nsecond\n", "exit code")
    host = HostResult("k1", "kepler", "failed", NOW, NOW + 1, steps=(step,), reason="why\x07", notes=("n\x9b1m",))
    done = shown(ev.HostFinished(host="k1", result=host)).result
    assert (done.steps[0].name, done.reason, done.notes) == ("migrate", "why", ("n",))
    clean = ev.Output(host="k1", step="bundle", stream="stdout", line="Installing rack 3.0.8")
    assert shown(clean) is clean
