"""Synthetic partitioned datasets, written one partition at a time (any size, bounded memory).

Each kind draws its global parameters (class centroids, cluster centres, the customer table)
from ``seed`` alone and each partition's rows from ``(seed, partition index)``, so a dataset is
the same whatever order or process writes its partitions, and only one partition is in memory.

* ``classification``: ``f0..f{n-1}`` float32 and ``label`` int32, like scikit-learn's
  ``make_classification``: each class is a Gaussian around a vertex of a hypercube in the
  informative features (half the columns, at least 2) with a random covariance, the other
  features are noise, and 1% of the labels are flipped.
* ``blobs``: ``f0..`` float32 around ``classes`` centres in [-10, 10], standard deviation 1,
  and ``label`` int32 (the centre), like ``make_blobs``.
* ``transactions``: ``id`` int64 (the global row number), ``customer`` int64 in
  ``[0, keys)``, ``category`` string, ``amount`` float64, ``quantity`` int32, ``day`` int32;
  dimension table ``customers/part-00000.parquet``: ``customer`` int64, ``region`` and
  ``segment`` strings.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import UsageError

from .layout import DIMENSION_DIR, MANIFEST, S3Settings, filesystem_for, part_name, storage_error

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

KINDS = ("classification", "blobs", "transactions")
CATEGORIES = ("books", "electronics", "food", "garden", "toys")
REGIONS = ("north", "south", "east", "west")
SEGMENTS = ("consumer", "corporate", "small-business")
MAX_PARTITIONS = 100_000
Progress = Callable[[int, int, int], None]
"""Called after each file: (partitions written, partitions in all, bytes written so far)."""


def partition_rows(rows: int, partitions: int) -> list[int]:
    """Rows of each partition: near-equal, the first ones one larger."""
    base, extra = divmod(rows, partitions)
    return [base + (1 if i < extra else 0) for i in range(partitions)]


def _check(kind: str, rows: int, columns: int, partitions: int, classes: int, keys: int) -> None:
    if kind not in KINDS:
        raise UsageError(f"kind: unknown dataset kind {kind!r}; expected one of "
                         f"{', '.join(KINDS)}")
    for name, value, low in (("rows", rows, 1), ("columns", columns, 1),
                             ("partitions", partitions, 1), ("classes", classes, 2),
                             ("keys", keys, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UsageError(f"{name}: expected an integer >= {low}, got {value!r}")
    if partitions > rows:
        raise UsageError(f"partitions: {partitions} partitions for {rows} rows; at most one "
                         "partition per row")
    if partitions > MAX_PARTITIONS:
        raise UsageError(f"partitions: at most {MAX_PARTITIONS:,}, got {partitions:,}")
    if kind == "classification" and classes * 2 > 2 ** max(2, columns // 2):
        raise UsageError(f"classes: {classes} classes need more than {columns} columns "
                         "(classes*2 <= 2**(columns//2))")


class _Generator:
    """The global parameters of one dataset; ``table(i, rows, offset)`` makes partition i."""

    def __init__(self, kind: str, columns: int, seed: int, classes: int, keys: int):
        self.kind, self.columns, self.seed = kind, columns, seed
        self.classes, self.keys = classes, keys
        rng = np.random.default_rng([seed, 2**31])
        if kind == "classification":
            self.informative = max(2, columns // 2)
            vertices = rng.choice(2**self.informative, size=classes, replace=False)
            bits = (vertices[:, None] >> np.arange(self.informative)) & 1
            self.centroids = (bits * 2.0 - 1.0) * 1.5  # class_sep 1.5, as bench.datasets uses
            self.transforms = rng.uniform(-1, 1, (classes, self.informative, self.informative))
        elif kind == "blobs":
            self.centres = rng.uniform(-10, 10, (classes, columns))

    def table(self, index: int, rows: int, offset: int) -> pa.Table:
        import pyarrow as pa

        rng = np.random.default_rng([self.seed, index])
        if self.kind == "transactions":
            return pa.table({
                "id": pa.array(np.arange(offset, offset + rows, dtype=np.int64)),
                "customer": pa.array(rng.integers(0, self.keys, rows, dtype=np.int64)),
                "category": pa.array(np.asarray(CATEGORIES)[rng.integers(0, len(CATEGORIES),
                                                                         rows)]),
                "amount": pa.array(np.round(rng.lognormal(3.0, 1.0, rows), 2)),
                "quantity": pa.array(rng.integers(1, 11, rows, dtype=np.int32)),
                "day": pa.array(rng.integers(0, 365, rows, dtype=np.int32)),
            })
        label = rng.integers(0, self.classes, rows).astype(np.int32)
        if self.kind == "blobs":
            X = self.centres[label] + rng.standard_normal((rows, self.columns))
        else:
            X = rng.standard_normal((rows, self.columns))
            inf = X[:, :self.informative]
            X[:, :self.informative] = (np.einsum("ri,rij->rj", inf, self.transforms[label])
                                       + self.centroids[label])
            flip = rng.random(rows) < 0.01
            label[flip] = rng.integers(0, self.classes, int(flip.sum()))
        cols: dict[str, Any] = {f"f{j}": pa.array(X[:, j].astype(np.float32))
                                for j in range(self.columns)}
        cols["label"] = pa.array(label)
        return pa.table(cols)

    def dimension(self) -> pa.Table:
        import pyarrow as pa

        rng = np.random.default_rng([self.seed, 2**31 + 1])
        return pa.table({
            "customer": pa.array(np.arange(self.keys, dtype=np.int64)),
            "region": pa.array(np.asarray(REGIONS)[rng.integers(0, len(REGIONS), self.keys)]),
            "segment": pa.array(np.asarray(SEGMENTS)[rng.integers(0, len(SEGMENTS),
                                                                   self.keys)]),
        })


def make_dataset(kind: str, uri: str, rows: int, columns: int = 16, partitions: int = 4,
                 seed: int = 0, *, classes: int = 2, keys: int = 1000,
                 row_group_rows: int | None = None, overwrite: bool = False,
                 s3: S3Settings | None = None, progress: Progress | None = None
                 ) -> dict[str, Any]:
    """Write a ``kind`` dataset of ``rows`` rows in ``partitions`` files to ``uri`` (a local
    directory or ``s3://bucket/prefix``); returns its manifest (written last, so a dataset
    with a manifest is complete). ``columns`` is the feature count (``transactions`` has its
    own six columns); ``row_group_rows``: rows per Parquet row group (default: a quarter of a
    partition, at least 1,000)."""
    import pyarrow.fs as pafs

    _check(kind, rows, columns, partitions, classes, keys)
    fs, path = filesystem_for(uri, s3)
    try:
        existing = fs.get_file_info(f"{path}/{MANIFEST}")
        if existing.type != pafs.FileType.NotFound and not overwrite:
            raise UsageError(f"uri {uri}: a dataset exists there already (use --overwrite)")
        return _write(kind, fs, path, rows, columns, partitions, seed, classes, keys,
                      row_group_rows, progress)
    except OSError as e:
        raise storage_error(f"uri {uri}", e, "cannot write") from None


def _write(kind: str, fs: pafs.FileSystem, path: str, rows: int, columns: int, partitions: int,
           seed: int, classes: int, keys: int, row_group_rows: int | None,
           progress: Progress | None) -> dict[str, Any]:
    import pyarrow.parquet as pq

    gen = _Generator(kind, columns, seed, classes, keys)
    fs.create_dir(path, recursive=True)
    sizes = partition_rows(rows, partitions)
    written, offset, schema = 0, 0, None
    files = partitions + (1 if kind == "transactions" else 0)
    for i, n in enumerate(sizes):
        table = gen.table(i, n, offset)
        schema = table.schema
        group = row_group_rows or max(1000, -(-n // 4))
        target = f"{path}/{part_name(i)}"
        pq.write_table(table, target, filesystem=fs, row_group_size=group)
        written += fs.get_file_info(target).size or 0
        offset += n
        if progress:
            progress(i + 1, files, written)
    if kind == "transactions":
        target = f"{path}/{DIMENSION_DIR}/{part_name(0)}"
        fs.create_dir(f"{path}/{DIMENSION_DIR}", recursive=True)
        pq.write_table(gen.dimension(), target, filesystem=fs)
        written += fs.get_file_info(target).size or 0
        if progress:
            progress(files, files, written)
    assert schema is not None  # partitions >= 1
    manifest = {
        "kind": kind, "rows": rows, "columns": len(schema) if kind == "transactions" else columns,
        "partitions": partitions, "seed": seed, "bytes": written,
        "schema": [{"name": f.name, "type": str(f.type)} for f in schema],
        "partition_rows": sizes, "classes": None if kind == "transactions" else classes,
        "keys": keys if kind == "transactions" else None,
        "label": None if kind == "transactions" else "label",
    }
    with fs.open_output_stream(f"{path}/{MANIFEST}") as f:
        f.write(json.dumps(manifest, indent=1).encode())
    return manifest
