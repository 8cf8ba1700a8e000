"""Webhook notifications when a deploy starts and ends (``notify.webhooks``).

Each webhook receives one JSON POST per event, with a Slack-compatible ``text`` so a Slack
(or Mattermost, Rocket.Chat, Discord ``/slack``) incoming webhook shows it as is. A
notification that fails is a warning, never a failed deploy; the URLs are secrets (they
carry their token) and are masked in every message.
"""
from __future__ import annotations

import json
from typing import Callable

from ...redact import Redactor


def started_payload(stage: str, kind: str, branch: str, user: str, hosts: list[str],
                    revision: str | None = None, message: str | None = None) -> dict:
    """``message`` is the run's ``-m``: in the payload, and at the end of the text."""
    target = f" {revision[:12]}" if revision else ""
    text = f"{user} started {kind} of {branch}{target} to {stage} ({len(hosts)} hosts)"
    return {"event": f"{kind}.started", "stage": stage, "kind": kind, "branch": branch, "revision": revision,
            "user": user, "hosts": hosts, "message": message, "text": text + (f": {message}" if message else "")}


def finished_payload(stage: str, kind: str, branch: str, user: str, hosts: list[str], result: str,
                     failed_hosts: list[str], duration: float, revision: str | None = None,
                     message: str | None = None) -> dict:
    target = f" {revision[:12]}" if revision else ""
    said = f" ({message})" if message else ""
    text = f"{kind} of {branch}{target} to {stage} by {user}{said}: {result} in {duration:.0f}s"
    if failed_hosts:
        text += f"; failed: {', '.join(failed_hosts[:10])}{' ...' if len(failed_hosts) > 10 else ''}"
    return {"event": f"{kind}.finished", "stage": stage, "kind": kind, "branch": branch, "revision": revision,
            "user": user, "hosts": hosts, "message": message, "result": result, "failed_hosts": failed_hosts,
            "duration": round(duration, 1), "text": text}


class Notifier:
    """POSTs payloads to every webhook; returns warnings instead of raising."""

    def __init__(self, urls: list[str], timeout: float = 5.0, redactor: Redactor | None = None,
                 warn: Callable[[str], None] | None = None):
        self.urls = [str(u) for u in urls]
        self.timeout = timeout
        self.redactor = (redactor or Redactor()).with_values(*self.urls)
        self.warn = warn or (lambda message: None)

    @classmethod
    def from_stage(cls, stage, warn=None) -> "Notifier | None":
        urls = [u for u in stage.notify.webhooks or [] if str(u).strip()]  # "${URL:-}": none here
        if not urls:
            return None
        return cls(urls, stage.notify.timeout, stage.redactor, warn)

    def send(self, payload: dict) -> list[str]:
        """POST ``payload`` to each URL (bounded by ``timeout``); the warnings, one per failed URL."""
        import urllib.error  # imported here: most stages have no webhook, and urllib is slow to import
        import urllib.request
        warnings = []
        body = json.dumps(payload).encode()
        for url in self.urls:
            try:
                request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - URL from config
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - URL from config
                    response.read(65536)
            except urllib.error.HTTPError as e:
                warnings.append(f"HTTP {e.code} {e.reason}")
            except ValueError:  # not a URL urllib can send to; its text repeats the URL, a secret
                warnings.append("not an http:// or https:// URL")
            except Exception as e:  # noqa: BLE001 - a notification never fails a deploy
                warnings.append(f"{type(e).__name__}: {getattr(e, 'reason', None) or e}")
            else:
                continue
            message = self.redactor.mask(f"notification {payload.get('event')} to {url} failed: {warnings[-1]}")
            warnings[-1] = message
            self.warn(message)
        return warnings
