"""The wire form of what a node reports and what a client reads, named once (docs/access-point.md).

A progress event (a step started, a command, an output line, a step finished) travels from the
agent (``encode``) to the server, which checks it at the door (``decode``: 400 on anything else),
keeps it (``stored``) and serves it to followers (``served``). The agent's reporter, the server's
store and ``pampa request --wait``'s follower all go through here, so a field is spelled in one place.

Nothing read from the network is trusted: ``decode`` refuses wrong types, unknown kinds, numbers
that are not finite, times outside 1970..2106 and text that is not valid Unicode (a lone
surrogate); over-long text is cut to its bound, as the protocol says. The readers a client uses
(``served``, ``request_view``, ``offered``) never raise on what a server sends, except
``offered`` and ``request_view`` when the answer has no usable id: then there is nothing to act on.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

STEP_STARTED, COMMAND, OUTPUT, STEP_FINISHED = "step_started", "command", "output", "step_finished"
KINDS = (STEP_STARTED, COMMAND, OUTPUT, STEP_FINISHED)
STREAMS = ("stdout", "stderr")
#: What a pull request asks its nodes to do.
REQUEST_KINDS = ("deploy", "rollback")

MAX_EVENTS = 500          # events one progress call may carry
MAX_LINE = 2_000          # characters kept of one output line, command, message or stderr tail
MAX_NAME = 128            # characters of a step, node, role or stage name
MAX_NODES = 10_000        # nodes one pull request may list
#: A time on the wire is Unix seconds in this range (1970 .. 2106): anything else is a broken clock or worse.
EARLIEST, LATEST = 0.0, float(2 ** 32)
#: How far a node's clock may be from the server's before the server keeps only its own time.
NODE_CLOCK_SKEW = 86_400.0

_SURROGATE = re.compile("[\ud800-\udfff]")


class WireError(ValueError):
    """What a peer sent is not what the protocol allows; the message says which field and why."""


@dataclass(frozen=True)
class Progress:
    """One progress event of one node's run. ``at`` is when it happened on the node (Unix seconds)."""

    kind: str
    step: str = ""
    at: float | None = None
    line: str = ""             # output
    stream: str = "stdout"     # output
    display: str = ""          # command
    ok: bool = False           # step_finished
    exit_code: int | None = None
    message: str = ""
    stderr_tail: str = ""
    started: float | None = None
    skipped: str = ""         # step_finished: the step succeeded without its work, and why (push: StepResult.skipped)


#: The fields each kind carries besides kind, step and at.
FIELDS = {STEP_STARTED: (), COMMAND: ("display",), OUTPUT: ("stream", "line"),
          STEP_FINISHED: ("ok", "exit_code", "message", "stderr_tail", "started", "skipped")}
_LIMITS = {"step": MAX_NAME}


# -- the agent's side ---------------------------------------------------------------------------------
def encode(p: Progress) -> dict:
    """The dict the agent posts: its kind's fields only, text cut to the protocol's bounds."""
    out: dict = {"kind": p.kind, "step": _cut(p.step, MAX_NAME)}
    if p.at is not None:
        out["at"] = p.at
    for name in FIELDS[p.kind]:
        value = getattr(p, name)
        out[name] = _cut(value, _LIMITS.get(name, MAX_LINE)) if isinstance(value, str) else value
    return out


# -- the server's door -------------------------------------------------------------------------------
def decode_batch(events) -> list[Progress]:
    """A progress call's ``events``: a list of at most ``MAX_EVENTS`` events, each checked by ``decode``."""
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise WireError(f"'events' must be a list of at most {MAX_EVENTS} events")
    return [decode(e, i) for i, e in enumerate(events)]


def decode(e, index: int = 0) -> Progress:
    """One event as a node posted it, or ``WireError`` naming what is wrong with it."""
    where = f"event {index}"
    if not isinstance(e, dict) or e.get("kind") not in KINDS:
        raise WireError(f"{where}: needs 'kind': {', '.join(KINDS)}")
    kind = e["kind"]
    values: dict = {"kind": kind, "step": _text(e, "step", where, MAX_NAME), "at": _time(e, "at", where)}
    if kind == OUTPUT:
        stream = e.get("stream", "stdout")
        if stream not in STREAMS:
            raise WireError(f"{where}: 'stream' must be stdout or stderr")
        values.update(stream=stream, line=_text(e, "line", where))
    elif kind == COMMAND:
        values["display"] = _text(e, "display", where)
    elif kind == STEP_FINISHED:
        ok, code = e.get("ok", False), e.get("exit_code")
        if not isinstance(ok, bool):
            raise WireError(f"{where}: 'ok' must be true or false")
        if code is not None and (not _integer(code) or not -2 ** 31 <= code < 2 ** 31):
            raise WireError(f"{where}: 'exit_code' must be a small integer or null")
        values.update(ok=ok, exit_code=code, message=_text(e, "message", where),
                      stderr_tail=_text(e, "stderr_tail", where), started=_time(e, "started", where),
                      skipped=_text(e, "skipped", where) if ok else "")
    return Progress(**values)


def stored(p: Progress, node: str, now: float) -> dict:
    """The event body the server keeps and serves: the node's name, its fields, and ``node_at`` (the
    node's own time, kept only when its clock is within a day of the server's)."""
    body = {"node": node, **encode(p)}
    at = body.pop("at", None)
    if at is not None and abs(at - now) < NODE_CLOCK_SKEW:
        body["node_at"] = at
    return body


# -- what a client reads -------------------------------------------------------------------------------
def served(e) -> Progress | None:
    """A served progress event (``node``, ``node_at``...) read leniently, or None when it is not one.

    Wrong types become defaults, bad times become None, text is cut to its bound: a follower
    shows what it can and never fails on one bad event.
    """
    if not isinstance(e, dict) or e.get("kind") not in KINDS:
        return None
    at, node_at = moment(e.get("at")), moment(e.get("node_at"))
    if node_at is not None and (at is None or abs(node_at - at) < NODE_CLOCK_SKEW):
        at = node_at  # the node's own time, unless its clock is far from the server's
    finished = e["kind"] == STEP_FINISHED
    code = e.get("exit_code")
    return Progress(kind=e["kind"], step=text(e.get("step"), MAX_NAME), at=at,
                    line=text(e.get("line")), stream="stderr" if e.get("stream") == "stderr" else "stdout",
                    display=text(e.get("display")), ok=e.get("ok") is True,
                    exit_code=code if finished and _integer(code) and -2 ** 31 <= code < 2 ** 31 else None,
                    message=text(e.get("message")), stderr_tail=text(e.get("stderr_tail")),
                    started=moment(e.get("started")),
                    skipped=text(e.get("skipped")) if finished and e.get("ok") is True else "")


def text(value, limit: int = MAX_LINE) -> str:
    """A string field as a client may use it: "" if it is not a string, cut to ``limit``, no lone surrogate."""
    if not isinstance(value, str):
        return ""
    return _SURROGATE.sub("\ufffd", value[:limit])


def moment(value) -> float | None:
    """A time field: a finite number of Unix seconds in 1970..2106, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and EARLIEST <= value <= LATEST else None


def ident(value) -> int | None:
    """An id: a positive integer of at most 15 digits (not a boolean), else None."""
    return value if _integer(value) and 0 < value < 10 ** 15 else None


def offered(d) -> dict:
    """The request ``GET /nodes/NAME/next`` hands a node, with every field it uses checked.

    ``WireError`` when there is nothing a node could act on (no id, an unknown kind, a rollback
    without its target); the agent then logs one line and backs off.
    """
    if not isinstance(d, dict) or ident(d.get("id")) is None:
        raise WireError("the request it handed out has no valid 'id'")
    kind = d.get("kind") or "deploy"
    if kind not in REQUEST_KINDS:
        raise WireError(f"request {d['id']}: unknown 'kind'")
    revision = text(d.get("revision"), 64) or None
    if kind == "rollback" and revision is None:
        raise WireError(f"request {d['id']}: a rollback without its 'revision'")
    branch = text(d.get("branch"), 255) or None
    return {"id": d["id"], "kind": kind, "branch": branch, "revision": revision, "message": text(d.get("message")),
            "requested_by": text(d.get("requested_by"), MAX_NAME), "cancelled": d.get("cancelled") is True,
            "created_at": moment(d.get("created_at"))}  # with the id, the run id that joins it in `pampa history`


def request_view(d) -> dict:
    """A pull request as a follower reads it: every field it uses present and of its type.

    Nodes without a name, or named twice, are left out; at most ``MAX_NODES``. ``WireError``
    when the answer has no id (it is not a request at all).
    """
    if not isinstance(d, dict) or ident(d.get("id")) is None:
        raise WireError("the request has no valid 'id'")
    nodes, seen = [], set()
    for n in d.get("nodes") if isinstance(d.get("nodes"), list) else []:
        name = text(n.get("node"), MAX_NAME) if isinstance(n, dict) else ""
        if not name or name in seen or len(nodes) >= MAX_NODES:
            continue
        seen.add(name)
        nodes.append(_run_view(n, name))
    view = {key: text(d.get(key), limit) for key, limit in
            (("stage", MAX_NAME), ("branch", 255), ("state", 32), ("mode", 16), ("detail", MAX_LINE),
             ("requested_by", MAX_NAME), ("message", MAX_LINE))}
    view.update({key: moment(d.get(key)) for key in ("created_at", "updated_at", "allowed_at", "ended_at")})
    view.update(id=d["id"], kind=d.get("kind") if d.get("kind") in REQUEST_KINDS else "deploy",
                revision=text(d.get("revision"), 64) or None, nodes=nodes, stalled=d.get("stalled") is True,
                cancelled=d.get("cancelled") is True or view["state"] == "CANCELLED")
    return view


def _run_view(n: dict, name: str) -> dict:
    roles = n.get("roles")
    if isinstance(roles, str):
        roles = roles.split(",")
    roles = [text(r, MAX_NAME) for r in roles if isinstance(r, str) and r][:32] if isinstance(roles, list) else []
    stalled = n.get("stalled")
    return {"node": name, "roles": roles, "gated": n.get("gated") is True, "opens_gate": n.get("opens_gate") is True,
            "state": text(n.get("state"), 32) or "waiting", "step": text(n.get("step"), MAX_NAME) or None,
            "detail": text(n.get("detail")), "revision": text(n.get("revision"), 64) or None,
            "stalled": text(stalled) or None if stalled else None,
            **{key: moment(n.get(key)) for key in ("started_at", "updated_at", "ended_at")}}


# -- checks ------------------------------------------------------------------------------------------------
def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _cut(value: str, limit: int) -> str:
    return _SURROGATE.sub("\ufffd", value[:limit])


def _text(e: dict, key: str, where: str, limit: int = MAX_LINE) -> str:
    value = e.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WireError(f"{where}: '{key}' must be a string")
    if _SURROGATE.search(value):
        raise WireError(f"{where}: '{key}' is not valid Unicode (a lone surrogate)")
    return value[:limit]


def _time(e: dict, key: str, where: str) -> float | None:
    value = e.get(key)
    if value is None:
        return None
    if moment(value) is None:
        raise WireError(f"{where}: '{key}' must be a finite time in Unix seconds (1970 to 2106)")
    return float(value)
