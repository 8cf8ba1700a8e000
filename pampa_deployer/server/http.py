"""A small HTTP/1.1 server on asyncio, built to survive the open network.

Why not ``http.server``: its threading server spends one thread per connection and
reads whatever a client promises. Here idle connections cost no thread (one event
loop serves them all), every read has a deadline, the head and the body have size
limits, the number of open connections is capped, and every malformed request gets
a 4xx before the connection closes.
"""
from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from typing import Awaitable, Callable

REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           409: "Conflict", 411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}

_REQUEST_LINE = re.compile(r"(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH) (/[!-~]*) HTTP/1\.([01])")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True)
class Limits:
    """Every bound the server enforces; the defaults suit a fleet of a few thousand agents."""

    max_connections: int = 4096      # open connections at once; beyond that: 503 and close
    head_timeout: float = 10.0       # seconds to receive a request line and headers
    body_timeout: float = 10.0       # seconds to receive the body announced by Content-Length
    keepalive_timeout: float = 15.0  # seconds an idle keep-alive connection is kept
    max_head: int = 16 * 1024        # bytes of request line + headers
    max_target: int = 2048           # bytes of the request target (path + query)
    max_body: int = 256 * 1024       # bytes of a request body


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""
    version: str = "1.1"


@dataclass
class Response:
    status: int
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, keep_alive: bool) -> bytes:
        data = b"" if self.status == 204 else json.dumps(self.body).encode()
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Error')}",
                 "Content-Type: application/json", f"Content-Length: {len(data)}",
                 f"Connection: {'keep-alive' if keep_alive else 'close'}",
                 "Server: pampa-access-point/2"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


class HttpError(Exception):
    """A request the server answers with ``status`` and then closes the connection."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


Handler = Callable[[Request], Awaitable[Response]]


def parse_head(raw: bytes, limits: Limits) -> Request:
    """Request line and headers -> Request (body not read yet); HttpError for anything malformed."""
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HttpError(400, "undecodable request head") from None
    line, _, rest = text.partition("\r\n")
    m = _REQUEST_LINE.fullmatch(line)
    if not m:
        if len(line.split(" ")) == 3 and len(line.split(" ")[1]) > limits.max_target:
            raise HttpError(414, f"request target longer than {limits.max_target} bytes")
        raise HttpError(400, "malformed request line")
    method, target, minor = m.groups()
    if len(target) > limits.max_target:
        raise HttpError(414, f"request target longer than {limits.max_target} bytes")
    headers: dict[str, str] = {}
    for header in rest.split("\r\n"):
        if not header:
            continue
        name, sep, value = header.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HttpError(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        if key in headers and key in ("content-length", "authorization", "host", "transfer-encoding"):
            raise HttpError(400, f"duplicate {name} header")
        headers[key] = value
    return Request(method=method, target=target, headers=headers, version=f"1.{minor}")


def body_length(headers: dict[str, str], limits: Limits) -> int:
    """The announced body size, checked: digits only, within the limit, no chunked bodies."""
    if "transfer-encoding" in headers:
        raise HttpError(411, "Transfer-Encoding is not accepted; send a Content-Length")
    value = headers.get("content-length")
    if value is None or value == "":
        return 0
    if not value.isdigit() or not value.isascii() or len(value) > 12:
        raise HttpError(400, f"bad Content-Length {value[:20]!r}: expected a non-negative integer")
    length = int(value)
    if length > limits.max_body:
        raise HttpError(413, f"body of {length} bytes is over the limit of {limits.max_body}")
    return length


class AsyncHTTPServer:
    """``serve_forever`` in one thread; ``shutdown`` from another (the socketserver interface)."""

    def __init__(self, bind: str, port: int, handler: Handler, limits: Limits | None = None,
                 on_close: Callable[[], None] | None = None):
        self.limits = limits or Limits()
        self.handler = handler
        self.on_close = on_close
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((bind, port))
        self.socket.listen(1024)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.loop = asyncio.new_event_loop()
        self.open_connections = 0
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
        server = await asyncio.start_server(self._connection, sock=self.socket, limit=self.limits.max_head)
        async with server:
            await self._stopped.wait()
            server.close()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

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

    # -- one connection -----------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= self.limits.max_connections:
            await self._send(writer, Response(503, {"error": "too many connections; retry later"}), False)
            return
        self.open_connections += 1
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            first = True
            while True:
                keep_alive = await self._one_request(reader, writer, first)
                first = False
                if not keep_alive:
                    break
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            self.open_connections -= 1
            self._tasks.discard(task)
            writer.close()

    async def _one_request(self, reader, writer, first: bool) -> bool:
        limits = self.limits
        wait = limits.head_timeout if first else limits.keepalive_timeout
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
        except asyncio.TimeoutError:
            if reader.at_eof() or not reader._buffer:  # noqa: SLF001 - nothing sent: close quietly
                return False
            await self._send(writer, Response(408, {"error": "request head not received in time"}), False)
            return False
        except asyncio.IncompleteReadError:
            return False
        except asyncio.LimitOverrunError:
            await self._send(writer, Response(431, {"error": f"request head over {limits.max_head} bytes"}), False)
            return False
        try:
            request = parse_head(raw, limits)
            length = body_length(request.headers, limits)
        except HttpError as e:
            await self._send(writer, Response(e.status, {"error": e.message}), False)
            return False
        if length:
            try:
                request.body = await asyncio.wait_for(reader.readexactly(length), limits.body_timeout)
            except asyncio.TimeoutError:
                await self._send(writer, Response(408, {"error": "request body not received in time"}), False)
                return False
            except asyncio.IncompleteReadError:
                return False
        keep_alive = request.version == "1.1" and request.headers.get("connection", "").lower() != "close"
        try:
            response = await self.handler(request)
        except HttpError as e:
            response = Response(e.status, {"error": e.message})
        except Exception as e:  # noqa: BLE001 - one bad request must not take the server down
            response = Response(500, {"error": f"internal error: {type(e).__name__}"})
        await self._send(writer, response, keep_alive)
        return keep_alive

    async def _send(self, writer: asyncio.StreamWriter, response: Response, keep_alive: bool) -> None:
        try:
            writer.write(response.encode(keep_alive))
            await asyncio.wait_for(writer.drain(), self.limits.body_timeout)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
