"""One service on a host, and its graceful stop (the drain): TERM, wait up to a timeout, then KILL.

A service is found one of two ways. A **pid-file service** (``units.pid_file``: a script such as the
demo app's ``bin/restart`` writes its main process's pid) is signalled by pampa itself: TERM, a wait of
up to ``stop_timeout`` seconds for the running job to finish, then KILL to its process group. A
**systemd unit** is stopped by systemd (``units.stop``: ``systemctl stop`` sends the unit's KillSignal,
waits its ``TimeoutStopSec``, then kills); pampa reads systemd's ``Result`` to tell whether it had to.
Either way the service is then started with ``units.restart``, and the command prints how long the
stop took; a kill is a ``pampa-note:`` line, so it becomes a note on the host's result.

Pure builders, no I/O: the scripts are tested with exact strings and run for real in a local shell.
Needs GNU ``date`` (``%N``) and ``sleep`` (fractions of a second), as on every Linux server.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..shell import quote

#: ``pampa_alive PID``: the process runs (a number, in /proc, not a zombie waiting for its reaper).
#: /proc rather than ``kill -0``: ``kill -0`` fails for another user's process that is very much alive.
ALIVE = ("pampa_alive() { case \"$1\" in ''|*[!0-9]*) return 1;; esac; [ -r \"/proc/$1/status\" ] && "
         "! grep -q '^State:[[:space:]]*Z' \"/proc/$1/status\"; }")

#: Milliseconds since the epoch (GNU date).
NOW_MS = "$(date +%s%3N)"


@dataclass(frozen=True)
class Service:
    """How pampa reaches one service: its name, how it starts, and its pid file or its systemd unit."""

    unit: str
    start: str                   # units.restart, filled: starts it (and restarts it when it runs)
    pid_file: str | None = None  # units.pid_file, filled: a pid-file service; None: a systemd unit
    stop: str = ""               # units.stop, filled (systemd units)
    reload: str = ""             # units.reload, filled (systemd units: asks puma for a hot/phased restart)

    @property
    def label(self) -> str:
        return quote(self.unit)

    def running(self) -> str:
        """A shell condition, true while the service runs; for a pid-file service it sets ``$pid``."""
        if self.pid_file is not None:
            return f"pid=$(cat {quote(self.pid_file)} 2>/dev/null); pampa_alive \"$pid\""
        return f"systemctl is-active --quiet {quote(self.unit)}"

    def where(self) -> str:
        """Where pampa finds the process, for ``plan``: ``the pid in ~/run/worker.pid`` or ``systemd unit X``."""
        return f"the pid in {self.pid_file}" if self.pid_file is not None else f"systemd unit {self.unit}"


def _seconds(ms_expr: str) -> str:
    """``1.2`` from milliseconds, in the shell."""
    return f"$(({ms_expr} / 1000)).$(({ms_expr} % 1000 / 100))"


def drain(service: Service, stop_timeout: float) -> str:
    """Stop ``service`` gracefully (it may finish its running job), then start it; print how it went."""
    name = service.label
    if service.pid_file is None:
        return _drain_systemd(service)
    wait_ms = int(round(stop_timeout * 1000))
    shown = f"{stop_timeout:g}s"
    kill = ("kill -KILL -- \"-$pid\" 2>/dev/null || kill -KILL \"$pid\"; i=0; "
            "while pampa_alive \"$pid\" && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done")
    return ("{ " + ALIVE + "; pampa_drain() { "
            f"if {service.running()}; then t0={NOW_MS}; if ! kill -TERM \"$pid\"; then pampa_alive \"$pid\" && return 1; fi; "
            f"end=$((t0 + {wait_ms})); "
            f"while pampa_alive \"$pid\" && [ {NOW_MS} -lt \"$end\" ]; do sleep 0.1; done; "
            f"if pampa_alive \"$pid\"; then {kill}; "
            f"if pampa_alive \"$pid\"; then echo {name}\": pid $pid still runs after KILL\" >&2; return 1; fi; "
            f"echo \"pampa-note: \"{name}\": still running {shown} after TERM: killed (KILL)\"; "
            f"else ms=$(({NOW_MS} - t0)); echo {name}\": stopped {_seconds('ms')}s after TERM\"; fi; "
            f"else echo {name}\": was not running\"; fi; "
            f"{service.start}; }}; pampa_drain; }}")


def _drain_systemd(service: Service) -> str:
    """systemd drains the unit itself (KillSignal, TimeoutStopSec, then SIGKILL); ``Result=timeout`` says it
    had to kill."""
    name, unit = service.label, quote(service.unit)
    return ("{ pampa_drain() { "
            f"if {service.running()}; then t0={NOW_MS}; {service.stop} || return 1; ms=$(({NOW_MS} - t0)); "
            f"if [ \"$(systemctl show --property=Result --value {unit})\" = timeout ]; then "
            f"echo \"pampa-note: \"{name}\": did not stop within its TimeoutStopSec after TERM: systemd killed it "
            f"(KILL) after {_seconds('ms')}s\"; "
            f"else echo {name}\": stopped {_seconds('ms')}s after TERM\"; fi; "
            f"else echo {name}\": was not running\"; fi; "
            f"{service.start}; }}; pampa_drain; }}")


def stop_and_start(service: Service, stop_timeout: float) -> str:
    """The service drained then started when pampa can drain it, else ``units.restart`` alone."""
    if service.pid_file is None and not service.stop:
        return service.start
    return drain(service, stop_timeout)


def describe_drain(service: Service, stop_timeout: float) -> str:
    """One line for ``plan``: how the service is stopped and started again."""
    if service.pid_file is None:
        how = (f"{service.stop} (systemd: TERM, KILL after the unit's TimeoutStopSec)")
    else:
        how = f"TERM to {service.where()}, KILL after {stop_timeout:g}s"
    return f"drain {service.unit}: {how}; then {service.start}"
