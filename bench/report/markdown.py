"""The Markdown output: grids as pipe tables, and the whole report as a Markdown document
whose figures are files beside it."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .extras import Extras
from .sections import FIGURES, HOW_TO_READ, load_summary, sections, title
from .table import Grid


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def grid_markdown(grid: Grid, numeric_from: int = 1) -> str:
    """A grid as a pipe table; FAILED cells in bold."""
    headers, body = grid
    align = [("---:" if i >= numeric_from else ":---") for i in range(len(headers))]
    out = ["| " + " | ".join(_md_escape(h) for h in headers) + " |",
           "|" + "|".join(align) + "|"]
    for line in body:
        cells = []
        for text, style in line:
            escaped = _md_escape(text)
            cells.append(f"**{escaped}**" if style == "failed" else escaped)
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def markdown_document(records: list[dict[str, Any]], figures: list[Path],
                      figure_dir: str, extras: Extras | None = None) -> str:
    """The report in Markdown; ``figures`` are linked as ``<figure_dir>/<name>``."""
    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"# {title(records)}", "",
        f"Generated {generated}; {load_summary(records)}.", "",
        "## How to read this report", "", HOW_TO_READ, "",
    ]
    extra = extras.sections(records) if extras else []
    for heading, grid, numeric_from, intro in sections(records) + extra:
        parts += [f"## {heading}", "", intro, "", grid_markdown(grid, numeric_from), ""]
    if figures:
        parts += ["## Figures", ""]
    for path in figures:
        fig_title, caption = FIGURES[path.stem]
        parts += [f"### {fig_title}", "",
                  f"![{fig_title}]({quote(figure_dir)}/{quote(path.name)})", "", caption, ""]
    return "\n".join(parts)
