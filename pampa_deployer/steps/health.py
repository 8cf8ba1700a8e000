"""health_check: after the restarts, prove the host serves the new release before it counts as ok.

Each check is one shell loop run **on the host** (as Kamal checks from the host side): the
address the app listens on is the one the host itself reaches, no firewall or VPN sits between
the operator and the app, and the loop runs in one round trip that the engine can stop like any
command. An HTTP check uses ``curl`` on the host; a command check runs its command under
``timeout``. ``{revision}`` in ``contains`` is the revision the host's code path is at when the
check runs (``git rev-parse HEAD`` there), i.e. the one this deploy just reset it to, so a puma
still serving the old code fails the check.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import ConfigError
from ..inventory.schema import CHECK
from ..shell import fill_plain, quote, render
from .actions import Command, HealthCheck, StepContext

STATUS_MARK = "pampa-status="
_REV = "\x00pampa-revision\x00"


@dataclass(frozen=True)
class CheckSpec:
    """One check's settings, with the schema's defaults filled in."""

    name: str
    url: str | None
    status: int
    contains: str | None
    run: str | None
    retries: int
    interval: float
    timeout: float
    delay: float

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def bound(self) -> float:
        """Seconds after which the whole loop is certainly hung (the engine stops it then)."""
        return self.delay + self.attempts * (self.timeout + self.interval) + 30


def spec_of(name: str, raw: Mapping) -> CheckSpec:
    def get(key):
        value = raw.get(key)
        return CHECK[key].default if value is None else value
    return CheckSpec(name=name, url=get("url"), status=int(get("status")), contains=get("contains"),
                     run=get("run"), retries=int(get("retries")), interval=float(get("interval")),
                     timeout=float(get("timeout")), delay=float(get("delay")))


def checks_for(settings: Mapping, roles) -> list[CheckSpec]:
    """The stage's checks that apply to a host with ``roles`` (a check without ``roles`` applies to all)."""
    out = []
    for name, raw in (settings.get("checks") or {}).items():
        raw = raw or {}
        if raw.get("enabled") is False:
            continue
        wanted = raw.get("roles")
        if wanted is None or set(wanted) & set(roles):
            out.append(spec_of(str(name), raw))
    return out


def _n(value: float) -> str:
    return f"{value:g}"


def expected_text(contains: str, variables: Mapping) -> str:
    """The shell word for ``contains``: template variables filled here, ``{revision}`` on the host."""
    words = []
    for i, part in enumerate(fill_plain(contains, {**variables, "revision": _REV}).split(_REV)):
        if i:
            words.append('"$rev"')
        if part:
            words.append(quote(part))
    return "".join(words) or "''"


def http_script(spec: CheckSpec, url: str, variables: Mapping) -> str:
    """The loop for an HTTP check: GET ``url`` with curl until the status (and text) match."""
    label = f"check {spec.name}"
    pieces = []
    if spec.contains and "{revision}" in spec.contains:
        pieces.append("rev=$(git rev-parse HEAD 2>/dev/null)")
    want = expected_text(spec.contains, variables) if spec.contains else None
    if want is not None:
        pieces.append(f"want={want}")
    match = f'[ "$code" = {spec.status} ]'
    if want is not None:
        match += ' && case "$body" in *"$want"*) true;; *) false;; esac'
    attempt = (f"out=$(curl -sS -m {_n(spec.timeout)} -w {quote(' ' + STATUS_MARK + '%{http_code}')} "
               f"{quote(url)} 2>&1); code=${{out##*{STATUS_MARK}}}; body=${{out% {STATUS_MARK}*}}")
    shown = "status $code, body: $(printf '%s' \"$body\" | head -c 300 | tr '\\n' ' ')"
    expectation = f"status {spec.status}" + (" containing '$want'" if want is not None else "")
    return _loop(spec, label, attempt, match, shown, expectation, pieces)


def command_script(spec: CheckSpec, variables: Mapping) -> str:
    """The loop for a command check: run the command (under ``timeout``) until it exits 0."""
    label = f"check {spec.name}"
    script = render(str(spec.run), variables)
    attempt = f"out=$(timeout {_n(spec.timeout)} sh -c {quote(script)} 2>&1); rc=$?"
    shown = "exit $rc: $(printf '%s' \"$out\" | tail -n 3 | tr '\\n' ' ')"
    return _loop(spec, label, attempt, '[ "$rc" = 0 ]', shown, "exit 0", [])


def _loop(spec: CheckSpec, label: str, attempt: str, match: str, shown: str, expectation: str,
          setup: list[str]) -> str:
    n = spec.attempts
    parts = list(setup)
    if spec.delay:
        parts.append(f"sleep {_n(spec.delay)}")
    parts.append("i=0; ok=")
    parts.append(f'while [ "$i" -lt {n} ]; do [ "$i" -gt 0 ] && sleep {_n(spec.interval)}; i=$((i+1)); '
                 f'{attempt}; if {match}; then ok=1; break; fi; '
                 f'echo "{label}: attempt $i/{n}: {shown}"; done')
    parts.append(f'if [ -n "$ok" ]; then echo "{label}: passed on attempt $i/{n}"; '
                 f'else echo "{label} failed after {n} attempts: expected {expectation}; last: {shown}" >&2; '
                 f'false; fi')
    return "{ " + "; ".join(parts) + "; }"


def describe(spec: CheckSpec, url: str | None, run: str | None = None) -> str:
    """One readable line for ``plan``: what is checked and how patiently."""
    if url is not None:
        what = f"GET {url} -> {spec.status}"
        if spec.contains:
            what += f", body contains {spec.contains!r}"
    else:
        what = f"run {run if run is not None else spec.run!r} -> exit 0"
    timing = (f"{spec.attempts} attempt(s) {_n(spec.interval)}s apart, {_n(spec.timeout)}s each"
              + (f", after {_n(spec.delay)}s" if spec.delay else ""))
    return f"check {spec.name}: {what} ({timing}, from the host)"


def build_check(ctx: StepContext, spec: CheckSpec) -> HealthCheck:
    try:
        return _build(ctx, spec)
    except KeyError as e:
        key = "url" if spec.url is not None else "run"
        raise ConfigError(f"checks.{spec.name}: unknown variable {{{e.args[0]}}} in {key} or contains; "
                          f"known: {', '.join(sorted(ctx.variables))}, revision") from None
    except (ValueError, IndexError) as e:
        raise ConfigError(f"checks.{spec.name}: bad template: {e}") from None


def _build(ctx: StepContext, spec: CheckSpec) -> HealthCheck:
    variables = ctx.variables
    if spec.url is not None:
        url = fill_plain(str(spec.url), variables)
        script = http_script(spec, url, variables)
    else:
        url = None
        script = command_script(spec, variables)
    command: Command = ctx.command(script, cwd=ctx.live_path, timeout=spec.bound())
    run = None if url is not None else render(str(spec.run), variables)
    uses = ("curl",) if run is None else ("timeout", run)
    return HealthCheck(name=spec.name, summary=describe(spec, url, run), command=command, uses=uses)


def health_check(ctx: StepContext, roles=None) -> tuple[HealthCheck, ...]:
    """The checks for the host's roles in this run (``roles``; default: all of the host's roles)."""
    wanted = ctx.host.roles if roles is None else roles
    return tuple(build_check(ctx, spec) for spec in checks_for(ctx.settings, wanted))
