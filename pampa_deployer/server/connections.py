"""The access point's HTTP server on asyncio: one event loop, every connection bounded.

Idle connections cost no thread (one event loop serves them all). What one client can hold is
bounded here:

- **connections**: at most ``max_connections`` (lowered to fit the open-file limit, so ``accept`` never
  fails for want of a descriptor) and ``max_per_source`` from one address; one over either gets its 503
  and is closed at once (never left in CLOSE-WAIT);
- **memory**: a connection's next request is read only once the previous answer was taken by the
  kernel; an answer not read within ``write_timeout`` drops the connection and its buffers. A pipelining
  client that never reads therefore stops being read, instead of filling the server with answers;
- **who may send a body**: the handler's ``admit`` sees the head (its credential) before the body is
  read, so an unknown caller never makes the server hold a body, and the API key's may be larger;
- **the log**: repeated lines (an accept failing, a client guessing keys) are written once a minute.

TLS (``ssl_context``) is the standard library's; its handshake has the head's deadline.
"""
from __future__ import annotations

import asyncio
import resource
import socket
import ssl
import threading
from typing import Callable

from .http import Handler, HttpError, Limits, Request, Response, body_length, parse_head
from .log import ServerLog

#: Descriptors kept for everything but client connections: the database, the listening socket, the log,
#: PostgreSQL's connections, and the connections accepted in one batch before their 503.
RESERVED_FDS = 64
#: Bytes read from a socket at once (asyncio reads 256 KiB): what a connection buffers before its head is
#: parsed and its caller admitted, so 800 unknown clients sending bodies cost 800 small buffers, not 200 MB.
READ_CHUNK = 16 * 1024
#: After refusing a request whose body is not read: how long and how much of it is read and dropped before the close.
LINGER, LINGER_BYTES = 2.0, 8 * 1024 * 1024


def give_back_memory() -> None:
    """Return freed heap to the system (glibc's malloc_trim): a burst of large bodies leaves no lasting RSS."""
    global _libc
    if _libc is None:
        try:
            import ctypes
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


if hasattr(asyncio, "timeout"):  # Python 3.11+: a deadline on the running task, no task of its own per read
    async def within(seconds: float, awaitable):
        async with asyncio.timeout(seconds):
            return await awaitable
else:  # pragma: no cover - Python 3.10
    within = asyncio.wait_for


def fit(limits: Limits) -> tuple[int, int]:
    """(connection cap, listen backlog) that the open-file limit can hold: every allowed connection, two full
    accept queues (one accepted at once, the one before still closing after its 503s) and the reserve."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    usable = max(64, (soft if soft != resource.RLIM_INFINITY else 1 << 20) - RESERVED_FDS)
    backlog = max(16, min(limits.backlog, usable // 8))
    return max(1, min(limits.max_connections, usable - 2 * backlog)), backlog


class AsyncHTTPServer:
    """``serve_forever`` in one thread; ``shutdown`` from another (the socketserver interface)."""

    def __init__(self, bind: str, port: int, handler: Handler, limits: Limits | None = None,
                 on_close: Callable[[], None] | None = None, ssl_context: ssl.SSLContext | None = None,
                 log: ServerLog | None = None):
        self.limits = limits or Limits()
        self.handler = handler
        self.on_close = on_close
        self.ssl_context = ssl_context
        self.log = log or ServerLog()
        self.max_connections, self.backlog = fit(self.limits)
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((bind, port))
        self.socket.listen(self.backlog)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        self.open_connections = 0
        self.per_source: dict[str, int] = {}
        self._stopped: asyncio.Event | None = None
        self._done = threading.Event()
        self._running = False
        self._tasks: set[asyncio.Task] = set()

    # -- lifecycle ----------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        self._running = True
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self._done.set()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        # backlog: asyncio listens again with its own default (100) unless told the one asked for
        server = await asyncio.start_server(self._connection, sock=self.socket, limit=self.limits.max_head,
                                            backlog=self.backlog, ssl=self.ssl_context,
                                            ssl_handshake_timeout=self.limits.head_timeout if self.ssl_context else None)
        started = getattr(self.handler, "started", None)
        if started is not None:
            await started()
        async with server:
            await self._stopped.wait()
            server.close()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stopping = getattr(self.handler, "stopping", None)
            if stopping is not None:
                await stopping()

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the server's loop (from any thread)."""
        self.loop.call_soon_threadsafe(fn)

    def shutdown(self, timeout: float = 10.0) -> None:
        if not self._running:
            return
        while self._stopped is None and not self._done.is_set():
            self._done.wait(0.01)
        if self._stopped is not None:
            self.loop.call_soon_threadsafe(self._stopped.set)
        self._done.wait(timeout)

    def server_close(self) -> None:
        try:
            self.socket.close()
        finally:
            if not self.loop.is_running():
                self.loop.close()
            if self.on_close:
                self.on_close()

    def _loop_error(self, loop, context: dict) -> None:
        """asyncio's own complaints (an accept failing for want of descriptors...): once a minute each."""
        message = context.get("message") or "event loop error"
        self.log.say(f"loop {message}", message, context.get("exception"))

    # -- one connection -----------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        counted = False
        task = asyncio.current_task()
        try:
            refusal = self._refusal(peer)
            if refusal is not None:
                await self._send(writer, Response(503, {"error": refusal}), False)
                return
            counted = True
            self.open_connections += 1
            self.per_source[peer] = self.per_source.get(peer, 0) + 1
            self._tasks.add(task)
            writer.transport.set_write_buffer_limits(high=64 * 1024)
            writer.transport.max_size = READ_CHUNK  # asyncio's read size (256 KiB by default)
            first = True
            while await self._one_request(reader, writer, peer, first):
                first = False
        except (ConnectionError, OSError, asyncio.CancelledError, ssl.SSLError):
            pass
        finally:
            if counted:
                self.open_connections -= 1
                left = self.per_source.pop(peer, 1) - 1
                if left > 0:
                    self.per_source[peer] = left
                self._tasks.discard(task)
            writer.close()

    def _refusal(self, peer: str) -> str | None:
        """Why this new connection is turned away (503), or None."""
        if self.open_connections >= self.max_connections:
            self.log.say("cap", f"{self.open_connections} connections open, the cap ({self.max_connections}): new "
                                "ones get 503 (raise --max-connections and the open-file limit for more)")
            return "too many connections; retry later"
        if self.per_source.get(peer, 0) >= self.limits.max_per_source:
            self.log.say(f"source {peer}", f"{peer} holds {self.limits.max_per_source} connections, the most one "
                                           "address may (--max-per-source): its new ones get 503")
            return f"too many connections from {peer}; retry later"
        return None

    async def _one_request(self, reader, writer, peer: str, first: bool) -> bool:
        """Read, answer and write one request; True if the connection may carry another."""
        limits = self.limits
        try:
            raw = await within(limits.head_timeout if first else limits.keepalive_timeout,
                               reader.readuntil(b"\r\n\r\n"))
        except asyncio.TimeoutError:
            if reader.at_eof() or not reader._buffer:  # noqa: SLF001 - nothing sent: close quietly
                return False
            return await self._refuse(writer, HttpError(408, "request head not received in time"))
        except asyncio.IncompleteReadError:
            return False
        except asyncio.LimitOverrunError:
            return await self._refuse(writer, HttpError(431, f"request head over {limits.max_head} bytes"))
        try:
            request = parse_head(raw, limits)  # the framing first: malformed is malformed, whoever asks
            request.peer = peer
            length = body_length(request.headers, max(limits.max_body, limits.max_admin_body))
            admit = getattr(self.handler, "admit", None)
            allowed = await admit(request) if admit else limits.max_body
            if length > allowed:
                raise HttpError(413, f"body of {length} bytes is over the limit of {allowed}")
        except HttpError as e:
            return await self._refuse(writer, e, reader)  # the body, if any, is not read: close
        if length:
            try:
                request.body = await within(limits.body_timeout, reader.readexactly(length))
            except asyncio.TimeoutError:
                return await self._refuse(writer, HttpError(408, "request body not received in time"))
            except asyncio.IncompleteReadError:
                return False
        keep_alive = request.version == "1.1" and request.headers.get("connection", "").lower() != "close"
        response = await self._answer(request)
        request = None  # noqa: F841 - its body is freed before the answer is written
        return await self._send(writer, response, keep_alive, head_only=_is_head(raw)) and keep_alive

    async def _answer(self, request: Request) -> Response:
        try:
            return await self.handler(request)
        except HttpError as e:
            return e.response()
        except Exception as e:  # noqa: BLE001 - one bad request must not take the server down; logged once
            path = request.target.split("?", 1)[0][:100]
            self.log.say(f"internal {type(e).__name__} {request.method} {path}",
                         f"internal error answering {request.method} {path}: {type(e).__name__}: {e}", e)
            return Response(503, {"error": f"the access point failed on this request ({type(e).__name__}); "
                                           "it is in its log; retry later"})

    async def _refuse(self, writer, error: HttpError, unread: asyncio.StreamReader | None = None) -> bool:
        """Answer ``error`` and close. ``unread``: the client may still be sending a body we will not read; closing
        at once would reset the connection and could destroy the answer before the client reads it, so we stop
        writing and discard what arrives (never keeping it) for a moment first, as web servers' lingering close."""
        if await self._send(writer, error.response(), False) and unread is not None:
            try:
                writer.write_eof()
                await within(LINGER, _discard(unread))
            except (asyncio.TimeoutError, OSError, ssl.SSLError, RuntimeError):
                pass
        return False

    async def _send(self, writer: asyncio.StreamWriter, response: Response, keep_alive: bool,
                    head_only: bool = False) -> bool:
        """Write the answer; False (and the connection dropped, buffers freed) if it is not read in time."""
        try:
            writer.write(response.encode(keep_alive, head_only))
            if writer.transport.get_write_buffer_size():  # not all taken by the kernel yet: wait until it is
                await within(self.limits.write_timeout, writer.drain())
            return True
        except asyncio.TimeoutError:
            writer.transport.abort()
            return False
        except (ConnectionError, OSError):
            return False


async def _discard(reader: asyncio.StreamReader) -> None:
    """Read and drop up to LINGER_BYTES, until the client closes."""
    left = LINGER_BYTES
    while left > 0:
        chunk = await reader.read(min(left, READ_CHUNK))
        if not chunk:
            return
        left -= len(chunk)


def _peer(writer: asyncio.StreamWriter) -> str:
    name = writer.get_extra_info("peername")
    return str(name[0]) if isinstance(name, tuple) and name else "?"


def _is_head(raw: bytes) -> bool:
    return raw.startswith(b"HEAD ")
