"""Statistics of a study, as pure functions of lists of numbers: the supernet's error against training from
scratch, rank agreement, seeded bootstrap intervals, spread over seeds, regret of picking by the supernet.

Kendall's tau-b and Spearman's rho are scipy.stats'; the bootstrap is the percentile bootstrap (Efron &
Tibshirani 1993, ch. 13) over archs."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as sps

from mosnas.errors import ConfigError


def _pair(x: Sequence[float], y: Sequence[float], least: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) < least:
        raise ConfigError(f"need two equal-length lists of >= {least} values, got {len(a)} and {len(b)}")
    return a, b


def mean_gap(supernet: Sequence[float], scratch: Sequence[float]) -> float:
    """Mean of (supernet - scratch): the constant offset of the supernet's estimate (same unit, e.g. BLEU)."""
    a, b = _pair(supernet, scratch)
    return float(np.mean(a - b))


def mae(supernet: Sequence[float], scratch: Sequence[float]) -> float:
    """Mean absolute error |supernet - scratch| (same unit): the reference's 'mean |supernet BLEU - scratch BLEU|'."""
    a, b = _pair(supernet, scratch)
    return float(np.mean(np.abs(a - b)))


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (scipy.stats.kendalltau) of two rankings; nan when either list is constant."""
    a, b = _pair(x, y, least=2)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(sps.kendalltau(a, b).statistic)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (scipy.stats.spearmanr) of two rankings; nan when either list is constant."""
    a, b = _pair(x, y, least=2)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(sps.spearmanr(a, b).statistic)


STATISTICS: dict[str, Callable[[Sequence[float], Sequence[float]], float]] = {
    "mean_gap": mean_gap,
    "mae": mae,
    "kendall_tau": kendall,
    "spearman_rho": spearman,
}


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float], num_items: int, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(indices)` over `num_items` items (archs) drawn with
    replacement, `resamples` times from a numpy generator seeded by `seed`; resamples whose statistic is nan
    (e.g. a rank correlation of a constant resample) are left out. (nan, nan) when none is finite."""
    if num_items < 1 or resamples < 1 or not 0 < level < 1:
        raise ConfigError(
            f"bootstrap: need items >= 1, resamples >= 1, 0 < level < 1; got {num_items}, {resamples}, {level}"
        )
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, num_items, num_items)) for _ in range(resamples)])
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def with_intervals(
    supernet: Sequence[float], scratch: Sequence[float], resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Every statistic of STATISTICS of one seed's archs, with its bootstrap interval over the archs:
    {name: {"value", "lo", "hi"}}."""
    a, b = _pair(supernet, scratch, least=2)
    out = {}
    for name, fn in STATISTICS.items():
        lo, hi = bootstrap_ci(lambda idx, fn=fn: fn(a[idx], b[idx]), len(a), resamples, seed)
        out[name] = {"value": fn(a, b), "lo": lo, "hi": hi}
    return out


def seed_mean_ci(
    pairs: Sequence[tuple[Sequence[float], Sequence[float]]],
    statistic: Callable[[Sequence[float], Sequence[float]], float],
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of the mean over seeds of `statistic(supernet, scratch)`, resampling the archs
    (the same indices for every seed: every seed scores the same arch set)."""
    arrays = [_pair(x, y, least=2) for x, y in pairs]
    n = len(arrays[0][0])
    if any(len(a) != n for a, _ in arrays):
        raise ConfigError("every seed must score the same archs")

    def seed_mean(idx: np.ndarray) -> float:
        values = [v for a, b in arrays if math.isfinite(v := statistic(a[idx], b[idx]))]
        return float(np.mean(values)) if values else float("nan")

    return bootstrap_ci(seed_mean, n, resamples, seed)


def mean_std(values: Sequence[float]) -> dict[str, float | int | None]:
    """{"mean", "std", "n"} of the finite values: std is the sample standard deviation (ddof 1), None for
    fewer than 2 values; mean None when there is none."""
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    mean = float(np.mean(v)) if v else None
    std = float(np.std(v, ddof=1)) if len(v) > 1 else None
    return {"mean": mean, "std": std, "n": len(v)}


def regret(
    selection: Sequence[float], truth: Sequence[float], costs: Sequence[float], limit: float
) -> dict[str, float | int]:
    """Regret of picking, among the items whose cost is <= `limit`, the one with the lowest `selection`
    (e.g. the supernet's validation loss): the best `truth` within the limit (e.g. scratch BLEU, higher is
    better) minus the truth of the pick (>= 0; same unit). Returns {"regret", "pick", "best", "candidates"}
    (indices into the lists). Raises ConfigError when no item is within the limit."""
    s, t = _pair(selection, truth)
    c = np.asarray(costs, dtype=np.float64)
    inside = [i for i in range(len(s)) if c[i] <= limit]
    if not inside:
        raise ConfigError(f"no arch within the budget {limit:g} (cheapest: {c.min():g})")
    pick = min(inside, key=lambda i: (s[i], i))
    best = max(inside, key=lambda i: (t[i], -i))
    return {"regret": float(t[best] - t[pick]), "pick": pick, "best": best, "candidates": len(inside)}


def summarize_series(records: Sequence[dict[str, float]]) -> dict[str, dict[str, float | int | None]]:
    """Mean, std and count of every key over a series of records (e.g. the gradient cosine of each pair
    kind logged during training): {key: mean_std(values)}."""
    keys = list(dict.fromkeys(k for r in records for k in r))
    return {k: mean_std([r[k] for r in records if isinstance(r.get(k), (int, float))]) for k in keys}
