"""``pampa access-point serve`` (run the reference access point) and ``pampa access-point token``
(issue node tokens). The server itself lives in ``server/``; this module only reads the command line."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from ..errors import UsageError
from ..inventory import load_stage
from ..server.app import make_server
from ..server.database import DatabaseError, redacted
from . import types
from .agent import default_token_file, node_of
from .request import client_for


def declare(cmd) -> None:
    p = cmd("access-point", "run the reference access point (JSON over HTTP, SQLite or PostgreSQL), or issue node tokens",
            "PAMPA_AP_KEY=s3cret pampa access-point serve --port 8750; pampa access-point token production --out tokens/")
    p.add_argument("action", choices=["serve", "token"])
    p.add_argument("stage", nargs="?", help="token: the stage whose nodes get tokens")
    p.add_argument("nodes", nargs="*", help="token: these nodes only (default: every host of the stage)")
    p.add_argument("--out", metavar="DIR", help="token: write STAGE-NODE.token files (mode 0600) here instead of printing")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=types.listen_port, default=8750, help="port to listen on (0: any free port)")
    p.add_argument("--db", "--database", dest="db", default=None, metavar="FILE|URL",
                   help="SQLite file, or postgresql://USER@HOST/DB to share state with other access point "
                        "processes (default $PAMPA_AP_DATABASE, else ./access-point.sqlite3)")
    p.add_argument("--api-key", default=None, help="API key (default: $PAMPA_AP_KEY)")
    p.add_argument("--stall-after", type=float, default=60.0, metavar="SECONDS",
                   help="a node silent this long is shown as stalled (default 60)")
    p.set_defaults(handler=lambda args: token(args) if args.action == "token" else serve(args))


def database_of(args) -> str:
    """--db/--database, else $PAMPA_AP_DATABASE (a systemd unit's Environment=), else the SQLite default."""
    return args.db or os.environ.get("PAMPA_AP_DATABASE") or "access-point.sqlite3"


def serve(args) -> int:
    api_key = args.api_key or os.environ.get("PAMPA_AP_KEY")
    if not api_key:
        raise UsageError("access-point serve: set an API key with --api-key or PAMPA_AP_KEY")
    db = database_of(args)
    try:
        server = make_server(args.bind, args.port, db, api_key, stall_after=args.stall_after)
    except DatabaseError as e:
        raise UsageError(f"access-point serve: {e}") from None
    except OSError as e:
        why = "the address is taken (another access point?); pick another --port" \
            if e.errno == errno.EADDRINUSE else e.strerror or str(e)
        raise UsageError(f"access-point serve: cannot listen on {args.bind}:{args.port}: {why}") from None
    print(f"pampa access point on http://{args.bind}:{server.server_address[1]} (db {redacted(db)})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def token(args) -> int:
    """Issue node tokens with the stage's API key: printed, or written 0600 to --out DIR."""
    if not args.stage:
        raise UsageError("access-point token: expected `pampa access-point token STAGE [NODE ...]`")
    stage = load_stage(args.stage, args.stages)
    client = client_for(stage)
    hosts = [node_of(stage, n) for n in args.nodes] if args.nodes else list(stage.hosts)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
    for host in hosts:
        issued = client.issue_token(stage.name, host.name, list(host.roles))
        if issued.get("replaced"):  # one token per node: issuing is revoking, never silently
            print(f"pampa: warning: {host.name}: its earlier token (e.g. one written with --out) no longer works; "
                  f"give the node this new one at {default_token_file(stage.name, host.name)}", file=sys.stderr,
                  flush=True)
        if out is None:
            print(f"{host.name} {issued['token']}", flush=True)
            continue
        path = out / f"{stage.name}-{host.name}.token"
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(issued["token"] + "\n")
        os.replace(tmp, path)
        print(f"{host.name}: token written to {path} (mode 0600); copy it to the node as "
              f"{default_token_file(stage.name, host.name)}", flush=True)
    return 0
