"""Scaling beyond the machine: Amdahl's law and the Universal Scalability Law fitted to each
framework's measured worker sweep, and extrapolated. A model, not a measurement.

* Amdahl: ``C(N) = N / (1 + σ(N−1))``, σ the serial fraction.
* USL (N. J. Gunther, *Guerrilla Capacity Planning*, 2007):
  ``C(N) = N / (1 + α(N−1) + βN(N−1))``, α contention, β coherency (crosstalk) cost; with
  β > 0 the speedup peaks at ``N* = sqrt((1−α)/β)`` and then falls.

Both are written for a speedup relative to one worker.  The sweep's speedup is relative to its
smallest worker count ``N0`` (as the report's Scaling table), so the fitted curve is
``C(N) / C(N0)``, fitted by least squares on its linear form (see :func:`fit`).  Parameters are
bounded: 0 ≤ σ, α ≤ 1 and β ≥ 0.

Uncertainty: a bootstrap over the timed repeats (each worker count's repeats resampled with
replacement, medians and speedups recomputed, the model refitted; 5th–95th percentiles).  It
measures how far run-to-run noise moves the fit, not whether the model is right: with three
or four worker counts, an extrapolation to 64 workers is a guess the band cannot make honest.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.frameworks import is_baseline
from bench.results import latest_records

from .formatting import fmt_ratio
from .sections import Section
from .table import Cell, Grid

EXTRAPOLATE_TO = (8, 16, 64)
"""Worker counts the model's speedup is extrapolated to."""
MIN_POINTS = 3
"""Fewest worker counts a fit accepts: USL has two parameters."""
BOOTSTRAP = 200
BAND = (5.0, 95.0)
"""Percentiles of the bootstrap that bound the band (a 90 % interval)."""


def usl(n: Any, alpha: float, beta: float) -> Any:
    """Gunther's USL capacity ``N / (1 + α(N−1) + βN(N−1))`` (numpy arrays or floats)."""
    n = np.asarray(n, dtype=float)
    return n / (1.0 + alpha * (n - 1.0) + beta * n * (n - 1.0))


def amdahl(n: Any, sigma: float) -> Any:
    """Amdahl's speedup ``N / (1 + σ(N−1))``: the USL with β = 0."""
    return usl(n, sigma, 0.0)


@dataclass(frozen=True)
class Model:
    name: str
    params: tuple[str, ...]
    curve: Callable[..., Any]
    upper: tuple[float, ...]


MODELS = (
    Model("Amdahl", ("σ",), amdahl, (1.0,)),
    Model("USL", ("α", "β"), usl, (1.0, np.inf)),
)


def _relative(model: Model, n0: int) -> Callable[..., Any]:
    def f(n: Any, *p: float) -> Any:
        return model.curve(n, *p) / model.curve(float(n0), *p)
    return f


def fit(model: Model, workers: Sequence[int], speedups: Sequence[float]) -> tuple[float, ...]:
    """The model's parameters fitted to ``speedups`` relative to the smallest of ``workers``.
    Fewer than ``MIN_POINTS`` distinct worker counts is a ValueError.

    Least squares on the model's linear form (the linearisation of Gunther's *Guerrilla
    Capacity Planning*, generalised to a base of ``N0`` workers): with
    ``D(N) = 1 + α(N−1) + βN(N−1)``, the speedup ``S = (N/N0)·D(N0)/D(N)`` gives
    ``y = (N/N0)/S = D(N)/D(N0)``, i.e.
    ``α((N−1) − y(N0−1)) + β(N(N−1) − yN0(N0−1)) = y − 1``: linear in α and β, solved within
    the bounds (exact data gives the parameters back exactly)."""
    if len(set(workers)) < MIN_POINTS:
        raise ValueError(f"a {model.name} fit needs at least {MIN_POINTS} worker counts, "
                         f"got {len(set(workers))}")
    n = np.asarray(workers, dtype=float)
    s = np.asarray(speedups, dtype=float)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("speedups must be positive numbers")
    n0 = n.min()
    y = (n / n0) / s
    columns = [(n - 1) - y * (n0 - 1), n * (n - 1) - y * n0 * (n0 - 1)][:len(model.params)]
    return _bounded_lstsq(np.column_stack(columns), y - 1, model.upper)


def _bounded_lstsq(a: Any, b: Any, upper: Sequence[float]) -> tuple[float, ...]:
    """``min |a·x − b|²`` with ``0 ≤ x ≤ upper``, for one or two parameters: the problem is
    convex, so its minimum is the best feasible least-squares solution over the active sets
    (each parameter free, at 0 or at its upper bound)."""
    import itertools

    k = a.shape[1]
    best: tuple[float, Any] | None = None
    for fixed in itertools.product(*[(None, 0.0, u) if np.isfinite(u) else (None, 0.0)
                                     for u in upper]):
        x = np.array([0.0 if f is None else f for f in fixed])
        free = [i for i in range(k) if fixed[i] is None]
        if free:
            rhs = b - a[:, [i for i in range(k) if i not in free]] @ x[
                [i for i in range(k) if i not in free]]
            x[free] = np.linalg.lstsq(a[:, free], rhs, rcond=None)[0]
        if np.any(x < -1e-12) or np.any(x > np.asarray(upper) + 1e-12):
            continue
        sse = float(np.sum((a @ x - b) ** 2))
        if best is None or sse < best[0] - 1e-15:
            best = (sse, np.clip(x, 0.0, upper))
    assert best is not None  # every parameter at 0 is always feasible
    return tuple(float(v) for v in best[1])


def predict(model: Model, params: Sequence[float], n0: int, n: Any) -> Any:
    """The fitted speedup at ``n`` workers relative to ``n0``."""
    return _relative(model, n0)(np.asarray(n, dtype=float), *params)


@dataclass
class ModelFit:
    model: Model
    params: tuple[float, ...]
    rmse: float
    band: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Parameter name -> (low, high) bootstrap interval (empty without spread)."""
    at: dict[int, tuple[float, float | None, float | None]] = field(default_factory=dict)
    """Worker count -> (speedup, low, high) extrapolated."""
    samples: list[tuple[float, ...]] = field(default_factory=list)
    """Bootstrap parameter sets (for drawing the band)."""


@dataclass
class Sweep:
    """One framework's worker sweep of one workload, and its fits (or why there are none)."""

    workload: str
    framework: str
    repeats: dict[int, list[float]]
    fits: list[ModelFit] = field(default_factory=list)
    reason: str | None = None

    @property
    def base(self) -> int:
        return min(self.repeats)

    @property
    def medians(self) -> dict[int, float]:
        return {n: float(np.median(s)) for n, s in sorted(self.repeats.items())}

    @property
    def speedups(self) -> dict[int, float]:
        m = self.medians
        return {n: m[self.base] / v for n, v in m.items()}

    def band_curve(self, fitted: ModelFit, xs: Any) -> tuple[Any, Any] | None:
        """(low, high) of the bootstrap's curves at ``xs``; None without spread."""
        if not fitted.samples:
            return None
        curves = np.array([predict(fitted.model, p, self.base, xs) for p in fitted.samples])
        return np.percentile(curves, BAND[0], axis=0), np.percentile(curves, BAND[1], axis=0)


def _bootstrap(model: Model, repeats: dict[int, list[float]], rng: np.random.Generator,
               rounds: int) -> list[tuple[float, ...]]:
    ns = sorted(repeats)
    out = []
    for _ in range(rounds):
        med = {n: float(np.median(rng.choice(repeats[n], size=len(repeats[n])))) for n in ns}
        sp = [med[ns[0]] / med[n] for n in ns]
        try:
            out.append(fit(model, ns, sp))
        except ValueError:  # a resample without a usable speedup
            continue
    return out


def fit_sweep(sweep: Sweep, rounds: int = BOOTSTRAP, seed: int = 0) -> Sweep:
    """Fill ``sweep.fits`` (or ``sweep.reason``); the bootstrap is seeded: the same records
    give the same report."""
    if len(sweep.repeats) < MIN_POINTS:
        sweep.reason = (f"no fit: {len(sweep.repeats)} worker count(s) measured, a fit needs "
                        f"at least {MIN_POINTS}")
        return sweep
    ns = sorted(sweep.repeats)
    sp = [sweep.speedups[n] for n in ns]
    spread = any(len(set(s)) > 1 for s in sweep.repeats.values())
    for model in MODELS:
        try:
            params = fit(model, ns, sp)
        except ValueError as e:
            sweep.reason = f"no {model.name} fit: {e}"
            continue
        resid = np.asarray(predict(model, params, ns[0], ns)) - np.asarray(sp)
        mf = ModelFit(model, params, float(np.sqrt(np.mean(resid**2))))
        if spread:
            mf.samples = _bootstrap(model, sweep.repeats, np.random.default_rng(seed), rounds)
        arr = np.array(mf.samples) if mf.samples else None
        if arr is not None:
            for i, name in enumerate(model.params):
                lo, hi = np.percentile(arr[:, i], BAND)
                mf.band[name] = (float(lo), float(hi))
        for n in EXTRAPOLATE_TO:
            value = float(predict(model, params, ns[0], n))
            if arr is not None:
                vals = [float(predict(model, p, ns[0], n)) for p in mf.samples]
                lo, hi = np.percentile(vals, BAND)
                mf.at[n] = (value, float(lo), float(hi))
            else:
                mf.at[n] = (value, None, None)
        sweep.fits.append(mf)
    return sweep


def sweeps(records: Sequence[dict[str, Any]], rounds: int = BOOTSTRAP) -> list[Sweep]:
    """One fitted sweep per (workload, distributed framework) with succeeded trials."""
    groups: dict[tuple[str, str], dict[int, list[float]]] = {}
    for (workload, framework, workers), rec in latest_records(records).items():
        if is_baseline(framework) or rec.get("state") != "succeeded":
            continue
        seconds = [float(s) for s in rec.get("seconds") or [] if s]
        if not seconds and rec.get("median"):
            seconds = [float(rec["median"])]
        if seconds:
            groups.setdefault((workload, framework), {})[workers] = seconds
    return [fit_sweep(Sweep(w, f, reps), rounds) for (w, f), reps in groups.items()]


def fmt_params(mf: ModelFit) -> str:
    """``α=0.10 [0.08–0.12], β=0.0100`` (bootstrap interval in brackets when there is one)."""
    parts = []
    for name, value in zip(mf.model.params, mf.params, strict=True):
        text = f"{name}={_num(value)}"
        if name in mf.band:
            lo, hi = mf.band[name]
            text += f" [{_num(lo)}–{_num(hi)}]"
        parts.append(text)
    return ", ".join(parts)


def _num(v: float) -> str:
    return f"{v:.3g}" if v and abs(v) < 0.01 else f"{v:.3f}"


def fmt_at(value: tuple[float, float | None, float | None]) -> str:
    v, lo, hi = value
    text = fmt_ratio(v)
    if lo is not None and hi is not None:
        text += f" ({lo:.2f}–{hi:.2f})"
    return text


def peak(mf: ModelFit) -> int | None:
    """Worker count where the USL speedup peaks, ``sqrt((1−α)/β)``; None for no peak."""
    if mf.model.name != "USL" or mf.params[1] <= 0:
        return None
    return round(math.sqrt((1 - mf.params[0]) / mf.params[1]))


def model_grid(fitted: Sequence[Sweep]) -> Grid:
    headers = ["Workload", "Framework", "Measured at", "Model", "Parameters [90 % band]",
               "Fit RMSE"] + [f"Speedup @{n} (band)" for n in EXTRAPOLATE_TO]
    body: list[list[Cell]] = []
    for s in fitted:
        where = f"{', '.join(str(n) for n in sorted(s.repeats))} (vs {s.base})"
        if not s.fits:
            body.append([(s.workload, None), (s.framework, None), (where, None),
                         (s.reason or "no fit", "missing"), ("", None), ("", None)]
                        + [("", None)] * len(EXTRAPOLATE_TO))
            continue
        for mf in s.fits:
            params = fmt_params(mf)
            if (p := peak(mf)) is not None:
                params += f"; peak at ≈{p} workers"
            line: list[Cell] = [(s.workload, None), (s.framework, None), (where, None),
                                (mf.model.name, None), (params, None), (f"{mf.rmse:.3f}", None)]
            body.append(line + [(fmt_at(mf.at[n]), None) for n in EXTRAPOLATE_TO])
    return headers, body


MODEL_INTRO = (
    "A MODEL, not a measurement: Amdahl's law (C(N) = N / (1 + σ(N−1)), σ = serial fraction) "
    "and Gunther's Universal Scalability Law (C(N) = N / (1 + α(N−1) + βN(N−1)), α = "
    "contention, β = coherency cost) fitted by least squares to each framework's median "
    "speedups relative to its smallest worker count, then extrapolated beyond the workers "
    "measured. Bands are the 5th–95th percentiles of a bootstrap over the timed repeats "
    f"({BOOTSTRAP} resamples): they show how much run-to-run noise moves the fit, not whether "
    "the model holds. No band: every worker count had identical repeats (or a single one). "
    "A sweep needs at least 3 worker counts to be fitted."
)


def scaling_model_section(records: Sequence[dict[str, Any]],
                          fitted: Sequence[Sweep] | None = None) -> Section | None:
    """The report's table of the fits (None when no distributed trial succeeded)."""
    fitted = sweeps(records) if fitted is None else fitted
    if not fitted:
        return None
    return Section("Scaling model: Amdahl and USL extrapolation (a model, not a measurement)",
                   MODEL_INTRO, grid=model_grid(fitted), numeric_from=5)
