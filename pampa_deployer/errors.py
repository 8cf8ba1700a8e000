"""Typed errors and the one table that maps them to exit codes.

Every failure the operator can cause or meet is a ``PampaError`` subclass.
``cli.main`` is the only place that turns one into an exit code (see
``exit_code_for``); nothing else calls ``sys.exit`` with a number.
"""
from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Documented exit codes of the ``pampa`` command (docs/ci.md)."""

    OK = 0
    DEPLOY_FAILED = 1      # at least one host failed or was skipped
    CONFIG_ERROR = 2       # bad inventory, bad usage, unknown stage
    LOCK_HELD = 3          # another deploy holds the stage lock
    REFUSED = 4            # a safety check refused to start (rollback target missing, check failed)
    INTERNAL = 70          # a bug in pampa itself (EX_SOFTWARE)
    INTERRUPTED = 130      # Ctrl-C (128 + SIGINT)
    PIPE_CLOSED = 141      # the reader of our output went away, e.g. `pampa plan prod | head` (128 + SIGPIPE)
    TERMINATED = 143       # SIGTERM, e.g. a cancelled CI job (128 + SIGTERM)


class PampaError(Exception):
    """Base of every error pampa reports as one clear line."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(PampaError):
    """The inventory or the command line is wrong; nothing was contacted."""

    exit_code = ExitCode.CONFIG_ERROR


class ConfigErrors(ConfigError):
    """Several configuration problems, each reported on its own line."""

    def __init__(self, messages: list[str]):
        super().__init__("\n".join(messages))
        self.messages = list(messages)


class UsageError(ConfigError):
    """A command-line mistake."""


class DeployFailed(PampaError):
    """The run finished but not every host succeeded."""

    exit_code = ExitCode.DEPLOY_FAILED


class NotInAgreement(PampaError):
    """``pampa status``: a host is unreachable, incomplete or runs another revision."""

    exit_code = ExitCode.DEPLOY_FAILED


class NotObserved(PampaError):
    """A read-only command (``pending``, ``history``, ``releases``) could not see all it was asked about:
    a host unreachable, the repository or the access point; what it did see was printed."""

    exit_code = ExitCode.DEPLOY_FAILED


class LockHeld(PampaError):
    """Another deploy holds the stage lock."""

    exit_code = ExitCode.LOCK_HELD


class LockLost(PampaError):
    """The running deploy found its lock removed or taken over; it started no new host after that."""

    exit_code = ExitCode.LOCK_HELD


class Refused(PampaError):
    """A safety check refused to start: nothing was changed."""

    exit_code = ExitCode.REFUSED


class Interrupted(PampaError):
    """The operator (SIGINT) or the CI system (SIGTERM) stopped the run."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> ExitCode:  # type: ignore[override]
        return ExitCode.TERMINATED if self.signum == 15 else ExitCode.INTERRUPTED


class ConnectError(PampaError):
    """A host could not be reached; ``reason`` is refused, timed out, auth failed, host key..."""

    exit_code = ExitCode.DEPLOY_FAILED

    def __init__(self, message: str, reason: str, retryable: bool = False):
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


class AccessPointError(PampaError):
    """The access point answered with an error or could not be reached.

    ``status`` is the HTTP status it answered (None if it did not answer); ``unreachable``
    says that retrying later may help (no answer, or a 5xx).
    """

    exit_code = ExitCode.DEPLOY_FAILED

    def __init__(self, message: str, status: int | None = None, unreachable: bool = False):
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable


class PampaWarning(UserWarning):
    """Something worth the operator's eye that stops nothing (a secret file others can read). Raised with
    ``warnings.warn``; the ``pampa`` command prints each one once as ``pampa: warning: ...`` on stderr."""


def exit_code_for(error: BaseException) -> int:
    """The single mapping from an exception to the process exit code."""
    if isinstance(error, PampaError):
        return int(error.exit_code)
    if isinstance(error, KeyboardInterrupt):
        return int(ExitCode.INTERRUPTED)
    if isinstance(error, BrokenPipeError):
        return int(ExitCode.PIPE_CLOSED)
    return int(ExitCode.INTERNAL)


def quiet_libraries(debug: bool = False) -> None:
    """Keep paramiko's transport-thread tracebacks off the terminal (``--debug`` shows them).

    Paramiko logs a full traceback for every failed handshake (a port that is not an SSH
    server gives dozens); pampa classifies the same failure into one line per host.
    """
    import logging
    logger = logging.getLogger("paramiko")
    if debug:
        logging.basicConfig(level=logging.WARNING)
        return
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False
