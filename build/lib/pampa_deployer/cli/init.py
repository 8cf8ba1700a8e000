"""``pampa init``: scaffold commented stage files that ``pampa plan`` accepts at once."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from ..errors import UsageError
from . import output

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
FILES = ("common.yml", "production.yml", "staging.yml")


def _ask(prompt: str, default: str) -> str:
    answer = input(f"{prompt} [{default}]: ").strip()
    return answer or default


def init(args) -> int:
    root = Path(args.stages)
    interactive = not output.is_ci(args) and sys.stdin.isatty()
    app = args.app or (_ask("application name", Path.cwd().name) if interactive else Path.cwd().name)
    app = re.sub(r"[^A-Za-z0-9_.-]", "_", app) or "app"
    repo = args.repo or (_ask("git repository", f"git@github.com:you/{app}.git") if interactive
                         else f"git@github.com:you/{app}.git")
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
    console.print(f"next: edit the hosts in {root}/production.yml, then `pampa plan production`")
    return 0
