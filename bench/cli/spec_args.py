"""The flags that make or amend a benchmark spec (``testbed run``, ``testbed runner --spec``),
and the check that a local run fits this machine."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import UsageError
from bench.params import WORKLOAD_NAMES

from .options import csv_list, int_list, nonneg_int, positive_int

if TYPE_CHECKING:
    from bench.spec import BenchmarkSpec


def add_spec_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", help="Benchmark spec (YAML); defaults apply when omitted")
    p.add_argument("--framework", "-f", type=csv_list("--framework"), action="extend",
                   help="ray, dask, dask-on-ray, local (comma-separated or repeated)")
    p.add_argument("--workers", "-w", type=int_list, help="worker counts to sweep, e.g. 1,2,4")
    p.add_argument("--workload", "-l", type=csv_list("--workload"), action="extend",
                   help=", ".join(WORKLOAD_NAMES))
    p.add_argument("--dataset", help="digits, synthetic, file, s3")
    p.add_argument("--samples", type=positive_int, help="synthetic dataset rows")
    p.add_argument("--features", type=positive_int, help="synthetic dataset columns")
    p.add_argument("--path", help="dataset file (.csv, .parquet, .npz)")
    p.add_argument("--uri", help="dataset S3 object, s3://bucket/key")
    p.add_argument("--endpoint-url", help="S3 endpoint (MinIO, Ceph, ...)")
    p.add_argument("--repeats", type=positive_int, help="timed repetitions per trial")
    p.add_argument("--warmup", type=nonneg_int, help="untimed runs before the timed ones")
    p.add_argument("--timeout", type=positive_int, help="seconds per trial")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the local 1-thread/all-cores baselines")


# Dataset flags and the spec field each sets (bench.spec.DATASET_FIELDS says which datasets
# read it).
_DATASET_FLAGS = (("samples", "--samples", "samples"), ("features", "--features", "features"),
                  ("path", "--path", "path"), ("uri", "--uri", "uri"),
                  ("endpoint_url", "--endpoint-url", "endpoint_url"))

SPEC_FLAGS = ("framework", "workers", "workload", "dataset", "samples", "features", "path",
              "uri", "endpoint_url", "repeats", "warmup", "timeout")
"""The attributes ``add_spec_flags`` gives the parsed arguments (besides ``spec`` and
``no_baselines``)."""


def _check_dataset_flags(args: argparse.Namespace, dataset: str) -> None:
    """A dataset flag that the dataset in use does not read is a usage error naming the one
    that does."""
    from bench.spec import DATASET_FIELDS

    for attr, flag, field in _DATASET_FLAGS:
        if getattr(args, attr, None) is None or dataset not in DATASET_FIELDS:
            continue  # an unknown --dataset is reported by the model, naming the choices
        if field not in DATASET_FIELDS[dataset]:
            user = next(n for n, fields in DATASET_FIELDS.items() if field in fields)
            raise UsageError(f"{flag}: only the {user} dataset reads it, and the dataset is "
                             f"{dataset!r}; add --dataset {user}")


def _apply_dataset_flags(ds: dict[str, Any], args: argparse.Namespace, spec_dataset: str) -> None:
    from pydantic.alias_generators import to_camel

    from bench.spec import DATASET_FIELDS

    for flag, key in (("dataset", "name"), ("samples", "samples"), ("features", "features"),
                      ("path", "path"), ("uri", "uri"), ("endpoint_url", "endpointUrl")):
        v = getattr(args, flag, None)
        if v is not None:
            ds[key] = v
    if args.dataset and args.dataset != spec_dataset:
        # Another dataset than the spec's: drop the spec's fields for its own dataset.
        keep = {"name", "seed", "testSize"} | {to_camel(f) for f in DATASET_FIELDS.get(
            args.dataset, ())}
        for key in [k for k in ds if k not in keep]:
            ds.pop(key)


def _apply_flags(data: dict[str, Any], args: argparse.Namespace, spec_dataset: str) -> None:
    """Amend the spec's data (by alias) with the flags given."""
    if args.framework:
        data["frameworks"] = args.framework
    if args.workers:
        data["workers"] = args.workers
    if args.workload:
        data["workloads"] = [{"name": n} for n in args.workload]
    _apply_dataset_flags(data["dataset"], args, spec_dataset)
    for flag, key in (("repeats", "repeats"), ("warmup", "warmup"),
                      ("timeout", "timeoutSeconds")):
        v = getattr(args, flag, None)
        if v is not None:
            data[key] = v
    if getattr(args, "no_baselines", False):
        data["baselines"] = False


def spec_from_args(args: argparse.Namespace) -> BenchmarkSpec:
    """The spec file (or the defaults) amended by the flags; a bad spec is a UsageError."""
    from bench.spec import SpecError, load_spec, parse_spec

    try:
        spec = load_spec(args.spec)
        _check_dataset_flags(args, args.dataset or spec.dataset.name)
        data = spec.model_dump(by_alias=True, exclude_none=True)
        _apply_flags(data, args, spec.dataset.name)
        return parse_spec(data, source="spec" if not args.spec else Path(args.spec).name)
    except SpecError as e:
        raise UsageError(str(e)) from None


def check_fits_machine(spec: BenchmarkSpec, spec_path: str | None) -> None:
    """A local run starts every worker on this machine: they must fit in its memory."""
    from bench.spec import SpecError
    from bench.spec import check_fits_machine as check

    try:
        check(spec, source="spec" if not spec_path else Path(spec_path).name)
    except SpecError as e:
        raise UsageError(str(e)) from None
