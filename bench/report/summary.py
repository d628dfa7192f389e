"""The report's summary in sentences: who is faster where and by how much (the ratio of the
medians, judged with the noise rule ``bench.results.is_beyond_noise``), what failed, which run
was cheapest, and which trials are flagged as noisy."""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from bench.frameworks import is_baseline
from bench.results import NOISE_FRACTION, is_beyond_noise, latest_records

from .cost import TrialCost, cheapest
from .formatting import column_label, fmt_amount, fmt_number, fmt_seconds, shorten
from .stats import ReportOptions
from .table import Flags, Key, workloads

Row = dict[str, Any]


def _label(key: Key) -> str:
    return column_label(key[1], key[2])


def _ok(rows: Sequence[Row]) -> dict[Key, Row]:
    return {(r["workload"], r["framework"], r["workers"]): r for r in rows
            if r["state"] == "succeeded" and r.get("median")}


def _ratio_range(ratios: list[float]) -> str:
    lo, hi = min(ratios), max(ratios)
    return f"{lo:.2f}×" if round(lo, 2) == round(hi, 2) else f"{lo:.2f}×–{hi:.2f}×"


def head_to_head(rows: Sequence[Row], seconds: dict[Key, list[float]]) -> list[str]:
    """One sentence per pair of distributed frameworks run on the same workload with the same
    worker count: how often each was faster beyond noise, by what ratio of medians, and which
    pairs were within noise."""
    ok = _ok(rows)
    frameworks = list(dict.fromkeys(k[1] for k in ok if not is_baseline(k[1])))
    out = []
    for fa, fb in itertools.combinations(frameworks, 2):
        wins: dict[str, list[tuple[str, float]]] = {fa: [], fb: []}
        ties = []
        for (workload, f, workers) in ok:
            kb = (workload, fb, workers)
            if f != fa or kb not in ok:
                continue
            ka = (workload, fa, workers)
            ma, mb = ok[ka]["median"], ok[kb]["median"]
            where = f"{workload} ×{workers}"
            if not is_beyond_noise(seconds.get(ka, []), seconds.get(kb, [])):
                ties.append(where)
            elif ma < mb:
                wins[fa].append((where, mb / ma))
            else:
                wins[fb].append((where, ma / mb))
        n = sum(len(w) for w in wins.values()) + len(ties)
        if not n:
            continue
        parts = []
        for f, won in sorted(wins.items(), key=lambda kv: -len(kv[1])):
            if won:
                where = ", ".join(w for w, _ in won[:3]) + (", …" if len(won) > 3 else "")
                parts.append(f"{f} faster in {len(won)} ({where}; "
                             f"{_ratio_range([r for _, r in won])} by ratio of medians)")
        if ties:
            where = ", ".join(ties[:3]) + (", …" if len(ties) > 3 else "")
            parts.append(f"{len(ties)} within noise ({where})")
        out.append(f"{fa} vs {fb} on the same workload and worker count ({n} pair"
                   f"{'' if n == 1 else 's'}): " + "; ".join(parts) + ".")
    return out


def _best(ok: dict[Key, Row], workload: str, baseline: bool) -> Key | None:
    keys = [k for k in ok if k[0] == workload and is_baseline(k[1]) == baseline]
    return min(keys, key=lambda k: ok[k]["median"]) if keys else None


def fastest(rows: Sequence[Row], seconds: dict[Key, list[float]]) -> list[str]:
    """Per workload: the fastest distributed run, how it compares with the best of each other
    framework, and with the best local baseline."""
    ok = _ok(rows)
    out = []
    for workload in workloads(rows):
        best = _best(ok, workload, baseline=False)
        local = _best(ok, workload, baseline=True)
        if best is None:
            continue
        m = ok[best]["median"]
        text = f"{workload}: fastest distributed run {_label(best)} ({fmt_seconds(m)} s)"
        others = []
        for f in dict.fromkeys(k[1] for k in ok if k[0] == workload and not is_baseline(k[1])):
            if f == best[1]:
                continue
            k = min((k for k in ok if k[0] == workload and k[1] == f),
                    key=lambda k: ok[k]["median"])
            ratio = ok[k]["median"] / m
            noise = "" if is_beyond_noise(seconds.get(best, []), seconds.get(k, [])) else \
                ", within noise"
            others.append(f"{ratio:.2f}× faster than {f}'s best {_label(k)} "
                          f"({fmt_seconds(ok[k]['median'])} s){noise}")
        if others:
            text += ", " + "; ".join(others)
        if local is not None:
            lm = ok[local]["median"]
            noise = "" if is_beyond_noise(seconds.get(local, []), seconds.get(best, [])) else \
                " (within noise)"
            base = f"the local baseline {_label(local)} ({fmt_seconds(lm)} s)"
            if lm < m:
                text += f"; {base} is {m / lm:.2f}× faster{noise}"
            else:
                text += f"; {lm / m:.2f}× faster than {base}{noise}"
        out.append(text + ".")
    return out


def failures(rows: Sequence[Row]) -> list[str]:
    failed = [r for r in rows if r["state"] != "succeeded"]
    if not failed:
        return []
    names = ", ".join(f"{r['workload']} {column_label(r['framework'], r['workers'])}"
                      + (f" ({shorten(r['error'], 60)})" if r.get("error") else "")
                      for r in failed[:4]) + (", …" if len(failed) > 4 else "")
    return [f"{len(failed)} trial{'' if len(failed) == 1 else 's'} failed: {names}."]


def money_label(options: ReportOptions) -> str | None:
    """The money column's heading, naming the prices; None without prices."""
    if not options.priced:
        return None
    prices = []
    if options.price_core_hour is not None:
        prices.append(f"{fmt_number(options.price_core_hour)}/core-h held")
    if options.price_gb_hour is not None:
        prices.append(f"{fmt_number(options.price_gb_hour)}/GB-h")
    return "Cost per run at " + " + ".join(prices)


def cheapest_sentence(all_costs: dict[Key, TrialCost], options: ReportOptions) -> list[str]:
    """Per workload, the cheapest run (and the cheapest distributed one, when the local
    baseline is cheapest): by money when priced, else by core-seconds held."""
    by_money = options.priced
    best = cheapest(all_costs, by_money)
    distributed = cheapest({k: c for k, c in all_costs.items() if not is_baseline(k[1])},
                           by_money)
    if not best:
        return []

    def amount(c: TrialCost) -> str:
        return f"{fmt_amount(c.money)}" if by_money else f"{fmt_amount(c.core_seconds)} core-s"

    parts = []
    for workload, (key, c) in best.items():
        text = f"{workload}: {_label(key)} ({amount(c)})"
        if is_baseline(key[1]) and workload in distributed:
            dk, dc = distributed[workload]
            text += f", of the distributed runs {_label(dk)} ({amount(dc)})"
        parts.append(text)
    if by_money:
        what = "money per run at " + str(money_label(options)).removeprefix("Cost per run at ")
    else:
        what = "core-seconds held per run (cores held × median compute seconds)"
    return [f"Cheapest by {what}: " + "; ".join(parts) + "."]


def flagged(flags: Flags) -> list[str]:
    if not flags:
        return []
    parts = [f"{k[0]} {_label(k)}: {', '.join(why)}" for k, why in flags.items()]
    return [f"Flagged as less reliable ({len(parts)}): " + "; ".join(parts) + "."]


def sentences(rows: Sequence[Row], records: Sequence[dict[str, Any]], flags: Flags,
              all_costs: dict[Key, TrialCost], options: ReportOptions) -> list[str]:
    """Every sentence of the summary, in order."""
    seconds = {k: list(r.get("seconds") or []) for k, r in latest_records(records).items()}
    return (head_to_head(rows, seconds) + fastest(rows, seconds) + failures(rows)
            + cheapest_sentence(all_costs, options) + flagged(flags))


NOISE_RULE = (f"Faster means the medians differ by more than both trials' IQR and by more than "
              f"{NOISE_FRACTION * 100:g} %; otherwise the difference is within noise.")
