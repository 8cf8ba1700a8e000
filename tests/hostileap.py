"""An access point that misbehaves on purpose, for the client-side tests (not a test module).

``Hostile`` is a real HTTP server on loopback (port 0) whose every answer a test chooses: garbage
JSON, redirects, errors, answers too fast. ``Relay`` stands in front of the real access point and
passes every call through, letting a test rewrite an answer (say ``"cancelled": true``). Both keep
what they received (method, path, headers), so a test can say what reached them.
"""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

#: answer(method, path, headers, body) -> (status, body: object or bytes, extra headers)
Answer = Callable[[str, str, dict, bytes], tuple]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        server: Hostile = self.server.owner  # type: ignore[attr-defined]
        headers = {k.lower(): v for k, v in self.headers.items()}
        with server.lock:
            server.received.append((self.command, self.path, headers))
        status, answer, extra = server.answer(self.command, self.path, headers, body)
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _serve

    def log_message(self, *args) -> None:  # quiet
        pass


class Hostile:
    """A server on ``bind`` (loopback by default) answering what ``answer`` says; ``received`` lists (method, path, headers)."""

    def __init__(self, answer: Answer, certificate: tuple[str, str] | None = None, bind: str = "127.0.0.1"):
        self.answer = answer
        self.received: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((bind, 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        scheme = "http"
        if certificate is not None:
            import ssl
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*certificate)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://{bind}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        with self.lock:
            return [path for _, path, _ in self.received]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


class Relay(Hostile):
    """Passes every call to ``upstream`` and back; ``rewrite(method, path, status, answer)`` may change the answer."""

    def __init__(self, upstream: str, rewrite=None):
        self.upstream, self.rewrite = upstream, rewrite
        super().__init__(self._relay)

    def _relay(self, method: str, path: str, headers: dict, body: bytes) -> tuple:
        request = urllib.request.Request(self.upstream + path, data=body if method == "POST" else None,  # noqa: S310 - the test's own server
                                         method=method)
        for key in ("authorization", "content-type"):
            if key in headers:
                request.add_header(key, headers[key])
        try:
            with urllib.request.urlopen(request, timeout=40) as response:  # noqa: S310 - the test's own server
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        answer = json.loads(raw) if raw else None
        if self.rewrite is not None:
            status, answer = self.rewrite(method, path, status, answer)
        return status, answer, {}
