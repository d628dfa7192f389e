"""Published reference numbers: a YAML file of seconds measured elsewhere, overlaid on the
report's figures as their own series and set beside the measured medians in a table.

The format (``testbed report --reference refs.yaml``; see ``examples/references/``)::

    source: where the numbers were published (a paper, a post, a thesis)
    setup: the machines, data and versions they were measured on
    entries:
      - {workload: knn, framework: dask, workers: 2, seconds: 3.78}

Reference numbers come from a different setup: the report says so wherever it shows them.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bench.errors import UsageError
from bench.frameworks import FRAMEWORKS
from bench.params import WORKLOADS
from bench.results import describe, latest_records
from bench.spec_errors import format_validation_error
from bench.spec_yaml import DuplicateKeyError, load_yaml_unique

from .formatting import MISSING, fmt_seconds
from .sections import Section
from .table import Cell, Grid


class ReferenceEntry(BaseModel):
    """One published figure: ``seconds`` for ``workload`` on ``framework`` with ``workers``."""

    model_config = ConfigDict(extra="forbid")

    workload: str = Field(description="a workload of this testbed (bench.params.WORKLOADS)")
    framework: str = Field(description="ray, dask, dask-on-ray or local")
    workers: int = Field(ge=1, description="worker processes (local: threads)")
    seconds: float = Field(gt=0, description="the published time, in seconds")

    @field_validator("workload")
    @classmethod
    def _workload(cls, v: str) -> str:
        if v not in WORKLOADS:
            raise ValueError(f"unknown workload {v!r}; expected one of {', '.join(WORKLOADS)}")
        return v

    @field_validator("framework")
    @classmethod
    def _framework(cls, v: str) -> str:
        if v not in FRAMEWORKS:
            raise ValueError(f"unknown framework {v!r}; expected one of {', '.join(FRAMEWORKS)}")
        return v


class References(BaseModel):
    """A file of published reference numbers."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, description="where the numbers were published")
    setup: str = Field(min_length=1, description="machines, data and versions they came from")
    label: str = Field("reference", min_length=1, max_length=40,
                       description="short name of the series in figures and tables")
    entries: list[ReferenceEntry] = Field(min_length=1)

    @field_validator("entries")
    @classmethod
    def _unique(cls, v: list[ReferenceEntry]) -> list[ReferenceEntry]:
        seen: set[tuple[str, str, int]] = set()
        for e in v:
            key = (e.workload, e.framework, e.workers)
            if key in seen:
                raise ValueError(f"{e.workload}/{e.framework} with {e.workers} workers is given "
                                 "twice; give each (workload, framework, workers) once")
            seen.add(key)
        return v

    def series(self, workload: str) -> dict[str, list[tuple[int, float]]]:
        """Framework -> [(workers, seconds)] sorted by workers, for one workload."""
        out: dict[str, list[tuple[int, float]]] = {}
        for e in self.entries:
            if e.workload == workload:
                out.setdefault(e.framework, []).append((e.workers, e.seconds))
        return {f: sorted(pts) for f, pts in out.items()}

    def lookup(self) -> dict[tuple[str, str, int], float]:
        return {(e.workload, e.framework, e.workers): e.seconds for e in self.entries}


def load_references(path: str | Path) -> References:
    """A validated reference file; anything wrong is a UsageError naming the field."""
    p = Path(path)
    where = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"reference file {where!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read reference file {where!r}: {e}") from None
    try:
        data = load_yaml_unique(text)
    except DuplicateKeyError as e:
        raise UsageError(f"{where}: {e}") from None
    except Exception as e:  # yaml.YAMLError: its first line says where
        raise UsageError(f"{where}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a mapping with source, setup and entries, got "
                         f"{type(data).__name__}")
    try:
        return References.model_validate(data)
    except ValidationError as e:
        raise UsageError(format_validation_error(e, prefix=where, model=References)) from None


SAYS_DIFFERENT_SETUP = (
    "Reference numbers were measured by someone else on a different setup (machines, network, "
    "data location, versions, worker sizes): compare the shape of the curves, not the "
    "absolute seconds."
)


def reference_grid(records: Sequence[dict[str, Any]], refs: References) -> Grid:
    """Each reference entry and the nearest measured trials: same workload and framework,
    same worker count when measured."""
    latest = latest_records(records)
    run = {k[0] for k in latest}
    headers = ["Workload", "Framework", "Workers", "This run: median (s)",
               f"{refs.label} (s, different setup)", "Ratio (this run / reference)"]
    keys = sorted({k for k in refs.lookup() if k[0] in run}
                  | {k for k in latest if (k[0], k[1]) in
                     {(e.workload, e.framework) for e in refs.entries}},
                  key=lambda k: (k[0], k[1], k[2]))
    ref = refs.lookup()
    body: list[list[Cell]] = []
    for key in keys:
        rec = latest.get(key) or {}
        ok = rec.get("state") == "succeeded"
        measured = describe(rec.get("seconds") or [])["median"] if ok else None
        if ok and measured is None and isinstance(rec.get("median"), (int, float)):
            measured = float(rec["median"])
        cell_m: Cell = ((fmt_seconds(measured), None) if measured is not None else
                        ("FAILED", "failed") if rec and not ok else (MISSING, "missing"))
        r = ref.get(key)
        ratio = f"{measured / r:.2f}×" if measured is not None and r else MISSING
        body.append([(key[0], None), (key[1], None), (str(key[2]), None), cell_m,
                     (fmt_seconds(r), None) if r is not None else (MISSING, "missing"),
                     (ratio, None)])
    return headers, body


def reference_section(records: Sequence[dict[str, Any]], refs: References | None
                      ) -> Section | None:
    """The report's table of reference numbers (None without a reference file)."""
    if refs is None:
        return None
    intro = (f"Source: {refs.source.rstrip('.')}. Setup: {refs.setup.rstrip('.')}. "
             + SAYS_DIFFERENT_SETUP)
    run = {str(r.get("workload")) for r in records}
    left_out = sorted({e.workload for e in refs.entries} - run)
    if left_out:
        intro += f" Reference workloads not run here, left out: {', '.join(left_out)}."
    return Section(f"Published reference numbers ({refs.label})", intro,
                   grid=reference_grid(records, refs), numeric_from=3)
