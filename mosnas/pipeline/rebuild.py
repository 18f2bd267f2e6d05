"""`mosnas report RUN`: rebuild a run's summary.md, results.json's rows, pareto.png and train_curve.png from
what is on disk — the pipeline's rows plus every subnet exported, searched or fine-tuned by hand since
(`mosnas search`, `mosnas export`, `mosnas finetune`) — and the training-curve plot of the log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mosnas.workspace.model_dir import ModelDir


def training_curve(
    log: list[dict[str, Any]], path: str | Path, title: str, unit: str = "nats per target token"
) -> Path | None:
    """Plot the training loss of every logged arch kind (largest, smallest, random: mean label-smoothed loss per
    target token, nats) and the validation NLL (nats per target token, no smoothing) against the step; None when
    the log holds no loss yet. No pyplot state (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from mosnas.pipeline.report import save_figure

    keys = {k for r in log for k in r}
    series = lambda prefix: {
        k[len(prefix) :]: [(r["step"], r[k]) for r in log if k in r] for k in sorted(keys) if k.startswith(prefix)
    }
    train, valid = series("loss_"), series("valid_nll_") or series("valid_loss_")
    if not train and not valid:
        return None
    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for kind, points in sorted(train.items()):
        ax.plot(*zip(*points), lw=1.2, label=f"train loss, {kind}")
    for kind, points in sorted(valid.items()):
        ax.plot(*zip(*points), "o--", ms=4, lw=1.2, label=f"validation NLL, {kind}")
    ax.set_xlabel("training step (optimizer updates)")
    ax.set_ylabel(unit)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(fig, ax, title, path)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _row(run: Any, name: str, kind: str, model_dir: Path, split: str) -> dict[str, Any]:
    """A summary row of one exported model folder: arch, costs, scores on `split`, measured latency."""
    arch = run.space.arch_from_dict(_read(ModelDir(model_dir).arch))
    row: dict[str, Any] = {"name": name, "kind": kind, "arch": arch.to_dict(), "folder": str(model_dir)}
    row.update(run.family.costs(arch, run.space, run.net.vocab_size, run.cfg.supernet, run.cfg.latency))
    scores = {k: v for k, v in _read(ModelDir(model_dir).eval(split)).items() if k != "made_from"}
    row.update(scores or {"note": f"not scored on {split}: mosnas evaluate {model_dir}"})
    latency = _read(ModelDir(model_dir).latency)
    if "latency_ms" in latency:
        row["measured_latency_ms"] = latency["latency_ms"]
    if "memory" in latency:
        row["peak_memory_mb"] = latency["memory"]["peak_mb"]
    searched = _read(run.dir.search(name))
    if searched:
        row.update(budget_ms=searched.get("latency_ms"), predicted_latency_ms=searched.get("predicted_latency_ms"))
        row.update(fitness=searched["evolution"]["fitness"], max_params=searched.get("max_params"))
    return row


def rebuild(run_dir: str | Path) -> dict[str, Any]:
    """Rebuild summary.md, results.json, pareto.png and train_curve.png of `run_dir`; returns the results.

    Raises ConfigError when `run_dir` is not a trained run."""
    from mosnas.engine.load import load_run
    from mosnas.workspace.records import write_json

    run = load_run(run_dir)
    results = _read(run.dir.results) or {
        "name": run.cfg.name,
        "family": run.cfg.family,
        "generator": run.cfg.supernet.generator,
        "steps": run.step,
        "results": [],
    }
    split = run.cfg.eval.split or run.cfg.data.test
    known = {Path(r["folder"]).resolve() for r in results["results"] if "folder" in r}
    known |= {run.dir.export(r["name"]).resolve() for r in results["results"]}
    found = [(p.name, p) for p in sorted(run.dir.exports.glob("*")) if ModelDir(p).arch.is_file()]
    found += [(f"{p.parent.name} (by hand)", p) for p in sorted(run.dir.finetune.glob("*/export"))]
    for name, folder in found:
        if folder.resolve() in known or not ModelDir(folder).record.is_file():
            continue
        kind = "finetuned" if folder.name == "export" else "reference" if name in ("largest", "smallest") else "search"
        results["results"].append(_row(run, name, kind, folder, split))
    write_json(run.dir.results, results)
    write_reports(run, results)
    return results


def write_reports(run: Any, results: dict[str, Any]) -> None:
    """summary.md, pareto.png (when a row has a measured latency) and train_curve.png of a loaded run."""
    from mosnas.pipeline.report import pareto_plot, summary_markdown
    from mosnas.workspace.run_dir import read_log

    run.dir.summary.write_text(summary_markdown(results, run.family), encoding="utf-8")
    if any("measured_latency_ms" in r for r in results["results"]):
        pareto_plot(results, run.dir.pareto, run.family)
    title = f"{run.cfg.name}: training ({run.cfg.supernet.generator})"
    training_curve(read_log(run.dir.root), run.dir.curve, title, getattr(run.family, "LOSS_UNIT", "loss"))
