"""``testbed report`` and ``testbed compare``: the report side of the testbed
(``bench.report``), from results files."""
from __future__ import annotations

import argparse

from .options import Parser, console, threshold


def register(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    from bench.results import NOISE_FRACTION

    rep = sub.add_parser("report", parents=[common],
                         help="tables and an HTML/Markdown report from a results file")
    rep.add_argument("results")
    rep.add_argument("--out", "-o", help="report file (.html or .md)")
    rep.add_argument("--format", choices=("html", "md"),
                     help="the report's format (default: from --out's suffix); without --out "
                          "the report is printed (Markdown without the figures)")
    rep.add_argument("--noise-threshold", type=positive_number, default=0.25,
                     metavar="FRACTION",
                     help="flag a trial whose IQR is more than this fraction of its median "
                          "(default 0.25); a trial that ran on a busy machine is always flagged")
    rep.add_argument("--price-core-hour", type=positive_number, metavar="PRICE",
                     help="price of one core held for an hour: adds the money per run "
                          "(cores held × median compute seconds)")
    rep.add_argument("--price-gb-hour", type=positive_number, metavar="PRICE",
                     help="price of one GB (10^9 bytes) of memory for an hour: adds the money "
                          "per run (peak memory summed over workers × median compute seconds)")
    rep.add_argument("--reference", metavar="FILE",
                     help="YAML of published numbers (source, setup, entries of workload, "
                          "framework, workers, seconds) overlaid as their own series; see "
                          "examples/references/")
    rep.set_defaults(fn=cmd_report)

    cmp_ = sub.add_parser(
        "compare", parents=[common],
        help="compare two results files (exit 1 when B is slower beyond noise)",
        description="Compare two results files, B relative to A, per workload × framework × "
                    "workers. A change is beyond noise when the medians differ by more than both "
                    "IQRs and by more than --threshold of A's median. Exit status 1 when any "
                    "trial is slower in B beyond noise or failed in B only (a regression), so it "
                    "can gate CI; --no-fail only prints.")
    cmp_.add_argument("a", help="results file A (the reference, e.g. before)")
    cmp_.add_argument("b", help="results file B (e.g. after)")
    cmp_.add_argument("--threshold", type=threshold, default=NOISE_FRACTION, metavar="FRACTION",
                      help=f"smallest relative change of the median that counts (default "
                           f"{NOISE_FRACTION:g} = {NOISE_FRACTION * 100:g}%%)")
    cmp_.add_argument("--no-fail", action="store_true",
                      help="exit 0 even when B is slower beyond noise (only print)")
    cmp_.set_defaults(fn=cmd_compare)


def positive_number(text: str) -> float:
    """A flag type: a number above 0 (a threshold or a price)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import report_command
    from bench.report.stats import ReportOptions

    options = ReportOptions(noise_threshold=args.noise_threshold,
                            price_core_hour=args.price_core_hour,
                            price_gb_hour=args.price_gb_hour)
    return report_command(args.results, args.out, args.format, console(), options,
                          args.reference)


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.report import compare_command

    return compare_command(args.a, args.b, console(), threshold=args.threshold,
                           fail=not args.no_fail)
