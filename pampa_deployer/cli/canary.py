"""``--canary-pause``: asking the operator at a terminal whether the rest of the fleet may go.

The engine asks through a ``Confirm`` callback and never touches the terminal itself. The answer is
read on a helper thread so that Ctrl-C (which the run routes to its stop signal, not to an exception)
still ends the question at once: no answer is a no.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from typing import Callable

YES = ("y", "yes")


def at_a_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def ask(live=None) -> Callable[[str, Callable[[], bool]], bool]:
    """A ``Confirm`` that prints the question (pausing the live view) and reads one line from the terminal."""

    def confirm(question: str, stopping: Callable[[], bool]) -> bool:
        answer: list[str] = []
        got = threading.Event()

        def read() -> None:
            try:
                answer.append(sys.stdin.readline())
            finally:
                got.set()

        with live.paused() if live is not None else contextlib.nullcontext():
            print(question, end="", flush=True)
            threading.Thread(target=read, name="pampa-canary-answer", daemon=True).start()
            while not got.wait(0.2):
                if stopping():
                    print(flush=True)
                    return False
        return bool(answer) and answer[0].strip().lower() in YES

    return confirm
