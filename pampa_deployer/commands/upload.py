"""A small file written through the host's open shell session: no SFTP channel, subsystem or round trips.

With SFTP, one secret file costs a new channel, the sftp subsystem (on most servers an
``sftp-server`` process started by the login shell) and six round trips. Through the shell
session it is one command. Every property of the SFTP path is kept:

- atomic: the bytes go to a temporary name in the same folder, then ``mv -f`` renames it
  over the target; a failed write removes the temporary file;
- private from the first byte: ``umask`` gives the temporary file its mode when it is
  created (``chmod`` only for modes a umask cannot give, e.g. executable bits);
- the content is in no process's arguments on the host: ``printf`` is a shell built-in,
  and the bytes travel as ``%b`` octal escapes inside the command (binary-safe); it is in no
  log either: the command is never displayed (the step shows ``Upload.display``), it prints
  nothing, and its redactor masks the content should any of it be echoed;
- paths mean what they mean over SFTP: relative to the login directory (``cd`` first, in
  case a stage prefix moved the session), ``~/`` too; a directory in the way is an error.
Larger files still go over SFTP (see ``engine/backends/ssh.py``): a shell reads a script from a pipe one
byte at a time (a read(2) per byte, so that commands can share its stdin), which makes the session
dearer than SFTP's fixed cost once the escaped content passes a few KiB (``MAX_BYTES``).
"""
from __future__ import annotations

import posixpath

from ..redact import Redactor
from ..shell import quote
from .command import Command

MAX_BYTES = 8 * 1024  # of the escaped content: about 0.6 µs of shell CPU per byte against SFTP's ~5 ms
_RAW = frozenset(range(0x20, 0x7F)) - {ord("'"), ord("\\")} | {ord("\n")}


def escape(content: bytes) -> str:
    """``content`` for ``printf '%b'`` inside single quotes: printable ASCII as is, every other byte ``\\0ooo``."""
    return "".join(chr(b) if b in _RAW else f"\\0{b:03o}" for b in content)


def fits(content: bytes) -> bool:
    """Whether ``content`` is small enough to go through the session (escaped, it is up to 5x longer)."""
    return len(content) <= MAX_BYTES and len(escape(content)) <= MAX_BYTES


def upload_command(remote: str, content: bytes, mode: int, token: str) -> Command:
    """Write ``content`` to ``remote`` with ``mode``: temp file ``.NAME.pampa-TOKEN`` beside it, then rename."""
    path = remote[2:] if remote.startswith("~/") else remote
    folder, name = posixpath.split(path)
    target, tmp = quote(path), quote(posixpath.join(folder, f".{name}.pampa-{token}"))
    escaped = escape(content)
    chmod = f"chmod {mode:04o} \"$t\" && " if mode & ~0o666 else ""
    script = (f"set +x; cd && umask {~mode & 0o777:04o} && t={tmp} && "
              f"if [ -d {target} ]; then echo {quote(path + ': is a directory')} >&2; exit 1; fi && "
              f"if printf '%b' '{escaped}' > \"$t\" && {chmod}mv -f \"$t\" {target}; then :; "
              f"else rc=$?; rm -f \"$t\"; exit $rc; fi")
    secrets = Redactor().with_values(escaped, content.decode("utf-8", "replace"))
    # Not killable: the process-group wrapper would hand the script (and the content) to a new
    # shell as an argument, visible in the host's process list. It is short and bounded anyway.
    return Command(script=script, timeout=60, redactor=secrets, killable=False)
