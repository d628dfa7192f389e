"""A partitioned dataset on disk or in S3: its layout, its manifest and how to open it.

Layout (one dataset = one directory or ``s3://bucket/prefix``)::

    <uri>/_manifest.json               {kind, rows, columns, partitions, seed, bytes, schema, ...}
    <uri>/part-00000.parquet ...       one Parquet file per partition (several row groups each)
    <uri>/customers/part-00000.parquet the dimension table (``transactions`` only)

:func:`open_dataset` reads the manifest only (a few hundred bytes) and lists the partition
files: the driver never reads the data. Whoever reads a partition (a worker) calls
:meth:`PartitionedData.filesystem` in its own process, so S3 credentials come from that
process's environment (locally the driver's, inherited; on Kubernetes the credentials
Secret) and are never pickled into a task.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from bench.errors import RunError, UsageError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

MANIFEST = "_manifest.json"
DIMENSION_DIR = "customers"
MANIFEST_KEYS = ("kind", "rows", "columns", "partitions", "seed", "bytes", "schema")


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


@dataclass(frozen=True)
class S3Settings:
    """Where S3 is and how long to wait for it: the same handling as the ``s3`` dataset
    (``bench.datasets._read_s3``): ``endpoint_url`` or ``AWS_ENDPOINT_URL``, ``region`` or
    ``AWS_DEFAULT_REGION`` or us-east-1; credentials from the reading process's environment
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, else the AWS
    default chain)."""

    endpoint_url: str | None = None
    region: str | None = None
    io_timeout_seconds: float = 60.0

    def filesystem(self) -> pafs.S3FileSystem:
        import pyarrow.fs as pafs

        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        kw: dict[str, Any] = {
            "region": self.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            "connect_timeout": min(10.0, self.io_timeout_seconds),
            "request_timeout": self.io_timeout_seconds,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
        }
        if endpoint:
            parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
            kw.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https",
                      force_virtual_addressing=False)
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if key and secret:
            kw.update(access_key=key, secret_key=secret,
                      session_token=os.environ.get("AWS_SESSION_TOKEN") or None)
        return pafs.S3FileSystem(**kw)


def split_uri(uri: str) -> tuple[bool, str]:
    """(is S3, path without the scheme): ``s3://b/p`` → (True, ``b/p``); a local path →
    (False, its absolute path)."""
    if uri.startswith("s3://"):
        path = uri[len("s3://"):].strip("/")
        if not path or path.startswith("/"):
            raise UsageError(f"dataset uri {uri!r} is not of the form s3://bucket/prefix")
        return True, path
    if "://" in uri:
        raise UsageError(f"dataset uri {uri!r}: only local directories and s3://bucket/prefix "
                         "are supported")
    return False, os.path.abspath(os.path.expanduser(uri)).rstrip("/") or "/"


def is_s3_uri(uri: str) -> bool:
    return uri.startswith("s3://")


def filesystem_for(uri: str, s3: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem that holds ``uri`` and the path of ``uri`` on it."""
    import pyarrow.fs as pafs

    is_s3, path = split_uri(uri)
    if is_s3:
        return (s3 or S3Settings()).filesystem(), path
    return pafs.LocalFileSystem(), path


def storage_error(where: str, e: OSError, doing: str) -> UsageError | RunError:
    """One line for a filesystem error: a missing bucket or denied access is the user's to fix
    (UsageError); anything else (an endpoint down, a timeout) is a run failure."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    flat = msg.lower().replace("_", "")
    if "nosuchbucket" in flat or "bucket does not exist" in flat:
        return UsageError(f"{where}: the bucket does not exist ({msg})")
    if any(k in flat for k in ("accessdenied", "invalidaccesskeyid", "signaturedoesnotmatch",
                               "forbidden")):
        return UsageError(f"{where}: access denied ({msg}); check the credentials "
                          "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
    return RunError(f"{where}: {doing}: {msg}")


def join(uri: str, name: str) -> str:
    return uri.rstrip("/") + "/" + name


@dataclass(frozen=True)
class PartitionedData:
    """An opened partitioned dataset: its manifest and where its files are. Small and
    picklable: tasks get it and read their own partitions (``bench.data.readers``)."""

    uri: str
    manifest: dict[str, Any]
    partitions: list[str]
    """Full URIs of the partition files, in partition order."""
    dimension_uri: str | None = None
    """The dimension table's file (``transactions``), or None."""
    sizes: list[int] = field(default_factory=list)
    """Bytes of each partition file, as listed when opened."""
    s3: S3Settings = field(default_factory=S3Settings)

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """(filesystem, the dataset's path on it): call it in the process that reads."""
        return filesystem_for(self.uri, self.s3)

    def path(self, uri: str) -> str:
        """A file URI of this dataset as a path on :meth:`filesystem`."""
        return split_uri(uri)[1]

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def meta(self) -> dict[str, Any]:
        """The record's ``dataset`` field: what the manifest says, not read from the data."""
        m = self.manifest
        return {"name": "parquet", "uri": self.uri, "kind": m["kind"], "samples": m["rows"],
                "features": m["columns"], "partitions": m["partitions"], "seed": m["seed"],
                "bytes": self.total_bytes, "classes": m.get("classes")}


def _read_manifest(fs: pafs.FileSystem, path: str, uri: str) -> dict[str, Any]:
    import pyarrow.fs as pafs

    where = join(uri, MANIFEST)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            bucket = path.split("/")[0]
            if uri.startswith("s3://") and \
                    fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise UsageError(f"dataset.uri {uri}: the bucket {bucket!r} does not exist")
            raise UsageError(f"dataset.uri {uri}: does not exist")
        with fs.open_input_stream(f"{path}/{MANIFEST}") as f:
            raw = f.read()
    except FileNotFoundError:
        raise UsageError(f"dataset.uri {uri}: no {MANIFEST}; a partitioned dataset is made by "
                         "`testbed data make`") from None
    except OSError as e:
        raise storage_error(f"dataset.uri {uri}", e, f"cannot read {MANIFEST}") from None
    try:
        manifest: dict[str, Any] = json.loads(raw)
    except ValueError:
        raise UsageError(f"dataset.uri {where}: not valid JSON") from None
    missing = [k for k in MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise UsageError(f"dataset.uri {where}: missing {', '.join(missing)}")
    if not isinstance(manifest["partitions"], int) or manifest["partitions"] < 1:
        raise UsageError(f"dataset.uri {where}: partitions must be a positive integer")
    return manifest


def open_dataset(uri: str, s3: S3Settings | None = None) -> PartitionedData:
    """Open the dataset at ``uri``: its manifest and one listing, never the data."""
    import pyarrow.fs as pafs

    s3 = s3 or S3Settings()
    fs, path = filesystem_for(uri, s3)
    manifest = _read_manifest(fs, path, uri)
    try:
        listing = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        dim_info = fs.get_file_info(f"{path}/{DIMENSION_DIR}/{part_name(0)}")
    except OSError as e:
        raise storage_error(f"dataset.uri {uri}", e, "cannot list") from None
    sizes = {os.path.basename(i.path): i.size for i in listing if i.type == pafs.FileType.File}
    names = [part_name(i) for i in range(manifest["partitions"])]
    missing = [n for n in names if n not in sizes]
    if missing:
        raise UsageError(f"dataset.uri {uri}: {len(missing)} of {len(names)} partition files "
                         f"missing (first: {missing[0]})")
    # A local dataset is named by its absolute path: the workers read it themselves, and a
    # Ray worker runs in its own session folder, not in the driver's working directory.
    base = uri.rstrip("/") if is_s3_uri(uri) else path
    dimension = None
    if dim_info.type == pafs.FileType.File:
        dimension = join(base, f"{DIMENSION_DIR}/{part_name(0)}")
    return PartitionedData(uri=base, manifest=manifest,
                           partitions=[join(base, n) for n in names],
                           dimension_uri=dimension, sizes=[int(sizes[n] or 0) for n in names],
                           s3=s3)
