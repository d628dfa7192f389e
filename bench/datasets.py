"""Datasets: digits (ships with scikit-learn), synthetic, local files and S3 objects.

Every loader returns a :class:`Dataset` with a deterministic train/test split, so every framework
sees exactly the same rows.  The one exception, ``parquet``, is a partitioned dataset
(``bench.data``): loading it opens its manifest and lists its files, and the workers read the
partitions themselves; the driver never holds the data.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import PartitionedData, S3Settings, open_dataset
from .errors import RunError, UsageError
from .spec import DatasetSpec


@dataclass
class Dataset:
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def X(self) -> np.ndarray:
        return np.concatenate([self.X_train, self.X_test])


LoadedData = Dataset | PartitionedData
"""What :func:`load_dataset` returns: in-memory arrays, or a partitioned dataset's handle."""


def load_dataset(spec: DatasetSpec) -> LoadedData:
    if spec.name == "parquet":
        return open_dataset(spec.uri or "", S3Settings(spec.endpoint_url, spec.region,
                                                       spec.io_timeout_seconds))
    if spec.name == "digits":
        X, y = _digits(spec)
    elif spec.name == "synthetic":
        X, y = _synthetic(spec)
    elif spec.name == "file":
        path = spec.path or ""  # the spec model requires a path for "file"
        X, y = _from_bytes(_read_file(path), _format(spec, path), spec, path)
    elif spec.name == "s3":
        uri = spec.uri or ""  # and a uri for "s3"
        X, y = _from_bytes(_read_s3(spec), _format(spec, uri), spec, uri)
    else:  # pragma: no cover - the spec model rejects other names
        raise UsageError(f"dataset.name: unknown dataset {spec.name!r}")
    return split(X, y, spec)


def split(X: np.ndarray, y: np.ndarray, spec: DatasetSpec) -> Dataset:
    from sklearn.model_selection import train_test_split

    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.asarray(y)
    if len(X) < 10:
        raise UsageError(f"dataset {spec.name!r} has {len(X)} rows; at least 10 are needed")
    stratify = y if _can_stratify(y, spec.test_size) else None
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=spec.test_size, random_state=spec.seed, stratify=stratify
    )
    meta = {
        "name": spec.name,
        "samples": len(X),
        "features": int(X.shape[1]),
        "classes": len(np.unique(y)),
        "train": len(X_tr),
        "test": len(X_te),
        "bytes": int(X.nbytes),
    }
    if spec.name == "digits":
        meta["scale"] = spec.scale
    if spec.name == "synthetic":
        meta.update(kind=spec.kind, noise=spec.noise, seed=spec.seed)
    if spec.name == "file":
        meta["path"] = spec.path
    if spec.name == "s3":
        meta["uri"] = spec.uri
    return Dataset(np.ascontiguousarray(X_tr), y_tr, np.ascontiguousarray(X_te), y_te, meta)


def _can_stratify(y: np.ndarray, test_size: float) -> bool:
    _, counts = np.unique(y, return_counts=True)
    return len(counts) < len(y) * test_size and counts.min() >= 2


def _digits(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    if spec.scale > 1:
        rng = np.random.default_rng(spec.seed)
        copies = [X] + [np.clip(X + rng.normal(0, 0.5, X.shape), 0, 16)
                        for _ in range(spec.scale - 1)]
        X = np.concatenate(copies)
        y = np.tile(y, spec.scale)
    return X, y


def _synthetic(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_blobs, make_classification

    if spec.kind == "blobs":
        X, y = make_blobs(
            n_samples=spec.samples, n_features=spec.features, centers=spec.classes,
            cluster_std=1.0 + spec.noise, random_state=spec.seed,
        )
    else:
        informative = spec.informative or max(2, min(spec.features, spec.features // 2))
        if spec.classes * 2 > 2**informative:
            raise UsageError(
                f"dataset.informative: {informative} informative features cannot separate "
                f"{spec.classes} classes (need classes*2 <= 2**informative)"
            )
        X, y = make_classification(
            n_samples=spec.samples, n_features=spec.features, n_informative=informative,
            n_redundant=min(spec.features - informative, max(0, informative // 4)),
            n_classes=spec.classes, flip_y=spec.noise, class_sep=1.5, random_state=spec.seed,
        )
    return X, y


def _format(spec: DatasetSpec, where: str) -> str:
    if spec.format:
        return spec.format
    suffix = Path(where.split("?")[0]).suffix.lower()
    fmt = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}.get(suffix)
    if fmt is None:
        raise UsageError(
            f"dataset: cannot tell the format of {where!r} from its suffix; "
            "use .csv, .parquet or .npz, or set dataset.format"
        )
    return fmt


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"dataset.path: file {path!r} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"dataset.path: {path!r} is a directory, expected a file") from None
    except OSError as e:
        raise UsageError(f"dataset.path: file {path!r} cannot be read: {e.strerror}") from None


def _read_s3(spec: DatasetSpec) -> bytes:
    import boto3
    import botocore.exceptions as bce
    from botocore.config import Config

    bucket, key = (spec.uri or "")[len("s3://"):].split("/", 1)
    endpoint = spec.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=spec.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(connect_timeout=min(10, spec.io_timeout_seconds),
                      read_timeout=spec.io_timeout_seconds, retries={"max_attempts": 3}),
    )
    try:
        body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body
    except bce.NoCredentialsError:
        raise UsageError(
            f"dataset.uri {spec.uri}: no S3 credentials (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or a profile)"
        ) from None
    except bce.ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket",):
            raise UsageError(f"dataset.uri {spec.uri}: bucket {bucket!r} does not exist") from None
        if code in ("NoSuchKey", "404") or status == 404:
            raise UsageError(f"dataset.uri {spec.uri}: object {key!r} does not exist") from None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            raise UsageError(f"dataset.uri {spec.uri}: access denied ({code}); "
                             "check credentials") from None
        raise RunError(f"dataset.uri {spec.uri}: S3 error {code or status}") from None
    except (bce.ConnectTimeoutError, bce.ReadTimeoutError) as e:
        raise RunError(f"dataset.uri {spec.uri}: S3 endpoint {endpoint or 'AWS'} did not answer "
                       f"within {spec.io_timeout_seconds:g} s (3 attempts; "
                       f"dataset.ioTimeoutSeconds; {type(e).__name__})") from None
    except bce.EndpointConnectionError as e:
        raise RunError(f"dataset.uri {spec.uri}: S3 endpoint {endpoint or 'AWS'} unreachable "
                       f"({type(e).__name__})") from None


def _from_bytes(raw: bytes, fmt: str, spec: DatasetSpec,
                where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        if fmt == "npz":
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                xk = next((k for k in ("X", "x", "data") if k in z.files), None)
                yk = next((k for k in ("y", "target", "labels") if k in z.files), None)
                if xk is None or yk is None:
                    raise UsageError(
                        f"dataset {where!r}: .npz needs arrays 'X' and 'y' "
                        f"(found {', '.join(z.files) or 'none'})"
                    )
                X, y = z[xk], z[yk]
        else:
            import pandas as pd

            df = pd.read_csv(io.BytesIO(raw)) if fmt == "csv" else pd.read_parquet(io.BytesIO(raw))
            if spec.target not in df.columns:
                raise UsageError(
                    f"dataset.target: column {spec.target!r} not in {where!r} "
                    f"(columns: {', '.join(map(str, df.columns[:20]))})"
                )
            y = df[spec.target].to_numpy()
            feats = df.drop(columns=[spec.target])
            non_numeric = [c for c in feats.columns
                           if not np.issubdtype(feats[c].dtype, np.number)]
            if non_numeric:
                raise UsageError(f"dataset {where!r}: non-numeric feature columns "
                                 f"{non_numeric[:5]}")
            X = feats.to_numpy(dtype=np.float64)
    except UsageError:
        raise
    except Exception as e:  # parser errors of every kind: name the file and the format
        raise UsageError(f"dataset {where!r}: cannot be read as {fmt}: "
                         f"{type(e).__name__}: {e}") from None
    if X.ndim != 2:
        raise UsageError(f"dataset {where!r}: features must be 2-D, got shape {X.shape}")
    if len(X) != len(y):
        raise UsageError(f"dataset {where!r}: {len(X)} feature rows but {len(y)} labels")
    return X, y
