"""Reports of a run: Markdown summary and the Pareto plot of quality against measured latency. The family
names the metrics and cost columns, describes an arch in a few characters and adds its notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosnas.family import Family


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _metric(v: float) -> str:
    """Two decimals (BLEU 27.31); a small loss keeps two significant digits (0.00088, not 0.00)."""
    return f"{v:.2f}" if v == 0 or abs(v) >= 0.1 else f"{v:.2g}"


def _cost(key: str, v: int | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1e6:,.1f}M" if key == "flops" else f"{v:,}"


def _scored_on(r: dict[str, Any]) -> str:
    """Where a row's scores come from: split, sentences, beam, length penalty (those the row has)."""
    parts = [str(r["split"])] if "split" in r else []
    if "sentences" in r:  # a subset (eval.limit) says of how many
        total = r.get("sentences_available", r["sentences"])
        parts.append(
            f"{r['sentences']:,} sent." if total == r["sentences"] else f"{r['sentences']:,} of {total:,} sent."
        )
    parts += [f"{k} {r[k]:g}" for k in ("beam", "lenpen") if isinstance(r.get(k), (int, float))]
    return ", ".join(parts) or "-"


def _table(rows: list[dict[str, Any]], family: Family) -> list[str]:
    costs, metrics = family.COSTS, family.METRICS
    head = ["subnet", "arch", *(label for _, label in costs), "budget ms", "predicted ms", "measured ms", "memory MiB"]
    head += [label for _, label in metrics] + ["scored on"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        cells = [r["name"], family.describe(r["arch"]), *(_cost(k, r.get(k)) for k, _ in costs)]
        cells += [_ms(r.get("budget_ms")), _ms(r.get("predicted_latency_ms")), _ms(r.get("measured_latency_ms"))]
        cells.append(_ms(r.get("peak_memory_mb")))  # measured peak inference memory of the exported model
        cells += [_metric(r[k]) if k in r else "-" for k, _ in metrics]  # a model not scored yet: -
        cells.append(_scored_on(r))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_markdown(results: dict[str, Any], family: Family) -> str:
    rows = results["results"]
    lines = [f"# {results['name']}: generator `{results['generator']}`, {results['steps']} training steps", ""]
    trained = (results.get("train_log_last") or {}).get("elapsed_s")
    note = (results.get("note") or "").strip()  # eval.note: e.g. what longer training of this recipe gives
    if trained:  # so a short demo is not mistaken for the method's ceiling
        longer = note or (
            "quality keeps rising with longer training (mosnas's benchmarks/results/ show longer runs, e.g. "
            "time_to_quality.md)."
        )
        lines += [f"Trained {results['steps']} updates in {trained / 60:.1f} minutes of training; {longer}", ""]
    elif note:
        lines += [note, ""]
    split = results.get("stage_s_this_call") or {}
    if split:  # where this call's wall time went (a stage reused from an earlier call shows ~0)
        parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in split.items())
        lines += [f"Wall time of this call: {results['wall_s_this_call'] / 60:.1f} minutes ({parts}).", ""]
    lp = results.get("latency_predictor")
    if lp:
        lines += [_predictor_line(lp), ""]
    lines += _table(rows, family)
    checked = [r for r in rows if r.get("budget_note")]
    lines += _below_smallest(rows, family)
    if checked:
        lines += ["", "Latency budgets, winners re-measured (the next candidate when over beyond the noise floor):", ""]
        lines += [f"- {r['name']}: {r['budget_note']}" for r in checked]
    searched = [r for r in rows if "random_search_fitness" in r]
    if searched:
        lines += [
            "",
            "Search fitness (supernet validation loss, lower is better) at equal evaluation counts:",
            "",
            "| budget | evolutionary | random |",
            "|---|---:|---:|",
        ]
        best = [r.get("search_fitness", r["fitness"]) for r in searched]
        lines += [f"| {r['name']} | {b:.4f} | {r['random_search_fitness']:.4f} |" for r, b in zip(searched, best)]
    reranked = [r for r in rows if r.get("rerank_note")]
    if reranked:
        lines += ["", "Final pick (search.rerank: the best candidates by fitness and the smallest arch, scored again):"]
        lines += ["", *(f"- {r['name']}: {r['rerank_note']}" for r in reranked)]
    if rows:
        lines += ["", *family.report_notes(rows)]
    return "\n".join(lines) + "\n"


def _below_smallest(rows: list[dict[str, Any]], family: Family) -> list[str]:
    """A line for each searched subnet that scores worse than the smallest arch on the family's first metric: a
    bigger, slower arch that loses to the smallest one means the archs between were trained too little (e.g. a
    sandwich with no random arch) -- the search's fitness could not see it, the user should."""
    key, label = family.METRICS[0]
    lower = getattr(family, "LOWER_IS_BETTER", False)
    smallest = next((r[key] for r in rows if r.get("name") == "smallest" and key in r), None)
    if smallest is None:
        return []
    searched = [r for r in rows if r.get("kind") == "search" and key in r]
    worse = [r for r in searched if (r[key] > smallest if lower else r[key] < smallest)]
    text = (
        "Note: {name} scores {value:.2f} {label}, worse than the smallest arch's {smallest:.2f}: the archs between "
        "the two ends got too little training of their own for their inherited weights (more training, or random "
        "archs in the sandwich sooner: train.num_random, train.random_from)."
    )
    notes = [text.format(name=r["name"], value=r[key], label=label, smallest=smallest) for r in worse]
    return ["", *notes] if notes else []


def _predictor_line(lp: dict[str, Any]) -> str:
    """The latency predictor's held-out errors (each predictor of the report), the chosen one and the noise."""
    names = [k for k in ("mlp", "linear", "table") if k in lp]
    errs = "; ".join(f"{k} MAPE {lp[k]['mape_pct']:.1f}%, tau {lp[k]['kendall_tau']:.3f}" for k in names)
    noise = lp.get("noise") or {}
    floor = ""
    if noise.get("rel_std_pct") is not None:
        floor = f" Noise floor (one arch re-measured {noise['n']}x): {noise['rel_std_pct']:.1f}% std."
    chosen = f" Chosen: {lp['chosen']}." if "chosen" in lp else ""
    n, held = lp["train_samples"] + lp["heldout_samples"], lp["heldout_samples"]
    head = f"Latency predictor ({n} measured archs: {lp['train_samples']} to fit, {held} held out to score)"
    return f"{head}: {errs}.{chosen}{floor}"


def _front(points: list[tuple[float, float]], lower: bool) -> list[tuple[float, float]]:
    """The points (latency, quality), sorted by latency, that no faster point beats in quality."""
    front: list[tuple[float, float]] = []
    for x, y in points:
        if not front or (y < front[-1][1] if lower else y > front[-1][1]):
            front.append((x, y))
    return front


def pareto_plot(results: dict[str, Any], path: str | Path, family: Family) -> Path:
    """The first quality metric against measured latency for every subnet of the run (searched, fine-tuned,
    references); no pyplot state (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    key, label = family.METRICS[0]
    styles = {"reference": ("s", "tab:gray"), "search": ("o", "tab:blue"), "finetuned": ("^", "tab:green")}
    fig = Figure(figsize=(6, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shown = [r for r in results["results"] if key in r and "measured_latency_ms" in r]
    lower = getattr(family, "LOWER_IS_BETTER", False)  # e.g. a distillation loss
    for kind, (marker, color) in styles.items():
        rows = [r for r in shown if r["kind"] == kind]
        if rows:
            points = [(r["measured_latency_ms"], r[key]) for r in rows]
            ax.scatter(*zip(*points), marker=marker, c=color, label=kind, zorder=3)
            for i, (r, xy) in enumerate(zip(rows, points)):  # labels alternate above and below their point
                ax.annotate(r["name"], xy, fontsize=7, xytext=(4, 4 if i % 2 == 0 else -10), textcoords="offset points")
    front = _front(sorted((r["measured_latency_ms"], r[key]) for r in shown), lower)
    if len(front) > 1:
        ax.step(*zip(*front), where="post", c="tab:red", lw=1, alpha=0.6, label="Pareto front", zorder=2)
    for i, budget in enumerate(sorted({r["budget_ms"] for r in shown if r.get("budget_ms")})):
        ax.axvline(budget, ls=":", c="tab:orange", lw=1, label="latency budget" if i == 0 else None)
    ax.set_xlabel("measured latency (ms; HAT's protocol, see the summary)")
    ax.set_ylabel(f"{label} ({'lower' if lower else 'higher'} is better)")
    return save_figure(fig, ax, f"{results['name']} ({results['generator']})", path)


def save_figure(fig: Any, ax: Any, title: str, path: str | Path) -> Path:
    """Title, grid and legend on `ax`, then `fig` saved to `path` (PNG, 120 dpi): every plot of a run alike."""
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
