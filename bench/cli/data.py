"""``testbed data make`` and ``testbed data upload``: partitioned datasets (``bench.data``)
written locally or to S3, with a progress bar."""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .options import Parser, console, nonneg_int, positive_int

if TYPE_CHECKING:
    from rich.progress import TaskID

S3_FLAGS_HELP = ("S3: endpoint from --endpoint-url or AWS_ENDPOINT_URL, credentials from "
                 "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, region from --region or "
                 "AWS_DEFAULT_REGION")


def register(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    from bench.data import KINDS

    data = sub.add_parser("data", parents=[common], help="make or upload partitioned datasets",
                          description="Partitioned Parquet datasets that the workers read "
                                      "themselves (dataset: {name: parquet, uri: ...}). "
                                      + S3_FLAGS_HELP)
    cmds = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    make = cmds.add_parser("make", parents=[common],
                           help="write a synthetic partitioned dataset to a directory or S3")
    make.add_argument("uri", help="a local directory or s3://bucket/prefix")
    make.add_argument("--kind", choices=KINDS, default="classification")
    make.add_argument("--rows", type=positive_int, required=True)
    make.add_argument("--columns", type=positive_int, default=16,
                      help="feature columns (classification, blobs; default 16)")
    make.add_argument("--partitions", type=positive_int, default=8,
                      help="Parquet files, one per partition (default 8)")
    make.add_argument("--seed", type=nonneg_int, default=0)
    make.add_argument("--classes", type=int, default=2,
                      help="classes (classification, blobs; default 2)")
    make.add_argument("--keys", type=positive_int, default=1000,
                      help="customers (transactions; default 1000)")
    make.add_argument("--row-group-rows", type=positive_int,
                      help="rows per Parquet row group (default: a quarter of a partition)")
    make.add_argument("--overwrite", action="store_true")
    _s3_flags(make)
    make.set_defaults(fn=cmd_make)

    up = cmds.add_parser("upload", parents=[common],
                         help="copy a local partitioned dataset to s3://bucket/prefix")
    up.add_argument("local_dir")
    up.add_argument("uri", help="s3://bucket/prefix")
    up.add_argument("--overwrite", action="store_true")
    _s3_flags(up)
    up.set_defaults(fn=cmd_upload)


def _s3_flags(p: Parser) -> None:
    p.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL, else AWS)")
    p.add_argument("--region", help="S3 region (default: AWS_DEFAULT_REGION, else us-east-1)")


@contextmanager
def _bar(what: str, unit: str) -> Iterator[Callable[..., None]]:
    """A progress bar shown from the first update (bad input fails before it, on one line)."""
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn

    column = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), column,
                        TextColumn("{task.fields[note]}"), console=console())
    task: list[TaskID] = []

    def update(done: int, total: int, note: str = "") -> None:
        if not task:
            progress.start()
            task.append(progress.add_task(what, total=total, note=note))
        progress.update(task[0], completed=done, total=total, note=note)
    try:
        yield update
    finally:
        if task:
            progress.stop()


def cmd_make(args: argparse.Namespace) -> int:
    from bench.data import S3Settings, make_dataset
    from bench.quantities import format_bytes

    s3 = S3Settings(args.endpoint_url, args.region)
    with _bar(f"writing {args.uri}", "files") as update:
        manifest = make_dataset(
            args.kind, args.uri, args.rows, args.columns, args.partitions, args.seed,
            classes=args.classes, keys=args.keys, row_group_rows=args.row_group_rows,
            overwrite=args.overwrite, s3=s3,
            progress=lambda done, total, written: update(done, total, format_bytes(written)))
    console().print(f"{args.uri}: {manifest['kind']}, {manifest['rows']:,} rows in "
                    f"{manifest['partitions']} partitions, {format_bytes(manifest['bytes'])}")
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    from bench.data import S3Settings
    from bench.data.upload import upload
    from bench.quantities import format_bytes

    s3 = S3Settings(args.endpoint_url, args.region)
    with _bar(f"uploading {args.local_dir}", "bytes") as update:
        done = upload(args.local_dir, args.uri, s3=s3, overwrite=args.overwrite,
                      progress=update)
    console().print(f"{args.uri}: {format_bytes(done)} uploaded")
    return 0
