"""Moved to ``commands/revlog.py`` (every remote command has one home); kept for old imports."""
from ..commands.revlog import AFTER, SUFFIX, base, append_command, log_path, parse, read_command, revision_command  # noqa: F401
