"""The systemd unit ``pampa agent install`` writes: a pure builder, tested with exact strings."""
from __future__ import annotations

import re
from dataclasses import dataclass

_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def systemd_quote(word: str) -> str:
    """One ExecStart word: double-quoted when needed; ``%`` doubled (systemd specifiers), ``\\`` and ``"`` escaped."""
    word = word.replace("%", "%%")
    if _PLAIN.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class AgentUnit:
    """Everything the unit names; ``argv`` is the exact agent command line."""

    stage: str
    node: str
    argv: tuple[str, ...]
    user: str
    home: str
    workdir: str
    env_file: str
    grace: float

    @property
    def name(self) -> str:
        return f"pampa-agent-{self.stage}.service"

    def render(self) -> str:
        exec_start = " ".join(systemd_quote(a) for a in self.argv)
        return "\n".join([
            "# Written by `pampa agent install` (docs/pull-mode.md). Secrets stay on this node:",
            f"# {self.env_file} (mode 0600) holds variables the stage's secret templates use.",
            "[Unit]",
            f"Description=Pampa deploy agent: node {self.node} of stage {self.stage}",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=simple",
            f"User={self.user}",
            f"WorkingDirectory={systemd_quote(self.workdir)}",
            f"Environment=HOME={systemd_quote(self.home)}",
            f"EnvironmentFile=-{self.env_file}",
            f"ExecStart={exec_start}",
            "Restart=always",
            "RestartSec=5",
            "# SIGTERM to the agent only: it stops starting steps, gives running commands the grace",
            "# period, reports the run as interrupted, then exits 143.",
            "KillMode=mixed",
            "KillSignal=SIGTERM",
            f"TimeoutStopSec={int(self.grace) + 30}",
            "SuccessExitStatus=143",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ])
