"""Partitioned datasets: Parquet files in a directory or S3 prefix, read by the workers.

:mod:`.layout` (the layout, the manifest, :func:`open_dataset`), :mod:`.generate`
(:func:`make_dataset`), :mod:`.readers` (per-partition reads on an engine, the record's
``data`` field, spill figures) and :mod:`.upload` (copy a local dataset to S3).
"""
from __future__ import annotations

from .generate import KINDS, make_dataset
from .layout import PartitionedData, S3Settings, filesystem_for, open_dataset
from .readers import PartitionRead, data_record, read_partitions, read_table, spilled

__all__ = ["KINDS", "PartitionRead", "PartitionedData", "S3Settings", "data_record",
           "filesystem_for", "make_dataset", "open_dataset", "read_partitions", "read_table",
           "spilled"]
