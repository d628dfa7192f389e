"""The HTML output: grids as HTML tables, and the whole report as one self-contained page
with its figures embedded."""
from __future__ import annotations

import base64
import datetime as _dt
import html
from pathlib import Path
from typing import Any

from .extras import Extras
from .interactive import Interactive, bokeh_resources, interactive_figures
from .sections import FIGURES, Section, load_summary, sections, title
from .stats import ReportOptions
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
td.good { color: #1a7f37; } td.bad { color: #b00000; font-weight: bold; }
td.flagged { background: #fff4d6; }
table.wrap { table-layout: fixed; width: 100%; }
table.wrap td, table.wrap th { white-space: pre-line; overflow-wrap: anywhere; }
table.wrap td:first-child, table.wrap th:first-child { width: 16em; }
ul.summary li { margin: 0.3em 0; }
details { margin-top: 1.8em; } details > summary { cursor: pointer; }
details > summary h2 { display: inline; border: none; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; }
"""


def grid_html(grid: Grid, numeric_from: int = 1, wrap: bool = False) -> str:
    """A grid as an HTML table; each cell's style is a CSS class; ``wrap``: long cells and
    line breaks wrap within the page's width."""
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
    table = '<table class="wrap">' if wrap else "<table>"
    return (f"{table}<thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(lines)
            + "\n</tbody></table>")


def _figures_html(figures: list[Path]) -> list[str]:
    parts = []
    for path in figures:
        fig_title, caption = FIGURES[path.stem]
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts += [
            "<figure>", f'<img src="data:image/png;base64,{data}" alt="{html.escape(fig_title)}">',
            f"<figcaption><b>{html.escape(fig_title)}.</b> {html.escape(caption)}</figcaption>",
            "</figure>",
        ]
    return parts


def _interactive_html(live: list[Interactive]) -> list[str]:
    parts = [("<p>Interactive figures: hover for values; drag to pan, scroll to zoom, click a "
             "legend entry to hide its series. The same figures as PNG are folded below.</p>")]
    for fig in live:
        caption = f"<b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)}"
        parts += ["<figure>", f'<div class="scroll">{fig.div}</div>', fig.script,
                  f"<figcaption>{caption}</figcaption>", "</figure>"]
    return parts


def section_html(section: Section, figures: list[Path],
                 live: list[Interactive] | None = None) -> list[str]:
    """One part of the report as HTML (see ``sections.Section`` for what it holds); the
    figures section shows the ``live`` (bokeh) figures first and folds the PNGs below them."""
    heading = f"<h2>{html.escape(section.heading)}</h2>"
    body = [f"<p>{html.escape(section.intro)}</p>"] if section.intro else []
    if section.sentences:
        body.append('<ul class="summary">' + "".join(
            f"<li>{html.escape(s)}</li>" for s in section.sentences) + "</ul>")
    if section.grid is not None:
        table = grid_html(section.grid, section.numeric_from, section.wrap)
        body.append(table if section.wrap else f'<div class="scroll">{table}</div>')
    if section.figures:
        if not figures and not live:
            return []
        if live:
            body += _interactive_html(live)
            body += ["<details>", "<summary>Static figures (PNG)</summary>",
                     *_figures_html(figures), "</details>"]
        else:
            body += _figures_html(figures)
    if section.html:
        body.append(section.html)
    if section.folded:
        return ["<details>", f"<summary>{heading}</summary>", *body, "</details>"]
    return [heading, *body]


def html_document(records: list[dict[str, Any]], figures: list[Path],
                  options: ReportOptions | None = None, extras: Extras | None = None) -> str:
    """The report as one HTML page: interactive (bokeh, its JavaScript inlined) figures, and
    ``figures`` embedded as base64 PNG; ``extras``: references and scaling fits."""
    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    extras = extras or Extras.of(records, None)
    live = interactive_figures(records, extras.references, extras.fitted, FIGURES)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title(records))}</title>", f"<style>{_CSS}</style>",
        bokeh_resources() if live else "", "</head><body>",
        f"<h1>{html.escape(title(records))}</h1>",
        f'<p class="sub">Generated {generated}; {html.escape(load_summary(records))}.</p>',
    ]
    for section in sections(records, options, extras.sections(records)):
        parts += section_html(section, figures, live)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
