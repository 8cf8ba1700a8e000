"""``pampa agent`` (run the pull-mode agent), ``pampa agent install`` (write its systemd unit), and
``pampa access-point token`` (issue node tokens). See docs/pull-mode.md."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from .. import provenance
from ..accesspoint.client import AccessPointClient
from ..agent.loop import Agent
from ..agent.runstop import AgentStop
from ..agent.token import TOKEN_ENV, TokenFile, read_token
from ..agent.unit import AgentUnit
from ..engine import stop as stopping
from ..errors import ConfigError, Interrupted, UsageError
from ..inventory import load_stage
from .request import client_for


def declare(cmd) -> None:
    p = cmd("agent", "pull mode: run this node's agent (`pampa agent STAGE`), or write its systemd unit "
            "(`pampa agent install STAGE`)", "pampa agent install production --node kepler-1")
    p.add_argument("words", nargs="+", metavar="[install] STAGE")
    p.add_argument("--node", help="this node's host name in the stage (default: this machine's host name)")
    p.add_argument("--token-file", metavar="FILE",
                   help="node token, mode 0600 (default ~/.pampa/agent/STAGE-NODE.token, or $PAMPA_AGENT_TOKEN)")
    p.add_argument("--state-dir", metavar="DIR", help="lock and journal folder (default ~/.pampa/agent)")
    p.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="after SIGTERM/Ctrl-C, time running commands get to finish (default 30)")
    p.add_argument("--unit-dir", default="/etc/systemd/system", help="install: where the unit goes")
    p.add_argument("--print", action="store_true", help="install: print the unit instead of writing it")
    p.set_defaults(handler=agent)

#: Where the agent keeps its lock, journal and (by default) its token, under the node user's home.
STATE_DIR = "~/.pampa/agent"
#: What PAMPA_AP_KEY holds while the stage is read only to find the node (before the token is read).
PLACEHOLDER = "pampa-agent-token-not-read-yet"


def node_of(stage, node: str | None):
    name = node or socket.gethostname()
    host = next((h for h in stage.hosts if h.name == name), None)
    if host is None:
        hint = "" if node else " (the default is this machine's host name; pass --node NAME)"
        raise ConfigError(f"{stage.file}: stage {stage.name} has no host '{name}'{hint}; hosts: "
                          f"{', '.join(h.name for h in stage.hosts)}")
    return host


def default_token_file(stage: str, node: str) -> str:
    return f"{STATE_DIR}/{stage}-{node}.token"


def token_of(path: str | None, stage: str, node: str) -> TokenFile:
    """The node token: $PAMPA_AGENT_TOKEN (fixed), or a file only its owner can read (re-read when it changes)."""
    if os.environ.get(TOKEN_ENV) and not path:
        return TokenFile(None, stage, node, os.environ[TOKEN_ENV].strip())
    return TokenFile(Path(os.path.expanduser(path or default_token_file(stage, node))), stage, node)


def _agent_environ(token: str) -> dict:
    """The stage is loaded with the agent's token as PAMPA_AP_KEY: on a node, the token is the key."""
    return {**os.environ, "PAMPA_AP_KEY": os.environ.get("PAMPA_AP_KEY") or token}


def agent(args) -> int:
    words = list(args.words)
    if words[0] == "install":
        return install(args, words[1:])
    if len(words) != 1:
        raise UsageError("agent: expected `pampa agent STAGE` or `pampa agent install STAGE`")
    stage_name = words[0]
    first = load_stage(stage_name, args.stages, environ=_agent_environ(os.environ.get(TOKEN_ENV) or PLACEHOLDER))
    host = node_of(first, args.node)
    token = token_of(args.token_file, stage_name, host.name)
    ap = AccessPointClient.from_stage(load_stage(stage_name, args.stages, environ=_agent_environ(token.token)))
    if ap is None:
        client_for(first)  # raises the one clear line about access_point.url
    client = AccessPointClient(ap.url, token.token, ap.timeout, ap.redactor)

    def load(branch: str | None):
        """The stage for one request, with the current token as PAMPA_AP_KEY (masked in every line)."""
        return load_stage(stage_name, args.stages, overrides={"branch": branch} if branch else None,
                          environ=_agent_environ(token.token))

    stop = AgentStop()
    state_dir = Path(os.path.expanduser(args.state_dir or STATE_DIR))
    runner = Agent(host.name, stage_name, load, client, stop, state_dir, token=token, grace=args.grace)
    restore = stopping.install(stop, args.grace, lambda message: runner.say(message))
    try:
        runner.run()
    finally:
        restore()
    if stop.signum is not None:
        import signal as signals
        raise Interrupted(f"pampa agent: node {host.name} stopped by {signals.Signals(stop.signum).name}",
                          stop.signum)
    return 0


def install(args, words: list[str]) -> int:
    if len(words) != 1:
        raise UsageError("agent install: expected `pampa agent install STAGE --node NAME`")
    stage_name = words[0]
    stage = load_stage(stage_name, args.stages, environ=_agent_environ(PLACEHOLDER))
    host = node_of(stage, args.node)
    client_for(stage)
    token_file = os.path.abspath(os.path.expanduser(args.token_file or default_token_file(stage_name, host.name)))
    read_token(Path(token_file), stage_name, host.name)  # refuse to install an agent that cannot authenticate
    stages = os.path.abspath(args.stages)
    argv = [sys.executable, "-m", "pampa_deployer", "--stages", stages, "agent", stage_name, "--node", host.name,
            "--token-file", token_file, "--grace", f"{args.grace:g}"]
    if args.state_dir:
        argv += ["--state-dir", os.path.abspath(os.path.expanduser(args.state_dir))]
    unit = AgentUnit(stage=stage_name, node=host.name, argv=tuple(argv), user=provenance.user(fallback="root"),
                     home=os.path.expanduser("~"), workdir=os.path.dirname(stages),
                     env_file=f"/etc/pampa/agent-{stage_name}.env", grace=args.grace)
    text = unit.render()
    if args.print:
        sys.stdout.write(text)
        return 0
    target = Path(args.unit_dir) / unit.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    print(f"wrote {target}\nstart it with: systemctl daemon-reload && systemctl enable --now {unit.name}\n"
          f"its log: journalctl -u {unit.name} -f", flush=True)
    return 0
