"""The HTML output: grids as HTML tables, and the whole report as one self-contained page
with its figures embedded."""
from __future__ import annotations

import base64
import datetime as _dt
import html
from pathlib import Path
from typing import Any

from .extras import Extras
from .interactive import bokeh_resources, interactive_figures
from .sections import FIGURES, HOW_TO_READ, load_summary, sections, title
from .table import Grid

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e5e5e5; white-space: nowrap; }
th { background: #f4f4f4; border-bottom: 2px solid #ccc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.txt, th.txt { text-align: left; }
td.failed { color: #b00000; font-weight: bold; } td.missing { color: #aaa; }
td.good { color: #1a7f37; } td.bad { color: #b00000; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; }
"""


def grid_html(grid: Grid, numeric_from: int = 1) -> str:
    """A grid as an HTML table; each cell's style is a CSS class."""
    headers, body = grid
    head = "".join(
        f'<th class="{"num" if i >= numeric_from else "txt"}">{html.escape(h)}</th>'
        for i, h in enumerate(headers)
    )
    lines = []
    for line in body:
        cells = []
        for i, (text, style) in enumerate(line):
            classes = ["num" if i >= numeric_from else "txt"] + ([style] if style else [])
            cells.append(f'<td class="{" ".join(classes)}">{html.escape(text)}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(lines)
            + "\n</tbody></table>")


def html_document(records: list[dict[str, Any]], figures: list[Path],
                  extras: Extras | None = None) -> str:
    """The report as one HTML page: interactive figures (bokeh, its JavaScript inlined) and
    ``figures`` embedded as base64 PNG."""
    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    extras = extras or Extras.of(records, None)
    live = interactive_figures(records, extras.references, extras.fitted, FIGURES)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title(records))}</title>", f"<style>{_CSS}</style>",
        bokeh_resources() if live else "", "</head><body>",
        f"<h1>{html.escape(title(records))}</h1>",
        f'<p class="sub">Generated {generated}; {html.escape(load_summary(records))}.</p>',
        "<h2>How to read this report</h2>", f"<p>{html.escape(HOW_TO_READ)}</p>",
    ]
    for heading, grid, numeric_from, intro in sections(records) + extras.sections(records):
        parts += [f"<h2>{html.escape(heading)}</h2>", f"<p>{html.escape(intro)}</p>",
                  f'<div class="scroll">{grid_html(grid, numeric_from)}</div>']
    if live:
        parts.append("<h2>Interactive figures</h2><p>Hover for values; drag to pan, scroll to "
                     "zoom, click a legend entry to hide its series.</p>")
    for fig in live:
        caption = f"<b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)}"
        parts += ["<figure>", f'<div class="scroll">{fig.div}</div>', fig.script,
                  f"<figcaption>{caption}</figcaption>", "</figure>"]
    if figures:
        parts.append("<h2>Figures</h2>")
    for path in figures:
        fig_title, caption = FIGURES[path.stem]
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts += [
            "<figure>", f'<img src="data:image/png;base64,{data}" alt="{html.escape(fig_title)}">',
            f"<figcaption><b>{html.escape(fig_title)}.</b> {html.escape(caption)}</figcaption>",
            "</figure>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
