"""Every configuration key: its type, default, meaning and an example.

This table is the single source for the validator, for built-in defaults and for
``docs/configuration.md`` (a test checks that the document lists exactly these keys).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Key:
    """One configuration key.

    ``type`` is one of: str, int, number, bool, list[str], map[str], map[any],
    section, map[section], list[section], str|list[str].
    """

    type: str
    default: Any = None
    doc: str = ""
    example: str = ""
    children: dict[str, "Key"] = field(default_factory=dict)
    secret: bool = False
    rule: str | None = None
    """A constraint beyond the type, named in ``validate.RULES`` (e.g. ``positive``, ``port``)."""
    choices: tuple[str, ...] = ()
    """The only values the key takes (an enumeration), checked by the generic validator."""


STEP = {
    "run": Key("str|list[str]", None, "Command(s) replacing the step's default; `{var}` is shell-quoted, `{var!u}` is not.",
               "sudo systemctl restart {app}_app"),
    "enabled": Key("bool", True, "Set false to turn the step off.", "false"),
    "roles": Key("list[str]", None, "Custom steps only: the roles that run it.", "[kepler]"),
    "after": Key("str", None, "Custom steps only: the step it runs after.", "migrate"),
    "always": Key("bool", False, "bundle and migrate: do the work even when nothing changed (bundle skips when "
                  "`bundle check` finds every gem installed, migrate when no migration changed and the "
                  "database's schema version is current; `--no-skip` does this for one run).", "true"),
    "timeout": Key("number", None, "Seconds before the step's commands are stopped on the host (TERM, then KILL) "
                   "and the step fails; default: the stage's `step_timeout` (migrate: 3600, bundle: 1800 "
                   "at least).", "600", rule="positive"),
}

SECRET_FILE = {
    "local": Key("str", None, "Local file uploaded as-is (relative to the stages/ folder).", "secrets/config.rb"),
    "template": Key("str", None, "Local template; `${VAR}` in it is filled from the environment.", "secrets/config.rb.tmpl"),
    "remote": Key("str", None, "Destination, relative to the code path unless absolute or ~/.", "config.rb",
                  rule="remote_file"),
    "mode": Key("str", "0600", "File mode on the host, an octal string in quotes (unquoted, YAML reads "
                "0600 as the number 384).", "'0600'", rule="mode"),
}

CHECK = {
    "roles": Key("list[str]", None, "Roles whose hosts run the check (default: every host).", "[kepler, euler]"),
    "url": Key("str", None, "HTTP check: URL fetched with curl **on the host**; template variables such as "
               "`{address}`, `{name}` and host `vars` are filled in.", "http://{address}:9292/up", rule="url"),
    "status": Key("int", 200, "HTTP check: the status the response must have.", "200", rule="http_status"),
    "contains": Key("str", None, "HTTP check: text the body must contain; `{revision}` is the revision the "
                    "host was just reset to (read on the host when the check runs).", "revision={revision}"),
    "run": Key("str", None, "Command check: a command that must exit 0 (run on the host, in the code path).",
               "systemctl is-active --quiet {app}_worker"),
    "retries": Key("int", 10, "Attempts after the first one before the check fails.", "10", rule="non_negative"),
    "interval": Key("number", 1.0, "Seconds between attempts.", "2", rule="positive"),
    "timeout": Key("number", 5.0, "Seconds one attempt may take.", "5", rule="positive"),
    "delay": Key("number", 0.0, "Seconds to wait before the first attempt (e.g. for a process to crash "
                 "if it is going to).", "2", rule="non_negative"),
    "enabled": Key("bool", True, "Set false to turn the check off (e.g. in one stage).", "false"),
}

HOST = {
    "address": Key("str", None, "Address or ssh_config alias to connect to; defaults to the host name. "
                   "In a range, `{n}` is the number.", "10.0.0.{n}"),
    "roles": Key("list[str]", None, "One or more of kepler, euler, newton, copernico, or a custom role.", "[kepler]"),
    "port": Key("int", None, "SSH port (default: stage `port`).", "22", rule="port"),
    "user": Key("str", None, "SSH user (default: stage `user`).", "deploy"),
    "key": Key("str", None, "Private key file (default: stage `key`).", "~/.ssh/id_ed25519"),
    "path": Key("str", None, "Code path on this host (default: stage `path`).", "~/code2/{app}", rule="code_path"),
    "branch": Key("str", None, "Branch for this host (default: stage `branch`).", "main"),
    "prefix": Key("str", None, "Shell line run before each command on this host.", "source /etc/profile.d/rvm.sh"),
    "vars": Key("map[any]", {}, "Variables for command templates on this host.", "{port: 3000}"),
    "env": Key("map[str]", {}, "Environment variables exported before each command on this host.",
               "{RACK_ENV: production}", rule="shell_names"),
}

ROLE = {
    "gated": Key("bool", None, "Whether the role waits for the kepler gate (default: euler and copernico do).", "true"),
    "sequence": Key("list[str]", None, "Custom roles: the ordered steps the role runs.", "[bundle, restart_puma]"),
}

#: Zero-downtime restarts and drains (issue 21): how each service is restarted and stopped.
PUMA_MODES = ("full", "hot", "phased")

RESTARTS = {
    "puma_restart": Key("str", "full", "How restart_puma restarts puma: `phased` (cluster mode replaces its "
                        "workers one at a time, SIGUSR1), `hot` (puma re-executes itself and keeps its listening "
                        "socket, SIGUSR2) or `full` (stop, then start). With `hot` and `phased` the step waits "
                        "until puma's control app lists every worker booted on the new code "
                        "(docs/operations.md, Zero-downtime restarts).", "phased", choices=PUMA_MODES),
    "pid_file": Key("str", None, "Pid-file services: where each unit's main process writes its pid (`{unit}` is "
                    "the unit); pampa signals that pid itself. Unset: the units are systemd units.",
                    "~/run/{unit}.pid"),
    "puma_state": Key("str", "{path}/tmp/pids/puma.state", "Puma's state file (`state_path` in config/puma.rb): "
                      "it names the control app that says when a hot or phased restart is done.",
                      "{deploy_to}/shared/tmp/pids/puma.state"),
    "reload": Key("str", "sudo systemctl reload {unit}", "systemd units: asks puma for a hot or phased restart "
                  "(the unit's ExecReload sends SIGUSR2 or SIGUSR1).", "sudo systemctl reload {unit}"),
    "stop": Key("str", None, "systemd units: stops one unit before `restart` starts it again, so the step can say "
                "how long the stop took and whether systemd had to kill (TERM, the unit's TimeoutStopSec, then "
                "KILL). Unset (and no `pid_file`): `restart` alone, as its manager does it.",
                "sudo systemctl stop {unit}"),
    "stop_timeout": Key("number", 30.0, "Pid-file services: seconds a service may take to stop after TERM "
                        "(to finish its running job) before it is killed (KILL to its process group). The "
                        "restart steps' timeout is at least this plus 60 s.", "60", rule="positive"),
    "restart_timeout": Key("number", 120.0, "Seconds a hot or phased restart may take before the step fails "
                           "(sooner when new workers die while booting). restart_puma's timeout is at least "
                           "this plus `stop_timeout` plus 60 s, unless `steps.restart_puma.timeout` is set.",
                           "300", rule="positive"),
}

TOP: dict[str, Key] = {
    "app": Key("str", None, "Application name; used in the default code path and unit names.", "mysaas"),
    "repo": Key("str", None, "Git URL every host fetches from.", "git@github.com:acme/mysaas.git"),
    "branch": Key("str", "main", "Branch deployed (`--branch` overrides).", "main"),
    "path": Key("str", "~/code/{app}", "Code path on the servers (Pampa's convention); with `strategy: releases`, "
                "the folder that holds `releases/`, `shared/`, `repo.git` and `current`.", "~/code1/{app}",
                rule="code_path"),
    "strategy": Key("str", "in_place", "`in_place`: one checkout, `git reset --hard` (how Pampa servers run). "
                    "`releases`: each deploy builds `releases/<time>-<rev>/` and switches the `current` symlink "
                    "atomically after migrate; rollback is one switch.", "releases",
                    choices=("in_place", "releases")),
    "keep_releases": Key("int", 5, "Releases strategy: releases kept on each host (never pruned: current and "
                         "previous).", "5", rule="releases_kept"),
    "shared_dirs": Key("list[str]", ["log", "tmp/pids", "public/uploads"], "Releases strategy: folders kept in "
                       "`shared/` and linked into every release.", "[log, tmp/pids, public/uploads]", rule="inside"),
    "shared_files": Key("list[str]", [], "Releases strategy: files kept in `shared/` and linked into every release "
                        "(relative secret files are added).", "[db/production.sqlite3]", rule="inside"),
    "user": Key("str", None, "SSH user (default: ssh_config, then the local user).", "root"),
    "port": Key("int", 22, "SSH port.", "22", rule="port"),
    "key": Key("str", None, "Private key file.", "~/.ssh/id_ed25519"),
    "prefix": Key("str", None, "Shell line run before every remote command, e.g. to load rvm.",
                  "source /etc/profile.d/rvm.sh"),
    "env": Key("map[str]", {}, "Environment variables exported before every remote command.",
               "{DATABASE_URL: '${DATABASE_URL}'}", rule="shell_names"),
    "vars": Key("map[any]", {}, "Free variables for command templates.", "{puma_port: 3000}"),
    "secrets": Key("list[section]", [], "Secret files uploaded with mode 0600, atomically.",
                   "[{local: secrets/config.rb, remote: config.rb}]", SECRET_FILE),
    "units": Key("section", None, "Service names the restart steps act on.", "", {
        "puma": Key("list[str]", ["{app}_app"], "Units restarted by restart_puma.", "[mysaas_app]"),
        "processes": Key("list[str]", ["{app}_dispatcher", "{app}_jobs", "{app}_planner"],
                         "Units restarted by restart_processes.", "[mysaas_dispatcher]"),
        "workers": Key("list[str]", ["{app}_worker"], "Units restarted by restart_workers.", "[mysaas_worker]"),
        "restart": Key("str", "sudo systemctl restart {unit}", "Command template that (re)starts one unit: a "
                       "`full` restart after the drain, and the start of a service that is not running.",
                       "sudo systemctl restart {unit}"),
        **RESTARTS,
    }),
    "bundler": Key("section", None, "Bundler settings.", "", {
        "update": Key("bool", False, "Run `bundle update` instead of `bundle install`.", "true"),
        "before_migrate": Key("bool", True, "Install gems before migrating (a migration may need a gem the "
                              "release adds); false keeps the seed's literal order, migrate then bundle.",
                              "false"),
    }),
    "access_point": Key("section", None, "The access point that registers deploys and node versions.", "", {
        "url": Key("str", None, "Base URL of the access point.", "https://ap.example.com", rule="url"),
        "api_key": Key("str", None, "API key, usually `${PAMPA_AP_KEY}`; always masked.", "${PAMPA_AP_KEY}", secret=True),
        "timeout": Key("number", 5.0, "Seconds per HTTP request.", "5", rule="positive"),
        "optional": Key("bool", False, "Emergency switch: when the access point cannot be reached, deploy and "
                        "rollback go on with a loud warning and list what was not reported "
                        "(`--access-point-optional`).", "true"),
        "report_retry": Key("number", 30.0, "Seconds a version report is retried (with back-off) while the access "
                            "point cannot be reached or answers 5xx; after that it is a warning and a note.", "30",
                            rule="non_negative"),
        "report_required": Key("bool", False, "A version report still undelivered after `report_retry` fails the "
                               "host's `report_version` step (by default the host is deployed: a warning and a "
                               "note in the summary and report).", "true"),
    }),
    "ssh": Key("section", None, "SSH behaviour.", "", {
        "known_hosts": Key("str", "~/.ssh/known_hosts", "known_hosts file used to verify host keys.", "stages/known_hosts"),
        "accept_new_host_keys": Key("bool", False, "Trust and save unknown host keys (never changed ones).", "true"),
        "config": Key("str", "~/.ssh/config", "ssh_config file honoured (ProxyJump, User, Port...).", "~/.ssh/config"),
        "connect_timeout": Key("number", 10.0, "Seconds to wait for a TCP connect and handshake.", "10",
                               rule="positive"),
        "connect_retries": Key("int", 2, "Retries with back-off for refused or timed-out connects.", "2",
                               rule="non_negative"),
        "max_startups": Key("int", 16, "SSH handshakes in flight at once (throttles connection storms).", "8",
                            rule="positive"),
        "server_alive_interval": Key("number", 5.0, "Seconds between keepalives sent to each host (like "
                                     "OpenSSH's ServerAliveInterval).", "5", rule="positive"),
        "server_alive_count_max": Key("int", 3, "Keepalives a host may leave unanswered: after interval x count "
                                      "seconds of silence it fails as `unresponsive`, and the others go on.", "3",
                                      rule="positive"),
        "stop_grace": Key("number", 5.0, "Seconds between TERM and KILL when a timed-out or interrupted command "
                          "is stopped on the host.", "5", rule="positive"),
        "shell_session": Key("bool", True, "Run a host's commands one after another in one shell on one channel "
                             "(the prefix runs once); false: a new channel and shell per command.", "false"),
    }),
    "step_timeout": Key("number", 600.0, "Default timeout in seconds of every step's commands (per step: "
                        "`steps.NAME.timeout`); migrate and bundle get at least 3600 and 1800.", "900",
                        rule="positive"),
    "check": Key("section", None, "What `pampa check` requires of each host.", "", {
        "min_free_mb": Key("int", 1024, "Free disk space (MB) required on the code path's filesystem.", "2048",
                           rule="non_negative"),
    }),
    "notify": Key("section", None, "Webhooks told when a deploy or rollback starts and ends.", "", {
        "webhooks": Key("list[str]", [], "URLs that receive a JSON POST (with a Slack-compatible `text`) at "
                        "start and end; a failed notification is only a warning.",
                        "['${SLACK_WEBHOOK_URL}']", secret=True, rule="url"),
        "timeout": Key("number", 5.0, "Seconds per webhook request.", "5", rule="positive"),
    }),
    "hooks": Key("section", None, "Local hooks: executables in `stages/hooks/` (pre-deploy, post-deploy, "
                 "pre-rollback, post-rollback, on-failure).", "", {
        "timeout": Key("number", 300.0, "Seconds a hook may run before it is stopped (a pre-* hook then "
                       "stops the run).", "600", rule="positive"),
    }),
    "logs": Key("section", None, "What `pampa logs` shows (default: the journald units the host's roles restart).", "", {
        "files": Key("list[str]", None, "Log files to tail instead of journald, relative to the code path unless "
                     "absolute or ~/; `{unit}` is each unit the host's roles restart.", "['log/{unit}.log']"),
    }),
    "parallel": Key("int", 32, "Hosts deployed at once (`--parallel`).", "32", rule="positive"),
    "lock": Key("section", None, "Deploy lock settings.", "", {
        "lease": Key("number", 90.0, "Seconds a lock stays valid unless the running deploy renews it.", "90",
                     rule="seconds"),
        "path": Key("str", "~/.pampa/locks", "Folder on the lock host that holds stage locks.", "~/.pampa/locks"),
    }),
    "checks": Key("map[section]", {}, "Health checks by name, run after the restart steps; a host whose "
                  "check never passes fails (on kepler, the gate stays closed).",
                  "{web: {url: 'http://{address}:9292/', contains: 'revision={revision}'}}", CHECK),
    "runs": Key("section", None, "The local run logs in `.pampa/runs/`.", "", {
        "keep": Key("int", 50, "Run folders kept per stage; older ones are removed when a run starts.", "20",
                    rule="positive"),
    }),
    "steps": Key("map[section]", {}, "Per-step overrides and custom steps, by step name.",
                 "{restart_puma: {run: 'sudo systemctl restart mysaas_app'}}", STEP),
    "tasks": Key("str|list[str]", None, "Python files (relative to the folder that holds stages/) whose Invoke "
                 "tasks are steps, by function name: in `sequences`, as custom `steps` or with `pampa run` "
                 "(docs/python-steps.md).", "deploy/tasks.py"),
    "sequences": Key("map[list[str]]", {}, "Replace a role's ordered step list.",
                     "{euler: [git_fetch, git_reset, bundle, restart_puma, report_version]}"),
    "roles": Key("map[section]", {}, "Role settings and custom roles.", "{reports: {gated: true, sequence: [bundle]}}", ROLE),
    "hosts": Key("map[section]", {}, "Servers by name; `name-[01:20]` expands to 20 hosts.",
                 "{kepler-1: {address: 10.0.0.1, roles: [kepler]}}", HOST, rule="host_names"),
}

SECRET_KEY_WORDS = ("password", "secret", "token", "api_key", "apikey", "private", "webhook")


def looks_secret(key: str) -> bool:
    """Key names whose values are masked even without the ``!secret`` tag."""
    lowered = key.lower()
    return any(word in lowered for word in SECRET_KEY_WORDS)


def defaults() -> dict[str, Any]:
    """The built-in defaults layer, derived from the schema."""
    out: dict[str, Any] = {}
    for name, key in TOP.items():
        if key.type == "section":
            out[name] = {k: v.default for k, v in key.children.items() if v.default is not None}
        elif key.default is not None:
            out[name] = key.default
    return out


def walk(keys: dict[str, Key] = TOP, prefix: str = ""):
    """Yield (dotted path, Key) for every key, for docs and their test."""
    for name, key in keys.items():
        path = f"{prefix}{name}"
        yield path, key
        if key.children:
            sub = {"section": ".", "map[section]": ".<name>.", "list[section]": "[]."}[key.type]
            yield from walk(key.children, path + sub)
