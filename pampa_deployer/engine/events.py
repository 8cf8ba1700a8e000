"""Events the engine emits; renderers subscribe to the bus and never run commands.

Delivery is serialised under one lock, so output of parallel hosts never interleaves
inside a renderer, and each renderer sees events in one global order.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .results import StepResult


def now() -> float:
    return time.time()


@dataclass(frozen=True)
class Event:
    at: float = field(default_factory=now, kw_only=True)


@dataclass(frozen=True)
class RunStarted(Event):
    stage: str
    kind: str
    branch: str
    hosts: tuple[tuple[str, str, bool], ...]  # (name, roles, gated)
    dry_run: bool = False


@dataclass(frozen=True)
class HostEvent(Event):
    host: str


@dataclass(frozen=True)
class HostConnecting(HostEvent):
    pass


@dataclass(frozen=True)
class HostConnected(HostEvent):
    seconds: float


@dataclass(frozen=True)
class HostWaiting(HostEvent):
    """A gated host is connected and waits for the kepler gate."""


@dataclass(frozen=True)
class StepStarted(HostEvent):
    step: str


@dataclass(frozen=True)
class CommandStarted(HostEvent):
    step: str
    display: str


@dataclass(frozen=True)
class Output(HostEvent):
    step: str
    stream: str
    line: str


@dataclass(frozen=True)
class StepFinished(HostEvent):
    """A step ended on a host; ``result`` is the very record the host's result keeps."""

    result: StepResult

    @property
    def step(self) -> str:
        return self.result.name

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def started(self) -> float:
        return self.result.started

    @property
    def exit_code(self) -> int | None:
        return self.result.exit_code

    @property
    def stderr_tail(self) -> str:
        return self.result.stderr_tail

    @property
    def message(self) -> str:
        return self.result.message

    @property
    def skipped(self) -> str | None:
        return self.result.skipped


@dataclass(frozen=True)
class HostFinished(HostEvent):
    result: "object"  # engine.results.HostResult


@dataclass(frozen=True)
class BatchStarted(Event):
    """A rolling batch (``--batch``) starts: its number, how many batches, its hosts."""

    number: int
    total: int
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class GateChanged(Event):
    state: str  # "waiting", "open", "closed"
    reason: str = ""


@dataclass(frozen=True)
class CanaryChanged(Event):
    """The canary (``--canary``) started on ``hosts``, passed, or stopped the deploy (``reason``)."""

    state: str  # "started", "passed", "failed", "declined", "interrupted"
    hosts: tuple[str, ...] = ()
    rest: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Notice(Event):
    """Something the operator should read (interrupt requested, max-fail reached, lock taken...)."""

    message: str
    level: str = "info"
    host: str | None = None


@dataclass(frozen=True)
class RunFinished(Event):
    """The run is over (lock released, connections closed): summary, reports and timeline render now."""

    result: "object"  # engine.results.RunResult
    exit_code: int = 0


Subscriber = Callable[[Event], None]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Handler:
    """A subscriber with one named method per event it handles: ``on_run_started``, ``on_output``...

    Events without a method are ignored, so a renderer says what it shows, not what it skips
    (the model is pyinfra's ``BaseStateCallback`` and sshkit's ``Formatter::Abstract``).
    """

    _methods: dict[type, str] = {}

    def __call__(self, event: Event) -> None:
        kind = type(event)
        name = Handler._methods.get(kind)
        if name is None:
            name = Handler._methods.setdefault(kind, "on_" + _snake(kind.__name__))
        method = getattr(self, name, None)
        if method is not None:
            method(event)


class EventBus:
    """Fan-out of events to subscribers, one event at a time."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        with self._lock:
            for subscriber in self._subscribers:
                subscriber(event)
