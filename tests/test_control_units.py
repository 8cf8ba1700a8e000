"""Unit tests of the control parts without a fleet: live marker parsing, the dead-peer rule, abandoning."""
from __future__ import annotations

import threading
import time

from pampa_deployer.engine.backends.liveness import Heartbeat
from pampa_deployer.engine.backends.session import _MarkedStream, _partial_marker
from pampa_deployer.engine.scheduler import Scheduler
from pampa_deployer.steps.actions import Command


def test_a_line_is_passed_on_at_once_not_when_the_command_ends():
    lines = []
    stream = _MarkedStream("stdout", Command("x"), lambda s, line: lines.append(line), b"__PAMPA_abc__")
    stream.feed(b"migrating 001\n")
    assert lines == ["migrating 001"]  # before any marker arrived
    stream.feed(b"half a line __PA")  # could be the marker's start: held back, the rest passed on
    stream.feed(b"MPA_abc__ 0\n")
    assert stream.done and stream.exit_code == 0
    assert stream.text().endswith("half a line ")
    assert _partial_marker(b"xx__PA", b"__PAMPA_") == 4 and _partial_marker(b"xyz", b"__PAMPA_") == 0


class FakeTransport:
    """Answers keepalives while ``answering`` is set; blocks (like a frozen host) otherwise."""

    def __init__(self):
        self.answering = threading.Event()
        self.answering.set()
        self.active = True
        self.pings = 0

    def is_active(self):
        return self.active

    def global_request(self, kind, wait=True):
        assert kind == "keepalive@openssh.com" and wait
        self.pings += 1
        while not self.answering.wait(0.05):
            if not self.active:
                return None
        return None

    def close(self):
        self.active = False


def test_dead_peer_rule_fires_after_interval_times_count_and_closes_the_transport():
    transport, fired = FakeTransport(), []
    beat = Heartbeat(transport, interval=0.2, count_max=2, on_dead=lambda: (fired.append(1), transport.close()))
    beat.start("fake")
    try:
        time.sleep(1.0)
        assert not beat.dead and transport.pings >= 3  # answering: alive however long
        transport.answering.clear()  # frozen
        deadline = time.monotonic() + 10
        while not beat.dead and time.monotonic() < deadline:
            time.sleep(0.05)
        assert beat.dead and fired == [1] and not transport.active
    finally:
        beat.stop()


def test_scheduler_can_abandon_a_stuck_item():
    release = threading.Event()
    abandon = threading.Event()

    def work(item):
        if item == "stuck":
            release.wait(30)
        return item

    threading.Timer(0.5, abandon.set).start()
    t0 = time.monotonic()
    results = Scheduler(4).run(["a", "stuck", "b"], work, abandon.is_set)
    release.set()
    assert results == ["a", None, "b"] and time.monotonic() - t0 < 10
