"""Write docs/img/dataflow.svg: the one-way data flow of ``biozoo.load`` (stdlib only).

The same picture is in docs/architecture.md as a Mermaid flowchart; this static
SVG is for readers whose viewer does not render Mermaid.

Run: ``python scripts/render_dataflow_svg.py``
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

TARGET = Path(__file__).resolve().parents[1] / "docs" / "img" / "dataflow.svg"

WIDTH, HEIGHT = 1040, 450
BOX_W, BOX_H, GAP, LEFT, ROW_Y = 140, 56, 30, 25, 190
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"

# (title, fill, stroke, notes under the box)
STAGES = [
    (
        "manifest",
        "#e8f1fb",
        "#2f6db5",
        [
            "manifest.yaml from a",
            "registry id, a folder",
            "or hf://ORG/NAME@REV;",
            "validated, paths kept",
            "inside the folder",
        ],
    ),
    (
        "registry",
        "#e8f1fb",
        "#2f6db5",
        ["names → declarations", "of every plugin;", "conflicts are named,", "broken plugins are", "quarantined"],
    ),
    (
        "assembly",
        "#e9f6ec",
        "#2e7d32",
        ["components built on", "the meta device;", "config keys, slot", "kinds and ports", "are checked"],
    ),
    (
        "weights",
        "#e9f6ec",
        "#2e7d32",
        ["size + sha256 checked,", "safetensors read once,", "keys/shapes diffed,", "assigned (no copy)"],
    ),
    (
        "task",
        "#fdf1e4",
        "#c25e00",
        ["model(**inputs);", "each attention layer", "runs through a", "processor (auto,", "eager, sdpa, plugin)"],
    ),
    (
        "output",
        "#fdf1e4",
        "#c25e00",
        ["named tensors;", "zoo verify compares", "them with the test", "vectors (atol, rtol)"],
    ),
]


def x_of(i: int) -> int:
    return LEFT + i * (BOX_W + GAP)


def text(
    x: float,
    y: float,
    s: str,
    size: int = 12,
    weight: str = "normal",
    anchor: str = "middle",
    fill: str = "#1a1a1a",
    style: str = "normal",
) -> str:
    return (
        f'<text x="{x:.0f}" y="{y:.0f}" font-family="{FONT}" font-size="{size}" font-weight="{weight}" '
        f'font-style="{style}" text-anchor="{anchor}" fill="{fill}">{escape(s)}</text>'
    )


def arrow(x1: float, y1: float, x2: float, y2: float, dashed: bool = False, colour: str = "#333333") -> str:
    dash = ' stroke-dasharray="5 4"' if dashed else ""
    return (
        f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" stroke="{colour}" stroke-width="2"{dash} '
        f'marker-end="url(#head)"/>'
    )


def bracket(x1: float, x2: float, y: float, label: str) -> list[str]:
    return [
        f'<path d="M {x1:.0f} {y - 8:.0f} V {y:.0f} H {x2:.0f} V {y - 8:.0f}" fill="none" stroke="#666666" '
        'stroke-width="1.5"/>',
        text((x1 + x2) / 2, y + 18, label, size=12, fill="#444444", style="italic"),
    ]


def render() -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'role="img" aria-labelledby="title desc">',
        '<title id="title">biozoo data flow</title>',
        '<desc id="desc">manifest to registry to assembly to weights to task to output; plugins feed the registry, '
        "the assembly and the task.</desc>",
        '<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#333333"/></marker></defs>',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" rx="10" fill="#ffffff"/>',
        text(WIDTH / 2, 30, "biozoo.load / zoo load: data flows one way", size=17, weight="bold"),
    ]
    # plugins, above registry .. task
    px1, px2, py, ph = x_of(1) - 10, x_of(4) + BOX_W + 10, 52, 50
    parts.append(
        f'<rect x="{px1}" y="{py}" width="{px2 - px1}" height="{ph}" rx="8" fill="#f3effa" stroke="#6a4c9c" '
        'stroke-width="1.5" stroke-dasharray="6 4"/>'
    )
    parts.append(
        text(
            (px1 + px2) / 2,
            py + 21,
            "plugins (entry-point group biozoo.plugins, plus the built-in core)",
            size=14,
            weight="bold",
            fill="#3f2a66",
        )
    )
    parts.append(
        text(
            (px1 + px2) / 2,
            py + 39,
            "hooks return declarations: plain data, no torch, targets 'module:attr'",
            size=12,
            fill="#3f2a66",
        )
    )
    feeds = [(1, "declarations"), (2, "component classes"), (4, "attention processors")]
    for i, label in feeds:
        cx = x_of(i) + BOX_W / 2
        parts.append(arrow(cx, py + ph, cx, ROW_Y - 2, dashed=True, colour="#6a4c9c"))
        parts.append(text(cx + 6, py + ph + 24, label, size=11, anchor="start", fill="#3f2a66"))
    # the six stages
    for i, (title, fill, stroke, notes) in enumerate(STAGES):
        x = x_of(i)
        parts.append(
            f'<rect x="{x}" y="{ROW_Y}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}" stroke="{stroke}" '
            'stroke-width="2"/>'
        )
        parts.append(text(x + BOX_W / 2, ROW_Y + BOX_H / 2 + 6, title, size=17, weight="bold"))
        for j, line in enumerate(notes):
            parts.append(text(x + BOX_W / 2, ROW_Y + BOX_H + 22 + j * 16, line, size=12, fill="#333333"))
        if i < len(STAGES) - 1:
            parts.append(arrow(x + BOX_W + 2, ROW_Y + BOX_H / 2, x + BOX_W + GAP - 2, ROW_Y + BOX_H / 2))
    # which commands reach how far
    parts += bracket(x_of(0), x_of(1) + BOX_W, 382, "zoo list, zoo info: no torch imported")
    parts += bracket(x_of(2), x_of(5) + BOX_W, 382, "zoo load, zoo verify: torch, then model code on first use")
    parts.append(
        text(
            WIDTH / 2,
            432,
            "every failure is a BiozooError: a message naming the manifest field or file, and a hint naming the fix",
            size=12,
            fill="#444444",
        )
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET}")
