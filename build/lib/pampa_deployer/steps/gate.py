"""open_gate: the last step of kepler; the engine's barrier opens when every kepler passed it."""
from __future__ import annotations

from .actions import OpenGate, StepContext


def open_gate(ctx: StepContext) -> tuple[OpenGate, ...]:
    return (OpenGate(),)
