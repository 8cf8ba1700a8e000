"""SSH backend pieces that need no server."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pampa_deployer.engine.backends.ssh import SSHBackend, SSHSettings
from pampa_deployer.inventory import stage_from_mapping


def test_each_connection_has_a_fabric_config_of_its_own(tmp_path):
    """Fabric writes into (and re-merges) the config on every Connection: a shared one made a host
    connecting at the same time as another fail with "No attribute or config key found for 'gateway'"."""
    known = tmp_path / "known_hosts"
    known.write_text("")
    stage = stage_from_mapping({"app": "a", "user": "root", "ssh": {"known_hosts": str(known), "config": None},
                                "hosts": {f"h{i}": {"address": f"10.0.0.{i}", "roles": ["newton"]}
                                          for i in range(1, 41)}})
    settings = SSHSettings.from_stage(stage)
    backends = [SSHBackend(host, settings) for host in stage.hosts]
    with ThreadPoolExecutor(16) as pool:
        connections = list(pool.map(lambda b: b._new_connection(), backends * 5))
    assert len({id(c.config) for c in connections}) == len(connections)
    assert [c.host for c in connections[:3]] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_session_preamble_lines_are_taken_out_of_stdout_in_any_chunking():
    """The session's hello (which shell) and a record's acknowledgement precede a command's output; they
    are taken out however the bytes arrive, and a command that ends without one releases its output."""
    from pampa_deployer.engine.backends.session import _Preamble
    data = b"motd\n__HI__ bash\nbody 1\nbody 2\n"
    for size in (1, 3, len(data)):
        p = _Preamble("__HI__", "__M__")
        out = b"".join(p.feed(data[i:i + size]) for i in range(0, len(data), size))
        assert (p.said, out) == ("bash", b"motd\nbody 1\nbody 2\n")
    p = _Preamble("__HI__", "__M__")
    assert p.feed(b"early ") == b"" and p.feed(b"__M__ 0\n") == b"early __M__ 0\n" and p.said == ""


def test_channel_waiter_wakes_on_either_stream_and_opens_no_descriptor():
    """Issue 24: channels are waited on without select() (which refuses descriptors >= 1024) and without
    the pipe a channel's fileno() makes. An arrival on one stream is not lost when the other is emptied."""
    import os
    import threading

    import paramiko

    from pampa_deployer.engine.backends.channelwait import ChannelWaiter
    channel = paramiko.Channel(7)
    descriptors = len(os.listdir("/proc/self/fd"))
    waiter = ChannelWaiter(channel)
    assert not waiter.wait(0)
    channel.in_stderr_buffer.feed(b"err")
    channel.in_buffer.feed(b"out")
    assert channel.in_buffer.read(100) == b"out"  # stdout emptied: stderr still waits to be read
    assert waiter.wait(0)
    assert channel.in_stderr_buffer.read(100) == b"err"
    assert not waiter.wait(0)
    threading.Timer(0.05, channel.in_buffer.feed, [b"later"]).start()
    assert waiter.wait(60)  # woken by the arrival (the bound only tells "woken" from "hung")
    channel.in_buffer.read(100)
    channel.eof_received = True  # both streams end before the exit status comes
    channel.in_buffer.close()
    channel.in_stderr_buffer.close()
    assert not waiter.wait(0)  # nothing to read: what is left to wait for is the exit status
    channel.status_event.set()
    assert waiter.wait(0)
    assert len(os.listdir("/proc/self/fd")) == descriptors


def test_results_of_commands_sent_ahead_are_read_one_after_another_in_any_chunking():
    """What follows a command's marker line is the next command's; a "skip" marker says the host did
    not start it; the next command's record acknowledgement is never taken for this one's."""
    from pampa_deployer.commands.command import Command
    from pampa_deployer.engine.backends.session import _MarkedStream, _Preamble
    data = b"one\nM 0 0\n__ACK__\ntwo\nM 3\nM skip\n"
    for size in (1, 2, 5, len(data)):
        lines, results, rest = [], [], data
        for _ in range(3):
            out = _MarkedStream("stdout", Command("x"), lambda s, line: lines.append(line), b"M")
            ack = _Preamble("__ACK__", "M")
            for i in range(0, len(rest), size):
                fed = ack.feed(rest[i:i + size]) if ack.said is None else rest[i:i + size]
                out.feed(fed)
            out.text()
            results.append((ack.seen, out.skipped, out.exit_code if not out.skipped else None))
            rest = out.rest
        assert results == [(False, False, 0), (True, False, 3), (False, True, None)], size
        assert lines == ["one", "two"] and rest == b""
