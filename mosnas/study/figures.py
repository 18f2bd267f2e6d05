"""The study's plots (Agg canvas, no pyplot state; finished by mosnas.pipeline.report.save_figure like every run plot):
supernet BLEU against scratch BLEU per variant, and every variant's Pareto front against measured latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosnas.pipeline.report import save_figure

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
MARKERS = ("o", "s", "^", "D", "v", "P")


def _figure(size: tuple[float, float], panels: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    if panels == 1:
        return fig, fig.add_subplot()
    return fig, fig.subplots(1, panels, sharex=True, sharey=True, squeeze=False)[0]


def fidelity_plot(per_seed: list[dict[str, Any]], variants: list[str], title: str, path: str | Path) -> Path | None:
    """Supernet BLEU (inherited weights) against the same arch's BLEU trained alone from scratch: one panel per
    variant, one marker per seed, the line y = x. None when nothing is scored yet."""
    shown = [v for v in variants if any(r["variant"] == v for r in per_seed)]
    if not shown:
        return None
    fig, axes = _figure((3.4 * len(shown) + 0.6, 3.8), len(shown))
    axes = [axes] if len(shown) == 1 else list(axes)
    seeds = sorted({r["seed"] for r in per_seed})
    values = [x for r in per_seed for x in (*r["pairs"]["scr_bleu"], *r["pairs"]["sup_bleu"])]
    lo, hi = min(values), max(values)
    for ax, variant in zip(axes, shown):
        color = COLORS[variants.index(variant) % len(COLORS)]
        for r in (r for r in per_seed if r["variant"] == variant):
            marker = MARKERS[seeds.index(r["seed"]) % len(MARKERS)]
            ax.scatter(r["pairs"]["scr_bleu"], r["pairs"]["sup_bleu"], c=color, marker=marker, s=22, alpha=0.8,
                       label=f"seed {r['seed']}")  # fmt: skip
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
        ax.set_xlabel("BLEU, trained alone from scratch")
        if ax is not axes[-1]:
            ax.set_title(variant)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    axes[0].set_ylabel("BLEU inside the supernet")
    fig.suptitle(title)
    return save_figure(fig, axes[-1], shown[-1], path)


def pareto_plot(rows: list[dict[str, Any]], variants: list[str], title: str, path: str | Path) -> Path | None:
    """Every variant's searched winners against their latency: fine-tuned (filled, joined by budget) and with
    inherited weights (hollow), one line per variant and seed. The latency is the side-by-side re-measurement
    (`side_by_side_ms`, one axis for all fronts) when every row has one, else each piece's own measurement (the
    axis label says which). None when no front is measured."""
    one_axis = bool(rows) and all(r.get("side_by_side_ms") is not None for r in rows)
    ms = "side_by_side_ms" if one_axis else "measured_latency_ms"
    shown = [{**r, "ms": r[ms]} for r in rows if r.get(ms) is not None and r.get("bleu") is not None]
    if not shown:
        return None
    fig, ax = _figure((6.4, 4.6))
    for variant, seed in dict.fromkeys((r["variant"], r["seed"]) for r in shown):
        color = COLORS[variants.index(variant) % len(COLORS)]
        mine = [r for r in shown if (r["variant"], r["seed"]) == (variant, seed)]
        tuned = sorted((r["ms"], r["bleu"]) for r in mine if r["kind"] == "finetuned")
        found = sorted((r["ms"], r["bleu"]) for r in mine if r["kind"] == "search")
        if tuned:
            ax.plot(*zip(*tuned), "o-", c=color, ms=5, lw=1.2, label=f"{variant} s{seed}, fine-tuned")
        if found:
            ax.scatter(*zip(*found), facecolors="none", edgecolors=color, s=30, label=f"{variant} s{seed}, inherited")
    where = "all archs measured side by side" if one_axis else "each piece's own measurement"
    ax.set_xlabel(f"latency (ms; HAT's protocol, the exported model; {where})")
    ax.set_ylabel("BLEU (higher is better)")
    return save_figure(fig, ax, title, path)
