"""HTTP/1.1 as the access point speaks it: the bounds, and reading a request head and writing an answer.

The server that applies them to connections is ``connections.py``. Why not ``http.server``: its
threading server spends one thread per connection and reads whatever a client promises. Here every
read has a deadline, the head and the body have size limits (the body's follows who is asking: a
caller is known before its body is read), and every malformed request gets a 4xx before the
connection closes.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Awaitable, Callable

REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           409: "Conflict", 411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
           429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}

_REQUEST_LINE = re.compile(r"(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH) (/[!-~]*) HTTP/1\.([01])")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True)
class Limits:
    """Every bound the server enforces; the defaults suit a fleet of a few thousand agents."""

    max_connections: int = 4096      # open connections at once (kept below the open-file limit); beyond: 503, close
    max_per_source: int = 1024       # open connections from one address; beyond: 503, close
    head_timeout: float = 10.0       # seconds to receive a request line and headers
    body_timeout: float = 10.0       # seconds to receive the body announced by Content-Length
    keepalive_timeout: float = 15.0  # seconds an idle keep-alive connection is kept
    write_timeout: float = 10.0      # seconds an answer may wait to be read; then the connection is dropped
    max_head: int = 16 * 1024        # bytes of request line + headers
    max_target: int = 2048           # bytes of the request target (path + query)
    max_body: int = 256 * 1024       # bytes of a request body (a node token's, or anyone's)
    max_admin_body: int = 4 * 1024 * 1024  # bytes of the API key's bodies: a request listing 10,000 nodes
    backlog: int = 1024              # connections the kernel queues before the server accepts them


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""
    version: str = "1.1"
    peer: str = ""                   # the client's address
    caller: object = None            # who is asking, once the handler admitted the request


@dataclass
class Response:
    status: int
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, keep_alive: bool, head_only: bool = False) -> bytes:
        """The answer's bytes; ``head_only`` (a HEAD request): its headers, Content-Length included, no body."""
        data = b"" if self.status == 204 else self.body if isinstance(self.body, bytes) else \
            json.dumps(self.body).encode()
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Error')}",
                 "Content-Type: application/json", f"Content-Length: {len(data)}",
                 f"Connection: {'keep-alive' if keep_alive else 'close'}",
                 "Server: pampa-access-point/3"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else data)


class HttpError(Exception):
    """A request the server answers with ``status`` and then closes the connection."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}

    def response(self) -> Response:
        return Response(self.status, {"error": self.message}, dict(self.headers))


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


def body_length(headers: dict[str, str], limit: int) -> int:
    """The announced body size, checked: digits only, within ``limit``, no chunked bodies."""
    if "transfer-encoding" in headers:
        raise HttpError(411, "Transfer-Encoding is not accepted; send a Content-Length")
    value = headers.get("content-length")
    if value is None or value == "":
        return 0
    if not value.isdigit() or not value.isascii() or len(value) > 12:
        raise HttpError(400, f"bad Content-Length {value[:20]!r}: expected a non-negative integer")
    length = int(value)
    if length > limit:
        raise HttpError(413, f"body of {length} bytes is over the limit of {limit}")
    return length
