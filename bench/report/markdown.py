"""The Markdown output: grids as pipe tables, and the whole report as a Markdown document
whose figures are files beside it."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .extras import Extras
from .sections import FIGURES, Section, load_summary, sections, title
from .stats import ReportOptions
from .table import Grid


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


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


def section_markdown(section: Section, figures: list[Path], figure_dir: str) -> list[str]:
    """One part of the report as Markdown (see ``sections.Section``); ``html`` is left out."""
    if section.figures and not figures:
        return []
    parts = [f"## {section.heading}", ""]
    if section.intro:
        parts += [section.intro, ""]
    if section.sentences:
        parts += [f"- {s}" for s in section.sentences] + [""]
    if section.grid is not None:
        parts += [grid_markdown(section.grid, section.numeric_from), ""]
    if section.figures:
        for path in figures:
            fig_title, caption = FIGURES[path.stem]
            parts += [f"### {fig_title}", "",
                      f"![{fig_title}]({quote(figure_dir)}/{quote(path.name)})", "", caption, ""]
    if section.markdown:
        parts += [section.markdown, ""]
    return parts


def markdown_document(records: list[dict[str, Any]], figures: list[Path],
                      figure_dir: str, options: ReportOptions | None = None,
                      extras: Extras | None = None) -> str:
    """The report in Markdown; ``figures`` are linked as ``<figure_dir>/<name>``; ``extras``:
    references and scaling fits."""
    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"# {title(records)}", "", f"Generated {generated}; {load_summary(records)}.", ""]
    extra = extras.sections(records) if extras else []
    for section in sections(records, options, extra):
        parts += section_markdown(section, figures, figure_dir)
    return "\n".join(parts)
