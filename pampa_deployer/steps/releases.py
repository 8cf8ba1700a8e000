"""The ``releases`` strategy: each deploy builds ``releases/<time>-<shortrev>/``; ``current`` switches atomically.

Layout under the stage's code path (``ROOT``), as Capistrano and Deployer users know it::

    ROOT/repo.git            bare mirror of the repository (fetches stay incremental)
    ROOT/releases/NAME/      one git worktree per release, NAME = <UTC time>-<short revision>
    ROOT/shared/             logs, pids, uploads and the secret files, linked into every release
    ROOT/release -> releases/NAME    the release this deploy is building (as Deployer's ``release``)
    ROOT/current -> releases/NAME    the live release; restarts and checks act on it

Nothing a running app uses changes before ``switch_release``: a failure or an interruption before it
leaves ``current`` (and the processes started from it) untouched. The switch is ``ln -s`` to a temp
name and ``mv -T`` over ``current`` (one ``rename(2)``, atomic). A release that was ever live gets a
``.pampa-live`` marker, so "previous" (what a rollback returns to, and what pruning always keeps) is
the newest live release older than ``current``, never a release whose deploy failed.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

from ..commands.releases import LIVE_MARK, find_live, prune_script
from ..shell import quote
from .actions import Run, StepContext

#: Two of the strategies the schema names (``inventory/schema.py``: ``strategy``).
IN_PLACE, RELEASES = "in_place", "releases"


@dataclass(frozen=True)
class Layout:
    """Where a host's releases live; ``name`` is this run's release stamp (the revision is added on the host)."""

    root: str
    stamp: str
    keep: int = 5
    builds: bool = True  # False: the host's sequence builds no release (bundles and restarts current)
    shared_dirs: tuple[str, ...] = ()
    shared_files: tuple[str, ...] = ()

    def at(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @property
    def current(self) -> str:
        return self.at("current")

    @property
    def release(self) -> str:
        return self.at("release")

    @property
    def shared(self) -> str:
        return self.at("shared")

    def describe(self, kind: str = "deploy") -> str:
        if kind == "rollback":
            return (f"strategy releases: {self.current} switches back to the newest release that was live at the "
                    "target (one rename per host); nothing is fetched, built or bundled")
        shared = ", ".join(self.shared_dirs + self.shared_files) or "-"
        return (f"strategy releases: builds {self.at('releases', self.stamp + '-<rev>')} from {self.at('repo.git')}, "
                f"switches {self.current} after migrate; shared: {shared} (+ secret files); "
                f"keeps {self.keep} releases")


def live_path(host, layout: "Layout | None") -> str:
    """The code the app runs on ``host``: its checkout, or ``ROOT/current``."""
    return layout.current if layout is not None else host.path


def layout_of(settings, root: str, stamp: str) -> Layout | None:
    """The host's layout under the ``releases`` strategy, or None for the in-place checkout."""
    if (settings.get("strategy") or IN_PLACE) != RELEASES:
        return None
    return Layout(root=root, stamp=stamp, keep=int(settings.get("keep_releases") or 5),
                  shared_dirs=tuple(str(d).strip("/") for d in settings.get("shared_dirs") or ()),
                  shared_files=tuple(str(f).strip("/") for f in settings.get("shared_files") or ()))


def _git(layout_root_relative: str = "repo.git") -> str:
    return f"git --git-dir={layout_root_relative}"


def fetch(ctx: StepContext, layout: Layout) -> tuple[Run, ...]:
    """Create the layout and the bare mirror once; then fetch into the mirror (incremental)."""
    repo = quote(ctx.settings.get("repo"))
    root = quote(layout.root)
    create = (f"mkdir -p {root}/releases {root}/shared && cd {root} && "
              f"if [ ! -d repo.git ]; then git clone -q --mirror {repo} repo.git; fi")
    update = f"{_git()} remote set-url origin {repo} && {_git()} remote update --prune"
    return (Run(ctx.command(create, cwd=False)), Run(ctx.command(update, cwd=layout.root)))


def _link(target: str, kind: str) -> str:
    """Link ``release/target`` to ``shared/target`` (creating the shared side of a folder)."""
    t = quote(target)
    parent = posixpath.dirname(target)
    parts = [f"mkdir -p shared/{t}"] if kind == "dir" else ([f"mkdir -p shared/{quote(parent)}"] if parent else [])
    if parent:
        parts.append(f"mkdir -p \"$dir\"/{quote(parent)}")
    parts += [f"rm -rf \"$dir\"/{t}", f"ln -s \"$PWD/shared/\"{t} \"$dir\"/{t}"]
    return " && ".join(parts)


def linked_files(ctx: StepContext, layout: Layout) -> tuple[str, ...]:
    """Shared files: the stage's ``shared_files`` and every secret whose destination is relative."""
    files = list(layout.shared_files)
    for secret in ctx.secret_files:
        if not secret.remote.startswith(("/", "~")) and secret.remote not in files:
            files.append(secret.remote.strip("/"))
    return tuple(files)


def build(ctx: StepContext, layout: Layout) -> tuple[Run, ...]:
    """Check out the branch's revision into a new release (a worktree of the mirror) and link shared."""
    branch = quote(f"refs/heads/{ctx.host.branch}^{{commit}}")
    links = [_link(d, "dir") for d in layout.shared_dirs] + [_link(f, "file") for f in linked_files(ctx, layout)]
    script = " && ".join([
        f"rev=$({_git()} rev-parse --verify --quiet {branch})",
        f"name={quote(layout.stamp)}-$(printf '%s' \"$rev\" | cut -c1-7)",
        # Never reuse a folder (a redeploy within the same second): the live release must stay intact.
        "dir=releases/$name && n=1 && while [ -e \"$dir\" ]; do n=$((n+1)); dir=releases/$name-$n; done",
        f"{_git()} worktree prune",
        f"{_git()} worktree add -q --detach \"$dir\" \"$rev\"",
        "printf '%s\\n' \"$rev\" > \"$dir/REVISION\"",
        *links,
        "ln -sfn \"$dir\" release",
        "echo \"built $dir at $rev\"",
    ])
    return (Run(ctx.command(script, cwd=layout.root)),)


def switch(ctx: StepContext, layout: Layout) -> tuple[Run, ...]:
    """Point ``current`` at the release just built, atomically; then prune old releases."""
    flip = ("target=$(readlink release) && [ -d \"$target\" ] && touch \"$target/" + LIVE_MARK + "\" && "
            "ln -sfn \"$target\" current.pampa-new && mv -T current.pampa-new current && "
            "echo \"current -> $target\"")
    return (Run(ctx.command(flip, cwd=layout.root)), Run(ctx.command(prune_script(layout.keep), cwd=layout.root)))


def switch_back(ctx: StepContext, layout: Layout, revision: str) -> tuple[Run, ...]:
    """Rollback: point ``current`` at the newest live release of ``revision``; one rename, no bundler."""
    script = ("{ " + find_live(revision) + "; if [ -z \"$t\" ]; then echo \"no release of "
              + revision[:12] + " on this host\" >&2; false; else ln -sfn \"$t\" current.pampa-new && "
              "mv -T current.pampa-new current && echo \"current -> $t\"; fi; }")
    return (Run(ctx.command(script, cwd=layout.root)),)
