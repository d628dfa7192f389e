"""Copy a local partitioned dataset to S3 (``testbed data upload``), the manifest last, so a
dataset with a manifest in S3 is whole."""
from __future__ import annotations

import os
from collections.abc import Callable

from bench.errors import UsageError

from .layout import MANIFEST, S3Settings, filesystem_for, open_dataset, split_uri, storage_error

CHUNK = 8 * 2**20
UploadProgress = Callable[[int, int], None]
"""Called as bytes go: (bytes copied so far, bytes in all)."""


def upload(local_dir: str, uri: str, *, s3: S3Settings | None = None, overwrite: bool = False,
           progress: UploadProgress | None = None) -> int:
    """Copy the dataset in ``local_dir`` (checked with :func:`open_dataset`: a manifest and
    every partition) to ``uri`` (``s3://bucket/prefix``); returns the bytes copied."""
    import pyarrow.fs as pafs

    if not uri.startswith("s3://"):
        raise UsageError(f"uri: {uri!r} is not of the form s3://bucket/prefix")
    is_s3, _ = split_uri(local_dir)
    if is_s3:
        raise UsageError(f"local_dir: {local_dir!r} must be a local directory")
    if not os.path.isdir(local_dir):
        raise UsageError(f"local_dir: {local_dir!r} is not a directory")
    open_dataset(local_dir)  # a whole dataset, or a clear error
    root = os.path.abspath(local_dir)
    files = sorted(os.path.relpath(os.path.join(d, f), root)
                   for d, _, fs in os.walk(root) for f in fs)
    files.sort(key=lambda f: f == MANIFEST)  # the manifest last
    total = sum(os.path.getsize(os.path.join(root, f)) for f in files)
    fs, path = filesystem_for(uri, s3)
    try:
        if fs.get_file_info(f"{path}/{MANIFEST}").type != pafs.FileType.NotFound and not overwrite:
            raise UsageError(f"uri {uri}: a dataset exists there already (use --overwrite)")
        done = 0
        for rel in files:
            with open(os.path.join(root, rel), "rb") as src, \
                    fs.open_output_stream(f"{path}/{rel}") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
    except OSError as e:
        raise storage_error(f"uri {uri}", e, "upload failed") from None
    if progress and total == 0:
        progress(0, 0)
    return done
