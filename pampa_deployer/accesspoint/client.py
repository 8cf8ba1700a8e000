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

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        import urllib.error  # imported here: most stages have no access point, and urllib is slow to import
        import urllib.request
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + API + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        request.add_header("Accept", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - URL from config
                raw = response.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:200]
            try:
                detail = json.loads(detail).get("error", detail)
            except (ValueError, AttributeError):
                pass
            raise AccessPointError(self.redactor.mask(
                f"access point {self.url}: {method} {path} answered {e.code} {e.reason}: {detail}")) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise AccessPointError(self.redactor.mask(
                f"access point {self.url}: {method} {path} failed: {reason}")) from None
        return json.loads(raw) if raw else None

    def create_deploy(self, stage: str, branch: str, requested_by: str, revision: str | None = None) -> dict:
        return self._call("POST", "/deploys", {"stage": stage, "branch": branch, "revision": revision,
                                               "requested_by": requested_by})

    def take(self, deploy_id: int, node: str) -> dict:
        return self._call("POST", f"/deploys/{deploy_id}/take", {"node": node})

    def allow(self, deploy_id: int) -> dict:
        return self._call("POST", f"/deploys/{deploy_id}/allow", {})

    def finish(self, deploy_id: int, result: str, detail: str = "") -> dict:
        return self._call("POST", f"/deploys/{deploy_id}/finish", {"result": result, "detail": detail})

    def report_version(self, node: str, stage: str, revision: str, roles: tuple[str, ...],
                       deploy_id: int | None) -> dict:
        return self._call("POST", f"/nodes/{node}/version", {"stage": stage, "revision": revision,
                                                             "roles": list(roles), "deploy_id": deploy_id})

    def deploy(self, deploy_id: int) -> dict:
        return self._call("GET", f"/deploys/{deploy_id}")

    def nodes(self, stage: str) -> list[dict]:
        from urllib.parse import quote
        return self._call("GET", f"/nodes?stage={quote(stage)}")["nodes"]
