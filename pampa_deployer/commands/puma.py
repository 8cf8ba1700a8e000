"""Puma restarts that drop no request (issue 21): ask for a phased or hot restart, then wait for puma to
say every worker runs the new code.

- ``phased`` (``SIGUSR1``): puma in cluster mode replaces its workers one at a time, so some worker always
  answers; the master keeps running and re-enters its ``directory`` first (the new code).
- ``hot`` (``SIGUSR2``): puma re-executes itself and keeps its listening socket: requests wait in the
  socket's backlog while it boots instead of being refused.

A pid-file service gets the signal from pampa (``kill -USR1 PID``); a systemd unit gets
``units.reload`` (``systemctl reload``: the unit's ``ExecReload`` sends the signal). A puma that is not
running is started with ``units.restart``. Either way the command then **waits until puma serves the new
code**, as puma itself reports it: its control app (named, with its token, in the state file puma writes,
``state_path``) lists its workers; the restart is done when there are some, every one has booted, none
is a worker from before the restart, and puma counts no old worker. Three new workers that die before
booting end the wait at once (the new code does not boot; puma keeps the old workers serving); otherwise
it ends after ``restart_timeout`` seconds, saying what puma last reported. Finally every new worker must
run inside the live code (``/proc/PID/cwd``): under the releases strategy a puma whose ``directory`` is a
release folder instead of ``current`` would restart into the old code, and that is named too.

Why puma's own report and not a health check: during a phased restart old and new workers answer side by
side, so a request seeing the new revision proves only that one new worker booted. The health checks still
run after the restart steps, as their own step.

The token is read on the host and handed to curl on its standard input (``-K -``): it is in no process's
arguments and never printed. Pure builders, no I/O.
"""
from __future__ import annotations

import math
import posixpath

from ..shell import quote
from .service import ALIVE, Service, stop_and_start

FULL, HOT, PHASED = "full", "hot", "phased"
MODES = (FULL, HOT, PHASED)
SIGNALS = {PHASED: "USR1", HOT: "USR2"}

#: Worker deaths before booting that end the wait: the new code does not boot.
BOOT_DEATHS = 3

#: Puma's stats JSON, split at ``{},[]`` into one ``"key":value`` per line -> ``CLUSTER N BOOTED OLD PHASE
#: PID:BOOTED...`` (CLUSTER 0: single mode, no ``worker_status``; PHASE -1 when absent). mawk, gawk, busybox.
SUMMARY_AWK = (
    'function emit() { n++; b += bt; list = list " " pid ":" bt; pid = ""; bt = "" } '
    '/^"worker_status":/ { w = 1; c = 1 } '
    '!w && /^"phase":[0-9]+$/ { ph = substr($0, 9) } '
    '!w && /^"old_workers":[0-9]+$/ { old = substr($0, 15) } '
    'w && /^"pid":[0-9]+$/ { pid = substr($0, 7); if (bt != "") emit() } '
    'w && /^"booted":(true|false)$/ { bt = ($0 ~ /true/) ? 1 : 0; if (pid != "") emit() } '
    'END { print c + 0, n + 0, b + 0, old + 0, (ph == "" ? -1 : ph) list }')


def stats_function(state: str) -> str:
    """``pampa_stats``: puma's stats JSON from the control app the state file names (unix, tcp or ssl)."""
    st = quote(state)
    return ("pampa_stats() { "
            f"[ -r {st} ] || {{ echo \"no puma state file \"{st}; return 1; }}; "
            f"u=$(sed -n 's/^control_url: *//p' {st}); k=$(sed -n 's/^control_auth_token: *//p' {st}); "
            "case \"$u\" in unix://*) set -- --unix-socket \"${u#unix://}\"; a=http://puma;; "
            "tcp://*) set --; a=\"http://${u#tcp://}\";; ssl://*) set -- -k; a=\"https://${u#ssl://}\";; "
            f"*) echo \"the puma state file \"{st}\" names no control app (control_url)\"; return 1;; esac; "
            "printf 'url = \"%s/stats?token=%s\"\\n' \"$a\" \"$k\" | curl -sS -m 5 \"$@\" -K - 2>&1; }")


def look_function() -> str:
    """``pampa_look``: read puma's stats into ``c n b old ph list``; false (with ``$e``) when none came."""
    return ("pampa_look() { s=$(pampa_stats); case \"$s\" in '{'*) ;; "
            "*) e=$(printf '%s' \"${s:-no answer}\" | tail -n 1); return 1;; esac; "
            f"set -- $(printf '%s' \"$s\" | tr '{{}},[]' '\\n\\n\\n\\n\\n' | awk {quote(SUMMARY_AWK)}); "
            "c=$1 n=$2 b=$3 old=$4 ph=$5; shift 5; list=\" $* \"; }")


_left = {PHASED: "the workers from before keep serving",
         HOT: "puma has no worker to serve: deploy a fixed release or roll back"}


def _ask(service: Service, mode: str) -> str:
    if service.pid_file is not None:
        return f"kill -{SIGNALS[mode]} \"$pid\""
    return service.reload


def _asked(service: Service, mode: str) -> str:
    """What was asked, for the step's output: the signal and pid, or the reload command (a literal)."""
    if service.pid_file is not None:
        return f"\"({SIGNALS[mode]} to pid $pid)\""
    return f"\"(\"{quote(service.reload)}\")\""


def restart(service: Service, mode: str, state: str, live: str, timeout: float, deploy_to: str | None = None,
            stop_timeout: float = 30.0) -> str:
    """Ask puma for a ``mode`` (hot or phased) restart, or start it; wait until it serves the new code.

    A puma that runs from outside ``deploy_to`` (its state file's ``running_from``: the code path moved,
    or the strategy changed) would restart into its old folder: it is drained and started instead, once,
    with a note.
    """
    if mode not in SIGNALS:
        raise ValueError(f"not a zero-downtime puma mode: {mode!r}")
    limit = max(1, math.ceil(timeout))
    body = "; ".join([_choose(service, mode, state, deploy_to or live, limit, stop_timeout),
                      _wait(service, mode, live, limit), _where(service, live)])
    return ("{ " + ALIVE + "; " + stats_function(state) + "; " + look_function() + "; pampa_restart() { "
            f"{body}; {_phased_note(service, mode)}"
            f"echo {service.label}\": {mode} restart done: $n workers on the new code\"; }}; pampa_restart; }}")


def _single(service: Service, mode: str) -> str:
    return (f"echo {service.label}\": puma runs in single mode (no workers): a {mode} restart needs cluster mode "
            f"(workers 2 in config/puma.rb), or set units.puma_restart: full\" >&2; return 1")


def _choose(service: Service, mode: str, state: str, deploy_to: str, limit: int, stop_timeout: float) -> str:
    """Puma moved (drain and start it), runs (note its workers, ask for the restart) or not (start it)."""
    name = service.label
    fix = ("add state_path and activate_control_app to config/puma.rb (docs/operations.md, "
           "Zero-downtime restarts), or set units.puma_restart: full")
    probe = (f"moved=; if {service.running()}; then r=$(sed -n 's/^running_from: *//p' {quote(state)} 2>/dev/null | "
             f"tr -d '\"'); root=$(readlink -f {quote(deploy_to)} 2>/dev/null); "
             "case \"$r\" in ''|\"$root\"|\"$root\"/*) ;; *) moved=$r;; esac; fi")
    moved = (f"echo \"pampa-note: \"{name}\": ran from $moved, outside this stage's code $root: restarted fully, as "
             f"a {mode} restart would have kept the old code\"; {stop_and_start(service, stop_timeout)} || return 1; "
             "before=' '; ph0=-1")
    running = (f"pampa_look || {{ echo {name}\": cannot tell when a {mode} restart is done: puma's control app "
               f"does not answer ($e); {fix}\" >&2; return 1; }}; [ \"$c\" = 1 ] || {{ {_single(service, mode)}; }}; "
               "before=' '; for x in $list; do before=\"$before${x%:*} \"; done; ph0=$ph; "
               f"{_ask(service, mode)} || return 1; echo {name}\": {mode} restart asked \"{_asked(service, mode)}\"; "
               f"waiting up to {limit}s for every worker to boot on the new code\"")
    stopped = f"echo {name}\": not running: starting it\"; before=' '; ph0=-1; {service.start} || return 1"
    return (f"{probe}; if [ -n \"$moved\" ]; then {moved}; elif {service.running()}; then {running}; "
            f"else {stopped}; fi")


def _observe(service: Service, mode: str) -> str:
    """One look at puma's workers: new or from before, booted or not, and new ones that died booting."""
    name = service.label
    return ("stale=0; fresh=' '; for x in $list; do p=${x%:*}; case \"$before\" in *\" $p \"*) "
            "stale=$((stale+1));; *) fresh=\"$fresh$p \";; esac; done; "
            "for p in $young; do case \"$fresh\" in *\" $p \"*) ;; *) died=$((died+1));; esac; done; "
            "young=' '; for x in $list; do case \"$x\" in *:0) case \"$before\" in *\" ${x%:*} \"*) ;; "
            "*) young=\"$young${x%:*} \";; esac;; esac; done; "
            "m=\"$b of $n workers booted, $stale of them from before the restart\"; "
            f"[ \"$m\" = \"$last\" ] || {{ echo {name}\": $m\"; last=$m; }}; "
            "if [ \"$n\" -gt 0 ] && [ \"$b\" = \"$n\" ] && [ \"$stale\" = 0 ] && [ \"$old\" = 0 ]; then break; fi; "
            f"[ \"$c\" = 1 ] || {{ {_single(service, mode)}; }}; "
            f"[ \"$died\" -lt {BOOT_DEATHS} ] || {{ echo {name}\": the {mode} restart failed: $died new workers "
            f"exited before they booted, so the new code does not boot (see puma's log); {_left[mode]}\" >&2; "
            "return 1; }")


def _wait(service: Service, mode: str, live: str, limit: int) -> str:
    """Look every half second until the restart is done, fails, or ``limit`` seconds pass."""
    name = service.label
    return (f"want=$(readlink -f {quote(live)} 2>/dev/null); end=$(($(date +%s) + {limit})); "
            f"last=; died=0; young=' '; while :; do if pampa_look; then {_observe(service, mode)}; "
            f"else m=\"puma's control app does not answer: $e\"; [ \"$m\" = \"$last\" ] || "
            f"{{ echo {name}\": $m\"; last=$m; }}; fi; "
            f"[ \"$(date +%s)\" -lt \"$end\" ] || {{ echo {name}\": the {mode} restart did not complete within "
            f"{limit}s: $last\" >&2; return 1; }}; sleep 0.5; done")


def _where(service: Service, live: str) -> str:
    """Every new worker runs inside the live code (a ``directory`` naming a release folder would not)."""
    return ("for p in $fresh; do d=$(readlink \"/proc/$p/cwd\" 2>/dev/null) || continue; "
            "case \"$d\" in \"$want\"|\"$want\"/*) ;; "
            f"*) echo {service.label}\": the new workers run in $d, not in the live code \"{quote(live)}\" ($want): "
            f"puma restarts into the folder it was started from; set directory to \"{quote(live)}\" in "
            "config/puma.rb\" >&2; return 1;; esac; done")


def _phased_note(service: Service, mode: str) -> str:
    """A phased restart that puma did as a hot one (phase did not go up) is worth a note, not a failure."""
    if mode != PHASED:
        return ""
    return (f"[ \"$ph0\" -lt 0 ] || [ \"$ph\" -gt \"$ph0\" ] || echo \"pampa-note: \"{service.label}\": puma "
            "restarted every worker at once instead of one at a time (preload_app, or a reload that sends "
            "USR2): requests waited while they booted\"; ")


def probe(service: Service, state: str, deploy_to: str, live: str, releases: bool) -> str:
    """``pampa check``'s read-only look at one puma (a subshell printing ``puma:UNIT...=`` lines): running or
    not; cluster with N workers, single mode, or no control app; running from outside the stage's code.

    Under the releases strategy also the live ``config/puma.rb``: without ``directory`` a restart re-enters
    the folder puma was started in (``$PWD``, a release folder unless started as ``cd current``), and without
    ``prune_bundler`` the workers of an app with a Gemfile keep the gems of the release puma started in.
    (Puma's own environment cannot be read from outside: setting its process title overwrites it.)
    """
    k, st = quote(f"puma:{service.unit}"), quote(state)
    look = (f"if pampa_look; then if [ \"$c\" = 1 ]; then echo {k}=cluster:$n; else echo {k}=single; fi; "
            f"else echo {k}=no-control:\"$e\"; fi; "
            f"r=$(sed -n 's/^running_from: *//p' {st} 2>/dev/null | tr -d '\"'); "
            f"root=$(readlink -f {quote(deploy_to)} 2>/dev/null); "
            f"case \"$r\" in ''|\"$root\"|\"$root\"/*) ;; *) echo {k}.moved=\"$r\";; esac")
    config = ""
    if releases:
        rb, gemfile = quote(posixpath.join(live, "config/puma.rb")), quote(posixpath.join(live, "Gemfile"))
        config = (f"; if [ ! -f {rb} ]; then echo {k}.config=missing; else "
                  f"grep -Eq '^[[:space:]]*directory[[:space:]]' {rb} || echo {k}.directory=missing; "
                  f"[ ! -e {gemfile} ] || grep -Eq '^[[:space:]]*prune_bundler' {rb} || "
                  f"echo {k}.prune_bundler=missing; fi")
    return (f"( {ALIVE}; {stats_function(state)}; {look_function()}; if {service.running()}; then {look}; "
            f"else echo {k}=not-running; fi{config} )")


def describe(service: Service, mode: str, state: str, timeout: float) -> str:
    """One line for ``plan``: how puma is asked, what starts it, and what the step waits for."""
    ask = (f"{SIGNALS[mode]} to {service.where()}" if service.pid_file is not None
           else f"{service.reload} (its ExecReload sends {SIGNALS[mode]})")
    return (f"{mode} restart {service.unit}: {ask}, or when not running {service.start}; then wait up to "
            f"{max(1, math.ceil(timeout))}s until puma's control app ({state}) lists every worker booted "
            "on the new code")
