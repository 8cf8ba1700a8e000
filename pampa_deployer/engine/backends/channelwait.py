"""Waiting for a paramiko channel's output without a file descriptor.

``select`` on a channel calls its ``fileno()``, which makes an OS pipe for the channel (two
descriptors, held until the channel is closed), and ``select()`` itself refuses any descriptor at
or above 1024 (FD_SETSIZE): a process deploying a thousand hosts holds that many, and the hosts
whose pipes got the high numbers failed with "filedescriptor out of range in select()".

paramiko's stream buffers already signal each arrival to an event object of the caller's
(``BufferedPipe.set_event``: what ``fileno()`` hands its pipe to). Here that object is a
``threading.Event`` shared by both streams: no descriptor, no limit, and the waiting thread wakes
when a chunk arrives, as it did with ``select``.
"""
from __future__ import annotations

import threading

import paramiko


class _Stream:
    """What a paramiko ``BufferedPipe`` calls: ``set()`` when data arrives or the stream closes,
    ``clear()`` when its buffer has been read empty."""

    def __init__(self, waiter: "ChannelWaiter", index: int):
        self.waiter, self.index = waiter, index

    def set(self) -> None:
        self.waiter.mark(self.index, True)

    def clear(self) -> None:
        self.waiter.mark(self.index, False)


class ChannelWaiter:
    """Wakes a reader when a channel's stdout or stderr has something to read (or closed).

    One per channel, made before the first wait; the two streams' states are or-ed under one lock,
    so a stream emptied on one thread while the other gets data on the transport's thread never
    loses that wake-up (paramiko's own ``OrPipe`` can).
    """

    def __init__(self, channel: paramiko.Channel):
        self.channel = channel
        self._lock = threading.Lock()
        self._ready = [False, False]
        self._event = threading.Event()
        channel.in_buffer.set_event(_Stream(self, 0))
        channel.in_stderr_buffer.set_event(_Stream(self, 1))

    def mark(self, index: int, ready: bool) -> None:
        """Stream ``index`` (0 stdout, 1 stderr) has something to read, or no longer has."""
        with self._lock:
            self._ready[index] = ready
            if any(self._ready):
                self._event.set()
            else:
                self._event.clear()

    def wait(self, timeout: float) -> bool:
        """Block until output is ready, the streams end, or the channel closes; at most ``timeout`` s.

        Once both streams have ended (EOF), their events stay set: then what is left to wait for is
        the exit status (or the close), which paramiko signals on ``status_event``.
        """
        channel = self.channel
        if channel.eof_received and not channel.recv_ready() and not channel.recv_stderr_ready():
            return channel.status_event.wait(timeout)
        return self._event.wait(timeout)
