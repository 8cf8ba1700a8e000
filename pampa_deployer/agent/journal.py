"""What the agent is doing, on the node's disk, so a restart knows what was cut short.

Written before a request starts and at every step; removed only once the access point
has the run's outcome. A journal left ``running`` means the agent died mid-sequence:
the next agent reports that run as interrupted, never runs it again, never calls it ok.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


class Journal:
    """One small JSON file, replaced atomically on every write."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def read(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("deploy_id"), int) else None

    def write(self, **entry) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def update(self, **changes) -> None:
        self.write(**{**(self.read() or {}), **changes})

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
