"""Client of the access point protocol (docs/access-point.md), on the standard library's urllib."""
from __future__ import annotations

import json
from typing import Any

from ..errors import AccessPointError
from ..inventory.settings import AccessPointView, view
from ..redact import Redactor

API = "/api/v1"


class AccessPointClient:
    """Talks to one access point with an API key; every error becomes an ``AccessPointError``."""

    def __init__(self, url: str, api_key: str | None, timeout: float | None = None, redactor: Redactor | None = None):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout if timeout is not None else view({}, "access_point", AccessPointView).timeout
        self.redactor = (redactor or Redactor()).with_values(api_key or "")

    @classmethod
    def from_stage(cls, stage) -> "AccessPointClient | None":
        ap = stage.access_point
        if not ap.url:
            return None
        return cls(ap.url, ap.api_key, ap.timeout, stage.redactor)

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None) -> Any:
        import urllib.error  # imported here: most stages have no access point, and urllib is slow to import
        import urllib.request
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + API + path, data=data, method=method)  # noqa: S310 - URL from config
        request.add_header("Content-Type", "application/json")
        request.add_header("Accept", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:  # noqa: S310 - URL from config
                raw = response.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:200]
            try:
                detail = json.loads(detail).get("error", detail)
            except (ValueError, AttributeError):
                pass
            raise AccessPointError(self.redactor.mask(
                f"access point {self.url}: {method} {path} answered {e.code} {e.reason}: {detail}"),
                status=e.code, unreachable=e.code >= 500) from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise AccessPointError(self.redactor.mask(
                f"access point {self.url}: {method} {path} failed: {reason} (is it running, and is the stage's "
                "`access_point.url` right?)"), unreachable=True) from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise AccessPointError(f"access point {self.url}: {method} {path} answered something that is not JSON",
                                   unreachable=True) from None

    def create_deploy(self, stage: str, branch: str, requested_by: str, revision: str | None = None,
                      message: str | None = None) -> dict:
        return self._call("POST", "/deploys", {"stage": stage, "branch": branch, "revision": revision,
                                               "requested_by": requested_by, "message": message})

    def take(self, deploy_id: int, node: str) -> dict:
        return self._call("POST", f"/deploys/{deploy_id}/take", {"node": node})

    def allow(self, deploy_id: int) -> dict:
        return self._call("POST", f"/deploys/{deploy_id}/allow", {})

    def finish(self, deploy_id: int, result: str, detail: str = "") -> dict:
        return self._call("POST", f"/deploys/{deploy_id}/finish", {"result": result, "detail": detail})

    def report_version(self, node: str, stage: str, revision: str, roles: tuple[str, ...],
                       deploy_id: int | None) -> dict:
        return self._call("POST", f"/nodes/{_seg(node)}/version", {"stage": stage, "revision": revision,
                                                             "roles": list(roles), "deploy_id": deploy_id})

    def deploy(self, deploy_id: int) -> dict:
        return self._call("GET", f"/deploys/{deploy_id}")

    def deploys(self, stage: str) -> list[dict]:
        """The stage's requests, newest first (at most 100)."""
        return self._call("GET", f"/deploys?stage={_seg(stage)}")["deploys"]

    def nodes(self, stage: str) -> list[dict]:
        from urllib.parse import quote
        return self._call("GET", f"/nodes?stage={quote(stage)}")["nodes"]

    # -- pull mode (docs/pull-mode.md) ---------------------------------------------------------------
    def create_request(self, stage: str, branch: str, nodes: list[dict], requested_by: str,
                       message: str | None = None, kind: str = "deploy", revision: str | None = None) -> dict:
        """A pull-mode request: the nodes listed act on it themselves (``kind="rollback"``: to ``revision``)."""
        body = {"stage": stage, "branch": branch, "nodes": nodes, "requested_by": requested_by, "message": message}
        if kind != "deploy":
            body.update(kind=kind, revision=revision)
        return self._call("POST", "/deploys", body)

    def issue_token(self, stage: str, node: str, roles: list[str]) -> dict:
        return self._call("POST", "/tokens", {"stage": stage, "node": node, "roles": roles})

    def events(self, deploy_id: int, after: int = 0, wait: float = 0) -> dict:
        return self._call("GET", f"/deploys/{deploy_id}/events?after={int(after)}&wait={wait:g}",
                          timeout=self.timeout + wait)

    def next_request(self, node: str, wait: float = 0) -> dict | None:
        """Long poll: the newest request this node should act on, or None after ``wait`` seconds."""
        return self._call("GET", f"/nodes/{_seg(node)}/next?wait={wait:g}", timeout=self.timeout + wait)["deploy"]

    def hello(self, node: str, detail: str = "") -> dict:
        return self._call("POST", f"/nodes/{_seg(node)}/hello", {"detail": detail})

    def start_run(self, deploy_id: int, node: str) -> dict:
        return self._call("POST", f"/deploys/{deploy_id}/nodes/{_seg(node)}/start", {})

    def progress(self, deploy_id: int, node: str, events: list[dict]) -> dict:
        return self._call("POST", f"/deploys/{deploy_id}/nodes/{_seg(node)}/progress", {"events": events})

    def finish_run(self, deploy_id: int, node: str, result: str, step: str | None = None, detail: str = "",
                   revision: str | None = None) -> dict:
        return self._call("POST", f"/deploys/{deploy_id}/nodes/{_seg(node)}/finish",
                          {"result": result, "step": step, "detail": detail, "revision": revision})


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
