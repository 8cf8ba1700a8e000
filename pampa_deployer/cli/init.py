"""``pampa init``: scaffold commented stage files that ``pampa plan`` accepts at once."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ..errors import UsageError
from . import output


def declare(cmd) -> None:
    p = cmd("init", "scaffold stages/ for a new app (asks nothing without a TTY)",
            "pampa init --app mysaas --repo git@github.com:acme/mysaas.git")
    p.add_argument("--app", help="application name")
    p.add_argument("--repo", help="git URL of the app")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(handler=init)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
FILES = ("common.yml", "production.yml", "staging.yml")
GITIGNORE_LINES = (".pampa/", "{stages}/secrets/*", "!{stages}/secrets/*.example")
"""What never belongs in git: run logs and the secret files (their ``.example`` twins do)."""
SECRETS_README = """\
Secret files for `secrets:` in the stage files (e.g. `local: secrets/config.rb`).
Everything here except *.example and this README is ignored by git (see ../../.gitignore);
CI writes the real files from its secret store before `pampa deploy`.
"""


def _ask(prompt: str, default: str) -> str:
    answer = input(f"{prompt} [{default}]: ").strip()
    return answer or default


def init(args) -> int:
    root = Path(args.stages)
    interactive = not output.is_ci(args) and sys.stdin.isatty()
    app = args.app or (_ask("application name", Path.cwd().name) if interactive else Path.cwd().name)
    app = re.sub(r"[^A-Za-z0-9_.-]", "_", app) or "app"
    guess = _origin_url()
    placeholder = f"git@github.com:you/{app}.git"
    repo = args.repo or (_ask("git repository", guess or placeholder) if interactive else guess or placeholder)
    existing = [root / f for f in FILES if (root / f).exists()]
    if existing and not args.force:
        raise UsageError(f"init: {', '.join(str(p) for p in existing)} already exist; "
                         "pass --force to overwrite")
    root.mkdir(parents=True, exist_ok=True)
    console = output.console(args)
    for name in FILES:
        text = (TEMPLATES / name).read_text().format(app=app, repo=repo)
        (root / name).write_text(text)
        console.print(f"wrote {root / name}")
    secrets = root / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    if not (secrets / "README.example").exists():
        (secrets / "README.example").write_text(SECRETS_README)
        console.print(f"wrote {secrets / 'README.example'}")
    added = _gitignore(root)
    if added:
        console.print(f"added {', '.join(added)} to {root.parent / '.gitignore'}")
    if repo == placeholder:
        console.print(f"note: repo is a placeholder ({repo}); set `repo` in {root}/common.yml (or pass --repo)")
    console.print(f"next: edit the hosts in {root}/production.yml, then `pampa plan production`")
    return 0


def _origin_url() -> str | None:
    """The current repository's ``origin`` URL: what an app's own folder most likely deploys."""
    try:
        done = subprocess.run(["git", "remote", "get-url", "origin"], capture_output=True, text=True, timeout=10,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    url = done.stdout.strip()
    return url if done.returncode == 0 and url else None


def _gitignore(root: Path) -> list[str]:
    """Add the lines of GITIGNORE_LINES that ``.gitignore`` (beside the stages folder) lacks; keep the rest."""
    path = root.parent / ".gitignore"
    wanted = [line.format(stages=root.name) for line in GITIGNORE_LINES]
    text = path.read_text() if path.exists() else ""
    have = {line.strip() for line in text.splitlines()}
    missing = [line for line in wanted if line not in have]
    if missing:
        prefix = "" if not text or text.endswith("\n") else "\n"
        path.write_text(text + prefix + "# pampa: run logs and secret files stay out of git\n"
                        + "\n".join(missing) + "\n")
    return missing
