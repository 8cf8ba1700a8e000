"""The timeline: each host's steps as bars on a shared time axis, with the gate and the slowest step marked."""
from __future__ import annotations

from rich.console import Console, Group
from rich.text import Text

from ..engine.results import RunResult

PALETTE = ["cyan", "magenta", "blue", "green", "yellow", "bright_cyan", "bright_magenta", "bright_blue",
           "bright_green", "bright_yellow", "white"]


def build(result: RunResult, width: int = 72, legend_width: int | None = None) -> Group:
    """A rich renderable: a row of step bars per host, the gate as ``┃``, the slowest step in red.

    The legend is broken between its items to fit ``legend_width`` (default: the rows' width), never
    inside one."""
    start, end = result.started, max(result.ended, result.started + 1e-6)
    scale = width / (end - start)
    names: list[str] = []
    for h in result.hosts:
        for s in h.steps:
            if s.name not in names:
                names.append(s.name)
    colour = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    slowest = max(((s.seconds, h.host, s.name) for h in result.hosts for s in h.steps), default=None)
    gate_col = int((result.gate_opened_at - start) * scale) if result.gate_opened_at else None
    label_w = max([len(h.host) for h in result.hosts] + [4])
    rows = [Text(f"{'':{label_w}} 0s{'':{max(0, width - 8)}}{end - start:5.1f}s", style="dim")]
    for h in result.hosts:
        cells: list[tuple[str, str]] = [(" ", "")] * width
        for s in h.steps:
            a = max(0, min(width - 1, int((s.started - start) * scale)))
            b = max(a + 1, min(width, int((s.ended - start) * scale + 0.999)))
            is_slowest = slowest is not None and (slowest[1], slowest[2]) == (h.host, s.name)
            style = "bold red" if is_slowest else ("red" if not s.ok else colour[s.name])
            for i in range(a, b):
                cells[i] = ("█" if s.ok else "✗", style)
        if gate_col is not None and 0 <= gate_col < width and cells[gate_col][0] == " ":
            cells[gate_col] = ("┃", "bold yellow")
        line = Text(f"{h.host:<{label_w}} ")
        # One segment per run of equal cells: a segment per cell makes SVG export slow on big fleets.
        run_text, run_style = "", None
        for ch, style in cells:
            if style != run_style and run_text:
                line.append(run_text, style=run_style)
                run_text = ""
            run_text, run_style = run_text + ch, style
        if run_text:
            line.append(run_text, style=run_style)
        line.append(f" {h.result} {h.seconds:.1f}s", style="dim")
        rows.append(line)
    items = [Text.assemble(("█", colour[n]), f" {n}") for n in names]
    if gate_col is not None:
        items.append(Text.assemble(("┃", "bold yellow"), f" gate opened at {result.gate_opened_at - start:.1f}s"))
    if slowest:
        items.append(Text.assemble(("█", "bold red"), f" slowest step: {slowest[2]} on {slowest[1]} "
                                                      f"({slowest[0]:.1f}s)"))
    rows += legend(items, legend_width or label_w + width + 16)
    return Group(*rows)


def legend(items: list[Text], width: int) -> list[Text]:
    """``steps: ITEM  ITEM ...`` in lines of at most ``width`` cells, broken between items only."""
    lines = [Text("steps: ")]
    for item in items:
        if lines[-1].cell_len > len("steps: ") and lines[-1].cell_len + 2 + item.cell_len > width:
            lines.append(Text("       "))
        elif lines[-1].cell_len > len("steps: "):
            lines[-1].append("  ")
        lines[-1].append_text(item)
    return lines


def export(result: RunResult, svg_path, html_path=None) -> None:
    """Save the timeline as SVG (and HTML) using rich's recording console."""
    console = Console(record=True, width=120, file=open("/dev/null", "w"), force_terminal=True,
                      color_system="truecolor")
    console.print(Text(f"pampa {result.kind} {result.stage}: timeline", style="bold"))
    console.print(build(result, width=80))
    if html_path is not None:
        console.save_html(str(html_path), clear=False)
    console.save_svg(str(svg_path), title=f"pampa {result.kind} {result.stage}")
    console.file.close()
