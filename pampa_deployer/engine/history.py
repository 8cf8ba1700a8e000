"""The fleet's deploys, newest first, merged from every host's revision log and the access point.

A run writes one line on each host it touched, all with the same run id: merged, they give the run
its hosts, their results and roles, when it started and ended. A host whose start record names a
run that never wrote its line there is in that run as ``incomplete`` (still running, or it died).
Pull-mode requests come from the access point (kind ``request``); their agents' lines carry the run id
``request-ID-CREATED``, so a node's own line and the access point's view of it are one entry. A host that
could not be read is named by the caller, never dropped silently.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..accesspoint.client import AccessPointClient, request_run_id
from ..commands import history as log
from ..commands import revlog
from ..commands.untrusted import printable
from ..errors import AccessPointError, ConnectError
from ..steps.releases import layout_of, live_path
from .backends.pool import BackendPool, each_host

#: Lines read per host when ``--since`` asks for everything after a time (the count is then unknown).
SINCE_LINES = 2000
#: Result of a host in a run, worst first: what the run's result is when its hosts disagree.
WORST = ("failed", "interrupted", "incomplete", "stalled", "running", "waiting", "skipped", "ok", "?")
#: An access point request's state, in history's words.
REQUEST_RESULT = {"DONE": "ok", "FAILED": "failed", "PENDING": "waiting", "TAKEN": "running", "ALLOWED": "running"}


@dataclass
class HostLine:
    result: str
    step: str | None = None
    after: str | None = None
    roles: tuple[str, ...] = ()


@dataclass
class Deploy:
    """One run of the fleet, as far as the hosts' logs and the access point say."""

    run: str
    kind: str
    user: str | None
    branch: str | None
    message: str | None
    started: float | None = None
    ended: float | None = None
    hosts: dict[str, HostLine] = field(default_factory=dict)
    request: dict | None = None          # the access point's request (pull mode): id, kind, state

    @property
    def when(self) -> float:
        return self.started if self.started is not None else (self.ended or 0.0)

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None or self.result in ("incomplete", "running", "waiting"):
            return None
        return max(0.0, self.ended - self.started)

    @property
    def result(self) -> str:
        results = {h.result for h in self.hosts.values()}
        if self.request is not None and not results:
            return REQUEST_RESULT.get(self.request.get("state"), "?")
        return next((r for r in WORST if r in results), "?")

    @property
    def revision(self) -> str | None:
        """The revision the run left its hosts on: what most of its successful hosts ended with."""
        for wanted in (("ok",), tuple(WORST)):
            after = Counter(h.after for h in self.hosts.values() if h.after and h.result in wanted)
            if after:
                return after.most_common(1)[0][0]
        return (self.request or {}).get("revision")

    def by_role(self) -> dict[str, Counter]:
        roles: dict[str, Counter] = {}
        for line in self.hosts.values():
            for role in line.roles or ("?",):
                roles.setdefault(role, Counter())[line.result] += 1
        return roles


def read_logs(stage, hosts, pool: BackendPool, lines: int) -> dict[str, tuple | ConnectError]:
    """Every host's (entries, start record, unreadable lines), in parallel; one command per host."""
    def read(host, backend):
        live = live_path(host, layout_of(stage.settings, host.path, ""))
        text = backend.run(log.read(revlog.log_path(host.path), revlog.state_path(live), lines)).stdout
        return log.parse(text)

    return each_host(pool, hosts, read)


def merge(stage: str, found: dict[str, tuple], roles_of: dict[str, tuple[str, ...]]) -> list[Deploy]:
    """The runs in the hosts' logs and start records, newest first."""
    deploys: dict[str, Deploy] = {}
    for host, (entries, state, _unreadable) in found.items():
        for e in entries:
            if e["stage"] not in (None, stage):
                continue  # another stage deployed to the same code path
            key = e["run"] or f"{host}@{e['ended']}"
            d = deploys.setdefault(key, Deploy(run=key, kind=e["kind"], user=e["user"], branch=e["branch"],
                                               message=e["message"]))
            d.hosts[host] = HostLine(e["result"], e["step"], e["after"], tuple(e["roles"] or roles_of.get(host, ())))
            d.ended = max(d.ended or 0.0, e["ended"])
            if e["started"] is not None:
                d.started = min(d.started or e["started"], e["started"])
        if state is not None and state["stage"] in (None, stage):
            key = state["run"] or f"{host}@incomplete"
            d = deploys.setdefault(key, Deploy(run=key, kind=state["kind"], user=state["user"],
                                               branch=state["branch"], message=None))
            if host not in d.hosts:
                d.hosts[host] = HostLine("incomplete", state["step"], None, tuple(roles_of.get(host, ())))
            if state["started"] is not None:
                d.started = min(d.started or state["started"], state["started"])
    return sorted(deploys.values(), key=lambda d: d.when, reverse=True)


def add_requests(deploys: list[Deploy], stage, hosts: set[str], newest: int) -> str | None:
    """Fold the stage's pull-mode requests (the access point's newest ``newest``) into ``deploys``;
    returns why the access point could not be read, or None (also when the stage has none)."""
    client = AccessPointClient.from_stage(stage)
    if client is None:
        return None
    by_run = {d.run: d for d in deploys}
    try:
        pulls = [r for r in client.deploys(stage.name) if isinstance(r, dict) and r.get("mode") == "pull"][:newest]
        for listed in pulls:
            request = client.deploy(int(listed["id"]))
            if not isinstance(request, dict):
                raise ValueError("not an object")
            nodes = {printable(n.get("node"), 100): n for n in request.get("nodes") or [] if isinstance(n, dict)}
            if not set(nodes) & hosts:
                continue
            key = request_run_id(request["id"], request.get("created_at"))
            d = by_run.get(key)
            if d is None:
                d = Deploy(run=key, kind="request", user=_text(request.get("requested_by")),
                           branch=_text(request.get("branch")), message=_text(request.get("message"), 500))
                deploys.append(d)
            d.kind = "request"
            d.request = {"id": int(request["id"]), "kind": _text(request.get("kind")) or "deploy",
                         "state": _text(request.get("state")), "revision": log.revision(request.get("revision"))}
            d.started = d.started if d.started is not None else _number(request.get("created_at"))
            d.ended = d.ended if d.ended is not None else _number(request.get("ended_at"))
            for name, run in nodes.items():
                if name in hosts and name not in d.hosts:  # the node's own line, when read, says more
                    listed_roles = run.get("roles") or ()
                    if isinstance(listed_roles, str):
                        listed_roles = listed_roles.split(",")
                    roles = tuple(printable(r, 50) for r in listed_roles if isinstance(r, str) and r)
                    state = "stalled" if run.get("stalled") else _text(run.get("state")) or "?"
                    d.hosts[name] = HostLine(state, _text(run.get("step")), log.revision(run.get("revision")), roles)
    except AccessPointError as e:
        return e.message
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return f"access point {client.url}: an answer that is not a deploy request ({type(e).__name__})"
    deploys.sort(key=lambda d: d.when, reverse=True)
    return None


def _text(value: object, limit: int = 100) -> str | None:
    return printable(value, limit) if isinstance(value, str) and value else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
