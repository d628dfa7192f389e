"""Tables, figures and self-contained reports built from result records.

One output per module: ``console`` (rich tables, plain text), ``markdown``, ``html`` and
``figures`` (the only user of matplotlib, loaded when a figure is drawn), all rendering the
grids of ``table`` with the wording of ``sections``; ``stats`` holds ``compare`` and the other
report-side statistics, apart from display; ``document`` writes the report file and
``commands`` is what ``testbed report`` and ``testbed compare`` run.

This module only re-exports the public surface.
"""
from __future__ import annotations

from .commands import compare_command, load_results, report_command
from .console import render_compare, render_faults, render_table, table_text
from .document import report_format, report_text, write_report
from .figures import make_figures
from .html import grid_html, html_document
from .markdown import grid_markdown, markdown_document
from .sections import FIGURES, HOW_TO_READ
from .stats import REGRESSIONS, compare
from .table import (
    Cell,
    Grid,
    environment_grid,
    fault_grid,
    quality_grid,
    runtime_grid,
    scaling_grid,
)

__all__ = [
    "FIGURES",
    "HOW_TO_READ",
    "REGRESSIONS",
    "Cell",
    "Grid",
    "compare",
    "compare_command",
    "environment_grid",
    "fault_grid",
    "grid_html",
    "grid_markdown",
    "html_document",
    "load_results",
    "make_figures",
    "markdown_document",
    "quality_grid",
    "render_compare",
    "render_faults",
    "render_table",
    "report_command",
    "report_format",
    "report_text",
    "runtime_grid",
    "scaling_grid",
    "table_text",
    "write_report",
]
