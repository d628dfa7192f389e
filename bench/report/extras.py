"""The report's model-backed parts, in one call for the outputs: the published reference
numbers, the scaling model and the per-worker peaks (each a ``sections.Section``), computed
once per report (the scaling fits bootstrap)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .breakdown import worker_peak_section
from .references import References, reference_section
from .scaling import Sweep, scaling_model_section, sweeps
from .sections import Section


@dataclass
class Extras:
    """What a report adds to ``sections.sections``: the reference file (or None) and the fits."""

    references: References | None = None
    fitted: list[Sweep] = field(default_factory=list)

    @classmethod
    def of(cls, records: Sequence[dict[str, Any]], references: References | None) -> Extras:
        return cls(references, sweeps(records))

    def sections(self, records: Sequence[dict[str, Any]]) -> list[Section]:
        """The extra tables, in order (those with nothing to show left out)."""
        parts = (reference_section(records, self.references),
                 scaling_model_section(records, self.fitted),
                 worker_peak_section(records))
        return [s for s in parts if s is not None]
