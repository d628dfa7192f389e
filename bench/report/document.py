"""The self-contained report: HTML (figures embedded) or Markdown (figures in a folder beside
it), written to a file or returned as text."""
from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.errors import UsageError

from .extras import Extras
from .figures import make_figures
from .html import html_document
from .markdown import markdown_document
from .references import References
from .stats import ReportOptions


def report_format(out: str | Path, fmt: str | None) -> str:
    """The report format: ``fmt`` when given, else from the suffix of ``out`` (.html / .md)."""
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        fmt = {"htm": "html", "markdown": "md"}.get(fmt, fmt)
        if fmt not in ("html", "md"):
            raise UsageError(f"unknown report format {fmt!r}; expected 'html' or 'md'")
        return fmt
    suffix = Path(out).suffix.lower()
    if suffix in (".html", ".htm"):
        return "html"
    if suffix in (".md", ".markdown"):
        return "md"
    raise UsageError(
        f"cannot tell the report format from {str(out)!r}; "
        "name the file .html or .md, or give the format explicitly"
    )


def _plain(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records as plain dicts: the report reads them by key (bench.record.ResultRecord's
    keys), and works on copies."""
    return [dict(r) for r in records]


def write_report(records: Iterable[Mapping[str, Any]], out_path: str | Path,
                 fmt: str = "html", options: ReportOptions | None = None,
                 references: References | None = None) -> Path:
    """Write a self-contained report and return its path.

    ``fmt="html"``: one file, figures embedded as base64 PNG.  ``fmt="md"``: Markdown, with the
    figures written to ``<stem>_figures/`` beside it and linked relatively.  ``options``: the
    noise threshold and prices (``testbed report``'s options); ``references``: published
    numbers overlaid (``references.load_references``).
    """
    records = _plain(records)
    if not records:
        raise UsageError("no result records to report on")
    if fmt not in ("html", "md"):
        raise UsageError(f"unknown report format {fmt!r}; expected 'html' or 'md'")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    extras = Extras.of(records, references)
    if fmt == "html":
        with tempfile.TemporaryDirectory(prefix="bench-figures-") as tmp:
            figures = make_figures(records, tmp, references, extras.fitted)
            text = html_document(records, figures, options, extras)
    else:
        figure_dir = f"{out.stem}_figures"
        figures = make_figures(records, out.parent / figure_dir, references, extras.fitted)
        text = markdown_document(records, figures, figure_dir, options, extras)
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_text(text, encoding="utf-8")
    tmp_out.replace(out)
    return out


def report_text(records: Iterable[Mapping[str, Any]], fmt: str,
                options: ReportOptions | None = None,
                references: References | None = None) -> str:
    """The report as text: HTML with its figures embedded, or Markdown without the figures
    (they are files, written only beside a report file)."""
    records = _plain(records)
    fmt = report_format("", fmt)
    extras = Extras.of(records, references)
    if fmt == "md":
        return markdown_document(records, [], "", options, extras)
    with tempfile.TemporaryDirectory(prefix="bench-figures-") as tmp:
        figures = make_figures(records, tmp, references, extras.fitted)
        return html_document(records, figures, options, extras)
