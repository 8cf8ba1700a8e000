"""``pampa access-point serve`` (run the reference access point) and ``pampa access-point token``
(issue node tokens). The server itself lives in ``server/``; this module reads the command line, the key
and the certificate, prepares the process (its open-file limit) and writes token files safely."""
from __future__ import annotations

import errno
import os
import resource
import secrets
import ssl
import stat
import sys
from pathlib import Path

from ..errors import UsageError
from ..inventory import load_stage
from ..server.app import make_server
from ..server.database import DatabaseError, redacted
from ..server.http import Limits
from ..server.store import Quotas
from . import types
from .agent import default_token_file, node_of
from .request import client_for

#: The shortest API key `serve` accepts: a key anyone can guess protects nothing.
MIN_KEY = 16


def declare(cmd) -> None:
    p = cmd("access-point", "run the reference access point (JSON over HTTP or HTTPS, SQLite or PostgreSQL), or "
            "issue node tokens",
            "PAMPA_AP_KEY=$(cat ap.key) pampa access-point serve --port 8750; "
            "pampa access-point token production --out tokens/")
    p.add_argument("action", choices=["serve", "token"])
    p.add_argument("stage", nargs="?", help="token: the stage whose nodes get tokens")
    p.add_argument("nodes", nargs="*", help="token: these nodes only (default: every host of the stage)")
    p.add_argument("--out", metavar="DIR", help="token: write STAGE-NODE.token files (mode 0600) here instead of printing")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=types.listen_port, default=8750, help="port to listen on (0: any free port)")
    p.add_argument("--db", "--database", dest="db", default=None, metavar="FILE|URL",
                   help="SQLite file, or postgresql://USER@HOST/DB to share state with other access point "
                        "processes (default $PAMPA_AP_DATABASE, else ./access-point.sqlite3)")
    p.add_argument("--api-key-file", metavar="FILE", help="read the API key from FILE (default: $PAMPA_AP_KEY)")
    p.add_argument("--api-key", default=None, help="the API key (visible to every user in `ps`: prefer "
                                                   "--api-key-file or $PAMPA_AP_KEY)")
    p.add_argument("--stall-after", type=float, default=60.0, metavar="SECONDS",
                   help="a node silent this long is shown as stalled (default 60)")
    p.add_argument("--keep", type=int, default=Quotas.keep, metavar="N",
                   help=f"keep the events of each stage's N newest requests (default {Quotas.keep}; 0: all)")
    p.add_argument("--run-events", type=int, default=Quotas.events_per_run, metavar="N",
                   help=f"progress events one node's run keeps (default {Quotas.events_per_run})")
    p.add_argument("--run-kib", type=int, default=Quotas.bytes_per_run // 1024, metavar="KIB",
                   help=f"KiB of progress events one node's run keeps (default {Quotas.bytes_per_run // 1024})")
    p.add_argument("--max-connections", type=int, default=Limits.max_connections, metavar="N",
                   help=f"open connections at once (default {Limits.max_connections}; lowered to fit the open-file "
                        "limit)")
    p.add_argument("--max-per-source", type=int, default=Limits.max_per_source, metavar="N",
                   help=f"open connections from one address (default {Limits.max_per_source}; behind a proxy, every "
                        "client has the proxy's address)")
    p.add_argument("--tls-cert", metavar="FILE", help="speak HTTPS with this certificate (PEM, chain first)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    p.set_defaults(handler=lambda args: token(args) if args.action == "token" else serve(args))


def database_of(args) -> str:
    """--db/--database, else $PAMPA_AP_DATABASE (a systemd unit's Environment=), else the SQLite default."""
    return args.db or os.environ.get("PAMPA_AP_DATABASE") or "access-point.sqlite3"


def api_key_of(args) -> str:
    """--api-key-file, else $PAMPA_AP_KEY, else --api-key (warned about); at least MIN_KEY characters."""
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"access-point serve: cannot read the API key file {args.api_key_file}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
    else:
        key = args.api_key or os.environ.get("PAMPA_AP_KEY") or ""
        if args.api_key:
            print("pampa access point: warning: --api-key shows the key to every user of this machine (`ps`); "
                  "use --api-key-file FILE or PAMPA_AP_KEY", file=sys.stderr, flush=True)
    if not key:
        raise UsageError("access-point serve: set an API key with --api-key-file FILE or PAMPA_AP_KEY")
    if len(key) < MIN_KEY:
        raise UsageError(f"access-point serve: the API key has {len(key)} characters; use at least {MIN_KEY} "
                         "(e.g. `openssl rand -hex 24 > ap.key`, then --api-key-file ap.key)")
    return key


def tls_context(args) -> ssl.SSLContext | None:
    if not args.tls_cert and not args.tls_key:
        return None
    if not (args.tls_cert and args.tls_key):
        raise UsageError("access-point serve: --tls-cert and --tls-key go together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"access-point serve: cannot use the certificate {args.tls_cert} with the key {args.tls_key}: "
                         f"{getattr(e, 'strerror', None) or e.args[-1]}") from None
    return context


def open_files() -> int:
    """Raise this process's open-file limit to its hard limit (each connection is a descriptor); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def serve(args) -> int:
    api_key = api_key_of(args)
    context = tls_context(args)
    if args.keep < 0 or args.run_events < 1 or args.run_kib < 1:
        raise UsageError("access-point serve: --keep is 0 or more, --run-events and --run-kib 1 or more")
    files = open_files()
    limits = Limits(max_connections=max(1, args.max_connections), max_per_source=max(1, args.max_per_source))
    quotas = Quotas(events_per_run=args.run_events, bytes_per_run=args.run_kib * 1024, keep=args.keep)
    db = database_of(args)
    try:
        server = make_server(args.bind, args.port, db, api_key, limits, stall_after=args.stall_after, quotas=quotas,
                             ssl_context=context)
    except DatabaseError as e:
        raise UsageError(f"access-point serve: {e}") from None
    except OSError as e:
        why = "the address is taken (another access point?); pick another --port" \
            if e.errno == errno.EADDRINUSE else e.strerror or str(e)
        raise UsageError(f"access-point serve: cannot listen on {args.bind}:{args.port}: {why}") from None
    scheme = "https" if context else "http"
    print(f"pampa access point on {scheme}://{args.bind}:{server.server_address[1]} (db {redacted(db)})", flush=True)
    unwritable = server.store.probe_write()
    if unwritable:
        print(f"pampa access point: warning: the database cannot be written ({unwritable}); every request that "
              "writes will answer 503 until it can", file=sys.stderr, flush=True)
    if server.max_connections < limits.max_connections:
        print(f"pampa access point: at most {server.max_connections} connections (the open-file limit is {files}; "
              f"raise it, e.g. LimitNOFILE= in the unit, for {limits.max_connections})", file=sys.stderr, flush=True)
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
    folder = private_folder(Path(args.out)) if args.out else None
    try:
        for host in hosts:
            issued = client.issue_token(stage.name, host.name, list(host.roles))
            if issued.get("replaced"):  # one token per node: issuing is revoking, never silently
                print(f"pampa: warning: {host.name}: its earlier token (e.g. one written with --out) no longer works; "
                      f"give the node this new one at {default_token_file(stage.name, host.name)}", file=sys.stderr,
                      flush=True)
            if folder is None:
                print(f"{host.name} {issued['token']}", flush=True)
                continue
            name = f"{stage.name}-{host.name}.token"
            write_private(folder, name, issued["token"] + "\n")
            print(f"{host.name}: token written to {Path(args.out) / name} (mode 0600); copy it to the node as "
                  f"{default_token_file(stage.name, host.name)}", flush=True)
    finally:
        if folder is not None:
            os.close(folder)
    return 0


def private_folder(path: Path) -> int:
    """A descriptor of ``path`` (made 0700 if missing), refused unless only we (or root) can change what is in it.

    A folder others can write without the sticky bit lets them swap a token file for a link between our
    write and the rename; a folder that is a symbolic link, or someone else's, may not be where we think.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        link = e.errno in (errno.ELOOP, errno.ENOTDIR) and path.is_symlink()
        why = "it is a symbolic link; give the folder itself" if link else e.strerror
        raise UsageError(f"access-point token: cannot use --out {path}: {why}") from None
    info = os.fstat(fd)
    problem = None
    if info.st_uid not in (os.geteuid(), 0):
        problem = f"it belongs to uid {info.st_uid}, not to you"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        problem = f"others can write in it (mode {stat.S_IMODE(info.st_mode):04o}); `chmod 700 {path}` or pick another"
    if problem:
        os.close(fd)
        raise UsageError(f"access-point token: refusing --out {path}: {problem}")
    return fd


def write_private(folder: int, name: str, content: str) -> None:
    """``content`` to ``name`` in ``folder``, mode 0600, atomically: a new temp file (never an existing one, never
    through a link), then renamed over ``name`` (a link planted there is replaced, not followed)."""
    temp = f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=folder)
        except OSError:
            pass
        raise
