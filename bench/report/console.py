"""The terminal output: grids as rich tables (colour on a terminal, plain text otherwise)."""
from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import summary
from .formatting import MISSING, fmt_change, fmt_median_iqr
from .sections import Context
from .table import Flags, Grid, cost_grid, fault_grid, runtime_grid, scaling_grid

_RICH_STYLES = {"failed": "bold red", "missing": "dim", "good": "green", "bad": "red",
                "flagged": "yellow"}

_VERDICT_STYLES = {"faster": "bold green", "slower": "bold red", "within noise": "",
                   "failed in A": "red", "failed in B": "red", "failed in both": "red",
                   "only in A": "dim", "only in B": "dim"}

Justify = Literal["left", "right"]


def rich_table(grid: Grid, title: str, numeric_from: int = 1, wrap: bool = False) -> Table:
    """A grid as a rich table: columns from ``numeric_from`` on are right-aligned; ``wrap``
    lets long cells wrap (with lines between the rows)."""
    headers, body = grid
    table = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left", show_lines=wrap)
    for i, h in enumerate(headers):
        table.add_column(h, justify="right" if i >= numeric_from else "left", no_wrap=not wrap)
    for line in body:
        table.add_row(*(Text(text, style=_RICH_STYLES.get(style or "", ""))
                        for text, style in line))
    return table


def _tables(rows: Sequence[dict[str, Any]], flags: Flags | None = None) -> list[Table]:
    return [
        rich_table(runtime_grid(rows, flags),
                   "Run Time Performance — median compute seconds ± IQR"),
        rich_table(scaling_grid(rows, flags), "Scaling and quality", numeric_from=2),
    ]


def render_table(rows: Sequence[dict[str, Any]], console: Console | None = None,
                 flags: Flags | None = None) -> None:
    """Print the run-time table and the scaling/quality table of ``summarize`` rows (a
    flagged trial, see ``stats.trial_flags``, marked)."""
    console = console or Console()
    for table in _tables(rows, flags):
        console.print(table)


def render_summary(ctx: Context, console: Console | None = None) -> None:
    """Print the report's summary: its sentences, the tables of :func:`render_table` and the
    cost of one run per trial."""
    console = console or Console()
    console.print("[bold]Summary[/bold]")
    for sentence in summary.sentences(ctx.rows, ctx.records, ctx.flags, ctx.costs, ctx.options):
        console.print(Text("• " + sentence))
    render_table(ctx.rows, console, ctx.flags)
    if ctx.costs:
        console.print(rich_table(cost_grid(ctx.costs, summary.money_label(ctx.options)),
                                 "Cost per run — median compute seconds × cores held; memory: "
                                 "peak, summed over workers (a pod's working set, else RSS)",
                                 numeric_from=2))


def render_faults(records: Iterable[dict[str, Any]], console: Console | None = None) -> None:
    """Print the fault-injection table when any record has ``faults``."""
    grid = fault_grid(records)
    if grid is not None:
        (console or Console()).print(rich_table(grid, "Fault tolerance", numeric_from=4,
                                                    wrap=True))


def _plain_console(width: int) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    console = Console(file=buf, width=width, no_color=True, color_system=None,
                      force_terminal=False, highlight=False, emoji=False)
    return console, buf


def table_text(rows: Sequence[dict[str, Any]]) -> str:
    """The two tables of ``render_table`` as plain text (no colour codes)."""
    ncols = max(len(runtime_grid(rows)[0]), len(scaling_grid(rows)[0]))
    console, buf = _plain_console(max(120, 24 * ncols))
    render_table(rows, console)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


def _median_cell(state: str | None, median: float | None, iqr: float | None) -> str:
    if state == "succeeded":
        return fmt_median_iqr(median, iqr)
    return "FAILED" if state else MISSING


def render_compare(rows: Sequence[dict[str, Any]], console: Console | None = None,
                   title: str = "Comparison (B relative to A)") -> None:
    """Print ``compare`` rows: median A, median B, change and verdict."""
    console = console or Console()
    table = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left")
    columns: tuple[tuple[str, Justify], ...] = (
        ("Workload", "left"), ("Framework", "left"), ("Workers", "right"),
        ("Median A (s)", "right"), ("Median B (s)", "right"), ("Change", "right"),
        ("Verdict", "left"))
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)
    for r in rows:
        table.add_row(
            r["workload"], r["framework"], str(r["workers"]),
            _median_cell(r["state_a"], r["median_a"], r["iqr_a"]),
            _median_cell(r["state_b"], r["median_b"], r["iqr_b"]),
            fmt_change(r["change"]),
            Text(r["verdict"], style=_VERDICT_STYLES.get(r["verdict"], "")),
        )
    console.print(table)
