"""GLUE's official dev metrics (scikit-learn and scipy), in percent as GLUE reports them, and the summary line.

CoLA: Matthews correlation (sklearn.metrics.matthews_corrcoef); MRPC and QQP: F1 of the positive class
(label 1) and accuracy; STS-B: Pearson and Spearman correlation (scipy.stats); accuracy otherwise
(Wang et al. 2019, "GLUE", table 1). A task's score, which picks the best learning rate, is the mean of its
official metrics over its dev splits (GLUE's leaderboard averages a task's two metrics the same way)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# scipy and scikit-learn are imported when a metric is computed: `mosnas --help` does not wait for them


def _accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(gold, pred))


def _f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 of the positive class (label 1), as GLUE scores MRPC and QQP."""
    from sklearn.metrics import f1_score

    return float(f1_score(gold, pred, pos_label=1, average="binary", zero_division=0))


def _mcc(pred: np.ndarray, gold: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(gold, pred))


def _correlation(name: str, pred: np.ndarray, gold: np.ndarray) -> float:
    """scipy.stats' pearsonr or spearmanr; 0 where it is undefined (a constant prediction, e.g. a model that
    has not learned yet)."""
    import scipy.stats

    if np.ptp(pred) == 0 or np.ptp(gold) == 0:
        return 0.0
    return float(getattr(scipy.stats, name)(pred, gold)[0])


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "mcc": _mcc,
    "pearson": lambda pred, gold: _correlation("pearsonr", pred, gold),
    "spearman": lambda pred, gold: _correlation("spearmanr", pred, gold),
}
NAMES = {"accuracy": "accuracy", "f1": "F1", "mcc": "MCC", "pearson": "Pearson", "spearman": "Spearman"}


def compute(metrics: Sequence[str], outputs: np.ndarray, gold: Sequence[float]) -> dict[str, float]:
    """The `metrics` (percent, rounded to 0.01) of model `outputs` against `gold` targets.

    outputs: (N, C) logits of a classifier (prediction = argmax) or (N,) / (N, 1) predictions of a regression;
    gold: N class indices or real targets. Raises KeyError for a metric not in METRICS."""
    out = np.asarray(outputs, dtype=np.float64)
    regression = out.ndim == 1 or out.shape[1] == 1
    pred = out.reshape(-1) if regression else out.argmax(axis=1)
    gold_arr = np.asarray(gold, dtype=np.float64 if regression else np.int64)
    return {m: round(100 * METRICS[m](pred, gold_arr), 2) for m in metrics}


def metric_key(metric: str, split: str) -> str:
    """The result key of `metric` on a dev split: the metric itself on `dev`, `accuracy_mismatched` on
    MNLI's `dev_mismatched`."""
    return metric if split == "dev" else f"{metric}_{split.removeprefix('dev_')}"


def score(values: dict[str, float]) -> float:
    """The mean of a task's official metrics (the number that picks the best learning rate)."""
    return round(statistics.fmean(values.values()), 2)


def mean_std(runs: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """The per-metric mean and sample standard deviation over runs (std 0 for one run)."""
    keys = runs[0].keys()
    mean = {k: round(statistics.fmean(r[k] for r in runs), 2) for k in keys}
    std = {k: round(statistics.stdev([r[k] for r in runs]), 2) if len(runs) > 1 else 0.0 for k in keys}
    return mean, std


def _shown(key: str) -> str:
    metric, _, split = key.partition("_")
    return f"{NAMES.get(metric, metric)}{f' ({split})' if split else ''}"


def summary_line(task: str, result: dict[str, Any]) -> str:
    """`SST-2 dev accuracy 81.20 (all 872 dev examples; 2 epochs over 2,000 of 67,349 train examples, lr 5e-05,
    seed 1)`: the counts are of what was trained and scored (a subset says so); with several seeds the mean ±
    std, with a learning-rate sweep the lrs tried."""
    seeds = result["seeds"]
    values = " / ".join(
        f"{_shown(k)} {v:.2f}" + (f" ± {result['std'][k]:.2f}" if len(seeds) > 1 else "")
        for k, v in result["metrics"].items()
    )
    lrs = result["lrs"]
    lr = f"lr {result['lr']:g}" + (f" (best of {' '.join(f'{x:g}' for x in lrs)})" if len(lrs) > 1 else "")
    seed = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {' '.join(map(str, seeds))}"
    epochs = result["epochs"]
    shown_epochs = f"{epochs:g} epoch{'s' if not math.isclose(epochs, 1) else ''}"
    kd = ", KD" if result.get("kd") else ""
    return (
        f"{task} dev {values} ({_count(result, 'dev')} dev examples; {shown_epochs} over {_count(result, 'train')} "
        f"train examples, {lr}, {seed}{kd})"
    )


def _count(result: dict[str, Any], split: str) -> str:
    """`2,000 of 67,349` for a subset, `all 872` for a whole split, `872` when the record has no total."""
    n, total = result.get(f"{split}_examples"), result.get(f"{split}_examples_available")
    if n is None:
        return "?"
    return f"{n:,}" if total is None else f"all {n:,}" if n == total else f"{n:,} of {total:,}"
