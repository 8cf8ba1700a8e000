"""What a deploy would bring to each host, read-only: ``pampa pending`` and ``pampa deploy --preview``.

Each host is asked one thing over its one connection: the revision its live code runs. While the
hosts answer, the operator's mirror of the repository is fetched (``Mirror``); then hosts that run
the same revision towards the same branch are one group, and each group costs one ``compare`` in the
mirror. So the time over ``pampa status`` is the git work: one fetch and one compare per group.
Nothing is written on any host.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..commands import pending as cmd
from ..commands import revlog
from ..commands.skip import MIGRATIONS
from ..errors import ConnectError, NotObserved
from ..plan import Plan
from ..steps.releases import live_path
from .backends.base import tail
from .backends.local import LocalBackend
from .backends.pool import BackendPool, each_host

#: Lines (and characters) of a local git command's output kept: far above what ``compare`` prints.
MAX_LINES, MAX_CHARS = 20_000, 4_000_000
#: How long a second pampa waits for another one's fetch of the same mirror.
LOCK_WAIT = 120.0


class Mirror:
    """The operator's bare mirror of one repository under ``base`` (``.pampa/repos``), fetched once per call."""

    def __init__(self, base: Path, repo: str, redactor=None):
        local = Path(repo).expanduser()
        # A repository given as a local folder is read from where pampa runs, not from the mirror's folder.
        self.repo = str(local.resolve()) if "://" not in repo and local.exists() else repo
        self.path = (Path(base) / cmd.mirror_name(self.repo)).resolve()
        self.redactor = redactor
        self.backend = LocalBackend("repository")
        self.fetched = False

    def _command(self, command):
        return replace(command, redactor=self.redactor) if self.redactor is not None else command

    @contextlib.contextmanager
    def _locked(self):
        """One pampa at a time fetches a mirror; another waits (bounded) rather than fail on git's ref locks."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(str(self.path) + ".lock", "w") as handle:
            deadline = time.monotonic() + LOCK_WAIT
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise NotObserved(f"another pampa has been fetching {self.path} for {LOCK_WAIT:g}s; "
                                          "try again when it is done") from None
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def fetch(self) -> None:
        """Bring every branch of the repository into the mirror; raises ``NotObserved`` saying why not."""
        with self._locked():
            result = self.backend.run(self._command(cmd.fetch(str(self.path), self.repo)))
        if not result.ok:
            why = _said(result.stderr) or f"exit code {result.exit_code}"
            raise NotObserved(f"cannot fetch {self.shown_repo} on this machine: {why}. pampa pending compares "
                              f"revisions in a local mirror ({self.path}): check `repo` and this machine's "
                              "access to it")
        self.fetched = True

    @property
    def shown_repo(self) -> str:
        return self.redactor.mask(self.repo) if self.redactor is not None else self.repo

    def compare(self, branch: str, current: str | None, migrations: str = MIGRATIONS) -> cmd.Comparison:
        lines: list[str] = []
        size = [0]

        def keep(stream: str, line: str) -> None:
            if stream == "stdout" and len(lines) < MAX_LINES and size[0] < MAX_CHARS:
                lines.append(line)
                size[0] += len(line)

        result = self.backend.run(self._command(cmd.compare(str(self.path), branch, current, migrations)), keep)
        if not result.ok:
            raise NotObserved(f"git could not compare {current or 'nothing'} with {branch} in {self.path}: "
                              f"{_said(result.stderr) or f'exit code {result.exit_code}'}")
        return cmd.parse_compare("\n".join(lines))

    def abort(self) -> None:
        self.backend.abort()


#: A group's state, from the host's point of view.
UP_TO_DATE, BEHIND, AHEAD, DIVERGED, UNKNOWN, FIRST, NOT_UPDATED = (
    "up_to_date", "behind", "ahead", "diverged", "unknown", "no_checkout", "not_updated")


@dataclass
class Group:
    """Hosts that run one revision and would move to one branch's head (or whose code a deploy leaves)."""

    hosts: list[str]
    revision: str | None
    branch: str | None                 # None: the hosts' sequences do not update their code
    migrating: list[str] = field(default_factory=list)  # hosts of the group whose sequence runs migrate
    comparison: cmd.Comparison | None = None

    @property
    def state(self) -> str:
        c = self.comparison
        if self.branch is None:
            return NOT_UPDATED
        if self.revision is None:
            return FIRST
        if c is None or not c.known:
            return UNKNOWN
        if c.ahead and c.behind:
            return DIVERGED
        return AHEAD if c.ahead else BEHIND if c.behind else UP_TO_DATE


@dataclass
class Preview:
    """What a deploy of ``plan`` would bring, host group by host group, and what could not be seen."""

    stage: str
    repository: str
    groups: list[Group]
    unreachable: dict[str, str]         # host -> why it could not be read
    missing_branches: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every host was read and every revision is one the repository has."""
        return not self.unreachable and all(g.state != UNKNOWN for g in self.groups)


def read_revisions(plan: Plan, pool: BackendPool) -> dict[str, str | None | ConnectError]:
    """Each host's live revision (None: no checkout), one command over its one connection."""
    layouts = {hp.host.name: hp.layout for hp in plan.hosts}

    def read(host, backend):
        base = revlog.base(live_path(host, layouts[host.name]))
        return cmd.parse_revision(backend.run(revlog.revision_command(base)).stdout)

    return each_host(pool, [hp.host for hp in plan.hosts], read)


def preview(plan: Plan, pool: BackendPool, mirror: Mirror) -> Preview:
    """Read every host and fetch the mirror at the same time, then compare once per group."""
    fetched: dict[str, BaseException] = {}

    def fetch() -> None:
        try:
            mirror.fetch()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread below
            fetched["error"] = e

    thread = threading.Thread(target=fetch, name="pampa-mirror-fetch", daemon=True)
    thread.start()
    try:
        found = read_revisions(plan, pool)
        while thread.is_alive():
            thread.join(0.2)
    except BaseException:
        mirror.abort()  # Ctrl-C: the fetch runs in its own process group; stop it, leave nothing behind
        raise
    if "error" in fetched:
        raise fetched["error"]
    groups = _groups(plan, found)
    for group in groups:
        if group.branch is not None:
            group.comparison = mirror.compare(group.branch, group.revision)
    missing = sorted({g.branch for g in groups if g.branch and g.comparison and g.comparison.target is None})
    unreachable = {name: e.message for name, e in found.items() if isinstance(e, ConnectError)}
    return Preview(stage=plan.stage.name, repository=mirror.shown_repo, groups=groups, unreachable=unreachable,
                   missing_branches=missing)


def _groups(plan: Plan, found: dict) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for hp in plan.hosts:
        revision = found[hp.host.name]
        if isinstance(revision, ConnectError):
            continue
        steps = {s.name for s in hp.steps}
        branch = hp.host.branch if "git_reset" in steps else None
        group = groups.setdefault((branch, revision), Group(hosts=[], revision=revision, branch=branch))
        group.hosts.append(hp.host.name)
        if "migrate" in steps:
            group.migrating.append(hp.host.name)
    order = {h.name: i for i, h in enumerate(plan.stage.hosts)}  # inventory order, not the plan's
    for group in groups.values():
        group.hosts.sort(key=order.__getitem__)
        group.migrating.sort(key=order.__getitem__)
    return sorted(groups.values(), key=lambda g: order[g.hosts[0]])


def _said(stderr: str) -> str:
    """git's own words for a failure: its last ``fatal:``/``error:`` line, else its last line."""
    lines = tail(stderr, 20).splitlines()
    return next((line for line in reversed(lines) if line.startswith(("fatal:", "error:"))), lines[-1] if lines else "")


def mirror_for(stage, base: str | os.PathLike = ".pampa/repos") -> Mirror:
    return Mirror(Path(base), str(stage.setting("repo")), stage.redactor)
