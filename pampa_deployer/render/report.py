"""Machine-readable reports: JSON (schema in docs/ci.md) and JUnit XML (one test case per host)."""
from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from ..engine import events as ev
from ..engine.results import FAILED, INTERRUPTED, SKIPPED, RunResult
from .shown import Renderer

SCHEMA_VERSION = 1


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def deployed_revision(result: RunResult) -> str | None:
    """The revision most hosts run after the run (the plan's target for a rollback)."""
    if result.revision:
        return result.revision
    revs = Counter(h.revision_after for h in result.hosts if h.revision_after and h.ok)
    return revs.most_common(1)[0][0] if revs else None


#: What a dry run's report says of the run, of each host and step it showed: planned, never "ok" (it ran nothing).
PLANNED = "planned"
DRY_RUN_NOTE = "dry run: planned, nothing was run"


def outcome(result: RunResult) -> str:
    """The report's top-level ``result``: ``refused`` means no host was touched (lock held, hook failed...)."""
    if result.refused is not None:
        return "refused"
    if result.dry_run and not (result.interrupted_by or result.by_result(FAILED)):
        return PLANNED
    return "ok" if result.ok else ("interrupted" if result.interrupted_by else "failed")


def _host_result(result: RunResult, h) -> str:
    return PLANNED if result.dry_run and h.ok else h.result


def _step_result(result: RunResult, s) -> str:
    return PLANNED if result.dry_run and s.ok else ("ok" if s.ok else "failed")


def to_dict(result: RunResult, exit_code: int) -> dict:
    """The JSON report (docs/ci.md). A dry run claims nothing: its run, hosts and steps are ``planned``, its
    gate never opened, and no revision is reported."""
    dry = result.dry_run
    return {
        "schema": SCHEMA_VERSION,
        "stage": result.stage,
        "kind": result.kind,
        "branch": result.branch,
        "revision": deployed_revision(result),
        "dry_run": result.dry_run,
        "started": _iso(result.started),
        "ended": _iso(result.ended),
        "duration": round(result.ended - result.started, 3),
        "result": outcome(result),
        "reason": result.refused,
        "message": result.message,
        "canary": result.canary,
        "exit_code": exit_code,
        "gate": {"state": PLANNED if dry and result.gate != "none" else result.gate,
                 "opened": None if dry else _iso(result.gate_opened_at)},
        "notes": list(result.notes),
        "hosts": [{
            "name": h.host, "roles": h.roles.split(","), "result": _host_result(result, h), "gated": h.gated,
            "started": _iso(h.started), "ended": _iso(h.ended), "duration": round(h.seconds, 3),
            "revision_before": h.revision_before, "revision_after": None if dry else h.revision_after,
            "failed_step": h.failed_step, "exit_code": h.exit_code,
            "reason": (DRY_RUN_NOTE if dry and h.ok else h.reason or None),
            "stderr_tail": h.stderr_tail or None, "notes": list(h.notes),
            "steps": [{"name": s.name, "result": _step_result(result, s), "started": _iso(s.started),
                       "ended": _iso(s.ended), "duration": round(s.seconds, 3), "exit_code":
                       (None if dry and s.ok else 0 if s.ok else s.exit_code), "message": s.message or None,
                       "skipped": s.skipped} for s in h.steps],
        } for h in result.hosts],
    }


def write_json(result: RunResult, exit_code: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(result, exit_code), indent=2) + "\n")


def write_junit(result: RunResult, path: Path) -> None:
    """One <testcase> per host: failed -> <failure>, skipped/interrupted -> <skipped>; in a dry run every host
    that would run is <skipped> too (nothing was run, so nothing passed)."""
    planned = [h for h in result.hosts if result.dry_run and h.ok]
    suite = ET.Element("testsuite", name=f"pampa {result.kind} {result.stage}", tests=str(len(result.hosts)),
                       failures=str(len(result.by_result(FAILED))),
                       skipped=str(len(result.by_result(SKIPPED)) + len(result.by_result(INTERRUPTED)) + len(planned)),
                       time=f"{result.ended - result.started:.3f}", timestamp=_iso(result.started) or "")
    for h in result.hosts:
        case = ET.SubElement(suite, "testcase", classname=f"{result.stage}.{h.roles}", name=h.host,
                             time=f"{h.seconds:.3f}")
        if h.result == FAILED:
            failure = ET.SubElement(case, "failure", message=f"{h.failed_step}: {h.reason}",
                                    type=h.failed_step or "failed")
            failure.text = h.stderr_tail or h.reason
        elif h.result in (SKIPPED, INTERRUPTED):
            ET.SubElement(case, "skipped", message=h.reason or h.result)
        elif h in planned:
            ET.SubElement(case, "skipped", message=DRY_RUN_NOTE)
        steps = "\n".join(f"{s.name}: {_step_result(result, s)} {s.seconds:.3f}s" for s in h.steps)
        ET.SubElement(case, "system-out").text = steps
    suites = ET.Element("testsuites")
    suites.append(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


class ReportWriter(Renderer):
    """Writes ``--report`` (JSON) and ``--junit`` (XML) when the run finishes."""

    def __init__(self, json_path: Path | None = None, junit_path: Path | None = None):
        self.json_path, self.junit_path = json_path, junit_path

    def on_run_finished(self, e: ev.RunFinished) -> None:
        if self.json_path is not None:
            write_json(e.result, e.exit_code, self.json_path)
        if self.junit_path is not None:
            write_junit(e.result, self.junit_path)
