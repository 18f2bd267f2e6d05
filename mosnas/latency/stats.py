"""Statistics of predictions against measurements: rank correlation, errors, and their plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mosnas.errors import PredictorError


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b rank correlation (ties counted as scipy does), O(n^2): fine up to a few thousand."""
    x_arr, y_arr = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x_arr.shape != y_arr.shape or x_arr.ndim != 1 or len(x_arr) < 2:
        raise PredictorError(f"kendall_tau needs two equal-length lists of >= 2 values, got {len(x)} and {len(y)}")
    i, j = np.triu_indices(len(x_arr), 1)  # every pair once
    sx, sy = np.sign(x_arr[i] - x_arr[j]), np.sign(y_arr[i] - y_arr[j])
    # tau-b = (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y)
    denom = np.sqrt(float(np.count_nonzero(sx)) * float(np.count_nonzero(sy)))
    return float((sx * sy).sum() / denom) if denom > 0 else float("nan")


def prediction_errors(measured: list[float], predicted: list[float]) -> dict[str, float]:
    """RMSE (ms), MAPE (%) and Kendall tau of `predicted` against `measured` values."""
    y, p = np.asarray(measured), np.asarray(predicted)
    return {
        "rmse_ms": float(np.sqrt(np.mean((p - y) ** 2))),
        "mape_pct": float(np.mean(np.abs(p - y) / y) * 100),
        "kendall_tau": kendall_tau(list(measured), p.tolist()) if len(measured) > 1 else float("nan"),
        "num_samples": len(measured),
    }


def scatter_plot(measured: list[float], predicted: list[float], path: str | Path, title: str = "") -> Path:
    """Save a predicted-vs-measured latency scatter plot (PNG) with the y = x line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display, no pyplot state
    from matplotlib.figure import Figure

    if len(measured) != len(predicted) or not measured:
        raise PredictorError(f"scatter_plot needs equal, non-empty lists, got {len(measured)} and {len(predicted)}")
    fig = Figure(figsize=(4.5, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(measured, predicted, s=10, alpha=0.6)
    lo, hi = min(*measured, *predicted), max(*measured, *predicted)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set(xlabel="measured latency (ms)", ylabel="predicted latency (ms)", title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
