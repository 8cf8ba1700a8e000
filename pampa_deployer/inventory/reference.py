"""The configuration reference table (docs/configuration.md), generated from the schema."""
from __future__ import annotations

import json

from .schema import walk
from .validate import rule_text


def _default(value) -> str:
    if value is None:
        return "—"
    return "`" + json.dumps(value).replace("|", "\\|") + "`"


def table() -> str:
    """A Markdown table: key, type, default, meaning, example."""
    lines = ["| key | type | default | meaning | example |", "|---|---|---|---|---|"]
    for path, key in walk():
        example = f"`{key.example}`".replace("|", "\\|") if key.example else ""
        secret = " Masked in all output." if key.secret else ""
        if key.rule:
            secret = f" Expects {rule_text(key.rule)}.{secret}".replace("|", "\\|")
        if key.choices:
            secret = f" One of: {', '.join(f'`{c}`' for c in key.choices)}.{secret}"
        lines.append(f"| `{path}` | `{key.type.replace('|', chr(92) + '|')}` | {_default(key.default)} | "
                     f"{key.doc}{secret} | {example} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(), end="")
