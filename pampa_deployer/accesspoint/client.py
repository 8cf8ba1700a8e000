"""Client of the access point protocol (docs/access-point.md), on the standard library's urllib.

Its credential never leaves the origin (scheme, host, port) of ``access_point.url``: a redirect is
followed only for a read on the same origin; any other (another host, http<->https, a POST) stops
the call with the address it pointed to. Sending a credential over plain ``http://`` to an address
that is not loopback is said once per process. Every answer is JSON read without ``NaN`` or
``Infinity``, and checked for the shape the call expects: an unexpected answer is an
``AccessPointError`` (to retry, like an outage), never a crash in the caller.
"""
from __future__ import annotations

import functools
import json
import math
import sys
from typing import Any, Callable

from ..errors import AccessPointError
from ..inventory.settings import AccessPointView, view
from ..printable import printable
from ..redact import Redactor
from . import wire

API = "/api/v1"
#: Origins a plain-http warning was given for, in this process (said once each).
_WARNED: set[str] = set()


def _stderr(message: str) -> None:
    print(f"pampa: warning: {message}", file=sys.stderr, flush=True)


class AccessPointClient:
    """Talks to one access point with an API key (or a node token); every error becomes an ``AccessPointError``.

    ``warn`` receives the once-per-process warnings (plain http); by default they go to stderr.
    """

    def __init__(self, url: str, api_key: str | None, timeout: float | None = None, redactor: Redactor | None = None,
                 warn: Callable[[str], None] | None = None):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout if timeout is not None else view({}, "access_point", AccessPointView).timeout
        self._redactor = redactor or Redactor()
        self.redactor = self._redactor.with_values(api_key or "")
        self.warn = warn or _stderr
        self._opener = None

    @classmethod
    def from_stage(cls, stage, warn: Callable[[str], None] | None = None) -> "AccessPointClient | None":
        ap = stage.access_point
        if not ap.url:
            return None
        return cls(ap.url, ap.api_key, ap.timeout, stage.redactor, warn)

    def set_credential(self, api_key: str | None) -> None:
        """Use another credential from now on (an agent's rotated token file); the new one is masked too."""
        self.api_key = api_key
        self.redactor = self._redactor.with_values(api_key or "")

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None) -> Any:
        import urllib.error  # imported here: most stages have no access point, and urllib is slow to import
        import urllib.request
        data = json.dumps(body).encode() if body is not None else None
        try:
            request = urllib.request.Request(self.url + API + path, data=data, method=method)  # noqa: S310 - URL from config
        except ValueError:  # the stage's validator refuses such a URL; a client made in code may not be checked
            raise AccessPointError(self.redactor.mask(f"access point {self.url}: not an http:// or https:// URL; "
                                                      "fix the stage's `access_point.url`")) from None
        request.add_header("Content-Type", "application/json")
        request.add_header("Accept", "application/json")
        if self.api_key:
            self._warn_if_plain()
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with self._open(request, timeout or self.timeout) as response:
                raw = response.read()
        except Redirected as e:
            raise AccessPointError(self.redactor.mask(
                f"access point {self.url}: {method} {path} answered {e.code}, a redirect to {printable(e.target)[:200]}; "
                f"pampa does not follow it ({e.why}): set access_point.url to the address that answers"),
                status=e.code) from None
        except urllib.error.HTTPError as e:
            text = e.read(4096).decode("utf-8", "replace")
            try:
                answer = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
            except (ValueError, RecursionError):
                answer = None
            detail = answer.get("error") if isinstance(answer, dict) and isinstance(answer.get("error"), str) \
                else text
            raise Rejected(self.redactor.mask(
                f"access point {self.url}: {method} {path} answered {e.code} {e.reason}: "
                f"{printable(detail)[:200]}"), e.code, answer) from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise AccessPointError(self.redactor.mask(
                f"access point {self.url}: {method} {path} failed: {printable(str(reason))} (is it running, and is "
                "the stage's `access_point.url` right?)"), unreachable=True) from None
        try:
            return json.loads(raw, parse_constant=_no_constant, parse_float=_finite) if raw else None
        except (ValueError, RecursionError):
            raise AccessPointError(f"access point {self.url}: {method} {path} answered something that is not JSON",
                                   unreachable=True) from None

    def _open(self, request, timeout: float):
        if self._opener is None:
            import urllib.request
            self._opener = urllib.request.build_opener(same_origin_redirects())
        return self._opener.open(request, timeout=timeout)

    def _warn_if_plain(self) -> None:
        from urllib.parse import urlsplit
        parts = urlsplit(self.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if parts.scheme != "http" or is_loopback(parts.hostname or "") or origin in _WARNED:
            return
        _WARNED.add(origin)
        self.warn(f"the access point credential goes to {origin} over plain http: anyone on the way can read "
                  "and reuse it; use an https:// access_point.url (docs/access-point.md, TLS)")

    def _object(self, method: str, path: str, body: dict | None = None, timeout: float | None = None) -> dict:
        """``_call`` for an answer that must be a JSON object."""
        answer = self._call(method, path, body, timeout)
        if not isinstance(answer, dict):
            raise self._unexpected(method, path, "not a JSON object")
        return answer

    def _list(self, path: str, key: str) -> list[dict]:
        """The objects of the list ``key`` of a GET's answer (anything else in it is left out)."""
        items = self._object("GET", path).get(key)
        if not isinstance(items, list):
            raise self._unexpected("GET", path, f"no '{key}' list")
        return [item for item in items if isinstance(item, dict)]

    def _unexpected(self, method: str, path: str, why: str) -> AccessPointError:
        return AccessPointError(f"access point {self.url}: {method} {path} answered something unexpected ({why})",
                                status=200, unreachable=True)

    def create_deploy(self, stage: str, branch: str, requested_by: str, revision: str | None = None,
                      message: str | None = None) -> dict:
        return self._object("POST", "/deploys", {"stage": stage, "branch": branch, "revision": revision,
                                                 "requested_by": requested_by, "message": message})

    def take(self, deploy_id: int, node: str) -> dict:
        return self._object("POST", f"/deploys/{deploy_id}/take", {"node": node})

    def allow(self, deploy_id: int) -> dict:
        return self._object("POST", f"/deploys/{deploy_id}/allow", {})

    def finish(self, deploy_id: int, result: str, detail: str = "") -> dict:
        return self._object("POST", f"/deploys/{deploy_id}/finish", {"result": result, "detail": detail})

    def report_version(self, node: str, stage: str, revision: str, roles: tuple[str, ...],
                       deploy_id: int | None) -> dict:
        return self._object("POST", f"/nodes/{_seg(node)}/version", {"stage": stage, "revision": revision,
                                                                    "roles": list(roles), "deploy_id": deploy_id})

    def deploy(self, deploy_id: int) -> dict:
        return self._object("GET", f"/deploys/{deploy_id}")

    def deploys(self, stage: str) -> list[dict]:
        """The stage's requests, newest first (at most 100)."""
        return self._list(f"/deploys?stage={_seg(stage)}", "deploys")

    def nodes(self, stage: str) -> list[dict]:
        return self._list(f"/nodes?stage={_seg(stage)}", "nodes")

    # -- pull mode (docs/pull-mode.md) ---------------------------------------------------------------
    def create_request(self, stage: str, branch: str, nodes: list[dict], requested_by: str,
                       message: str | None = None, kind: str = "deploy", revision: str | None = None) -> dict:
        """A pull-mode request: the nodes listed act on it themselves (``kind="rollback"``: to ``revision``)."""
        body = {"stage": stage, "branch": branch, "nodes": nodes, "requested_by": requested_by, "message": message}
        if kind != "deploy":
            body.update(kind=kind, revision=revision)
        return self._object("POST", "/deploys", body)

    def cancel(self, deploy_id: int, by: str, reason: str | None = None) -> dict:
        """Cancel a pull request (the API key): waiting nodes never start it, running ones stop at their next step."""
        return self._object("POST", f"/deploys/{deploy_id}/cancel", {"by": by, "reason": reason})

    def issue_token(self, stage: str, node: str, roles: list[str]) -> dict:
        return self._object("POST", "/tokens", {"stage": stage, "node": node, "roles": roles})

    def events(self, deploy_id: int, after: int = 0, wait: float = 0) -> dict:
        return self._object("GET", f"/deploys/{deploy_id}/events?after={int(after)}&wait={wait:g}",
                            timeout=self.timeout + wait)

    def next_request(self, node: str, wait: float = 0) -> dict | None:
        """Long poll: the newest request this node should act on (``wire.offered``), or None after ``wait`` s."""
        path = f"/nodes/{_seg(node)}/next?wait={wait:g}"
        answer = self._object("GET", path, timeout=self.timeout + wait)
        if answer.get("deploy") is None:
            if "deploy" not in answer:
                raise self._unexpected("GET", path, "no 'deploy'")
            return None
        try:
            return wire.offered(answer["deploy"])
        except wire.WireError as e:
            raise self._unexpected("GET", path, str(e)) from None

    def hello(self, node: str, detail: str = "") -> dict:
        return self._object("POST", f"/nodes/{_seg(node)}/hello", {"detail": detail})

    def start_run(self, deploy_id: int, node: str) -> dict:
        return self._object("POST", f"/deploys/{deploy_id}/nodes/{_seg(node)}/start", {})

    def progress(self, deploy_id: int, node: str, events: list[dict]) -> dict:
        return self._object("POST", f"/deploys/{deploy_id}/nodes/{_seg(node)}/progress", {"events": events})

    def finish_run(self, deploy_id: int, node: str, result: str, step: str | None = None, detail: str = "",
                   revision: str | None = None) -> dict:
        return self._object("POST", f"/deploys/{deploy_id}/nodes/{_seg(node)}/finish",
                            {"result": result, "step": step, "detail": detail, "revision": revision})


def cancelled(answer) -> bool:
    """A node's start/progress/finish answer (or error body) says its request was cancelled."""
    return isinstance(answer, dict) and answer.get("cancelled") is True


class Rejected(AccessPointError):
    """The access point answered with an error status; ``answer`` is its JSON body (or None)."""

    def __init__(self, message: str, status: int, answer=None):
        super().__init__(message, status, unreachable=status >= 500)
        self.answer = answer


class Redirected(Exception):
    """A redirect the client will not follow (see ``SameOriginRedirects``)."""

    def __init__(self, code: int, target: str, why: str):
        super().__init__(target)
        self.code, self.target, self.why = code, target, why


def _origin(url: str) -> tuple[str, str, int | None]:
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        port = -1
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


@functools.cache
def same_origin_redirects():
    """urllib's redirect handler, made to follow a redirect only for a GET or HEAD on the same scheme, host
    and port, and to refuse any other (``Redirected``).

    urllib's own copies every header, ``Authorization`` included, to whatever host a redirect names,
    even from https to http, and turns a POST into a GET without its body. (Built on first use:
    urllib is slow to import and most stages have no access point.)
    """
    import urllib.request

    class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            old, new = _origin(req.full_url), _origin(newurl)
            why = None
            if new[0] != old[0]:
                why = f"it changes {old[0]} to {new[0]}" if new[0] in ("http", "https") else "not http(s)"
            elif new != old:
                why = "another host or port would receive the credential"
            elif req.get_method() not in ("GET", "HEAD"):
                why = f"a {req.get_method()} is not repeated elsewhere"
            if why is not None:
                fp.close()
                raise Redirected(code, newurl, why)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return SameOriginRedirects


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8, ::1: addresses that never leave the machine."""
    import ipaddress
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _no_constant(name: str) -> None:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON: read as null."""
    return None


def _finite(text: str) -> float | None:
    """A JSON number that overflows a float (``1e400``) is read as null, not as infinity."""
    value = float(text)
    return value if math.isfinite(value) else None


def request_run_id(deploy_id: int, created_at: object = None) -> str:
    """The run id a pull-mode agent gives its run of request ``deploy_id``, which ``pampa history`` joins to
    the request: with its creation time, since an access point's ids start again at 1 (a new database)."""
    created = int(created_at) if isinstance(created_at, (int, float)) and not isinstance(created_at, bool) else None
    return f"request-{int(deploy_id)}" + (f"-{created}" if created is not None else "")


class Stopped(Exception):
    """``interruptible`` gave up waiting because the caller was asked to stop."""


def interruptible(stop, fn, *args, **kwargs):
    """``fn(*args)`` in a helper thread, so a signal (``stop``) is acted on at once, not after a long poll.

    Returns its value or raises its exception; raises ``Stopped`` if ``stop`` is set first (the call
    itself ends by its own timeout, in a daemon thread).
    """
    import threading
    box: dict = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="pampa-ap-call", daemon=True).start()
    while not done.wait(0.2):
        if stop.stopping:
            raise Stopped()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _seg(name: str) -> str:
    from urllib.parse import quote
    return quote(name, safe="")
