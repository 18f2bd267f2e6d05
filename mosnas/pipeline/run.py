"""`mosnas run`: train -> latency -> search -> export -> fine-tune -> evaluate -> report.

Each stage writes its files into the run folder with what they were made from (mosnas.workspace.records) and is
skipped while that still holds, so a stopped run continues where it stopped and a changed input redoes
exactly the stages that read it. What depends on the model, data or metric is asked of the
run's family (`run.family`: see mosnas.family)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from mosnas.config import Config, LatencyConfig
from mosnas.core.space import Arch
from mosnas.engine.load import LoadedRun, load_run
from mosnas.engine.run_folder import adopt_config, needs_training
from mosnas.engine.train import train
from mosnas.pipeline.finetune import finetune
from mosnas.pipeline.latency import latency_stage, predictor_of
from mosnas.pipeline.rebuild import write_reports
from mosnas.pipeline.search import budgets, check_size_budgets, costs_of, rerank_note, search_stage
from mosnas.pipeline.winner import describe_check, hold_budget, remeasure
from mosnas.workspace.model_dir import ModelDir
from mosnas.workspace.records import write_json
from mosnas.workspace.run_dir import RunDir, read_log


def export_and_score(
    run: LoadedRun, arch: Arch, out: Path, lc: LatencyConfig, progress: bool, model_dir: Path | None = None
) -> dict[str, Any]:
    """Export `arch` (unless `model_dir` holds it already: a fine-tuned model), re-measure its latency and score
    it on the test split; each output is reused only while what it was made from holds. The row's `model_dir`
    is the folder scored, relative to the run folder (a latency budget's fallback: export/<name>-fallback<i>)."""
    measured = remeasure(run, arch, out, lc, exported=model_dir is not None)  # latency and peak memory
    model = ModelDir(out).made_from()  # what the exported model itself was made from
    scores = run.family.evaluate(out, run.cfg, progress, model)
    return {
        **scores,
        "model_dir": Path(os.path.relpath(Path(out).resolve(), run.dir.root.resolve())).as_posix(),
        "measured_latency_ms": measured["latency_ms"],
        "peak_memory_mb": measured["memory"]["peak_mb"],
        "arch": arch.to_dict(),
        **costs_of(run, arch, lc),
    }


def _budget_rows(cfg: Config, run: LoadedRun, name: str, limit: float | None, progress: bool) -> list[dict[str, Any]]:
    """The searched subnet of one budget (and, with finetune.steps, the same subnet fine-tuned)."""
    lc, export = cfg.latency, run.dir.export(name)
    found = search_stage(run, cfg.search, name, limit, lc, progress)
    arch, check = run.space.arch_from_dict(found["evolution"]["arch"]), None
    if limit is not None:  # re-measured; over budget beyond the noise floor: the next candidate
        arch, export, check = hold_budget(run, found, name, limit, lc)
    row = {
        "name": name,
        "kind": "search",
        "budget_ms": limit,
        "fitness": found["evolution"]["fitness"],
        "predicted_latency_ms": check["tried"][check["chosen"]]["predicted_ms"] if check else None,
        **{k: found.get(k) for k in ("max_params", "max_flops", "max_memory_mb")},  # the row carries its limits
        **export_and_score(run, arch, export, lc, progress),
    }
    if "random" in found:
        row["random_search_fitness"] = found["random"]["fitness"]
        row["search_fitness"] = found.get("evolution_best_fitness", found["evolution"]["fitness"])
    if found.get("rerank"):
        row["rerank_note"] = rerank_note(found)
    if check:
        row.update(budget_check=check, budget_note=describe_check(check))
    if not cfg.finetune.steps:
        return [row]
    ft = cfg.finetune
    settings = (ft.steps, ft.lr, ft.warmup, ft.valid_every, ft.valid_bleu)
    model_dir, curve = finetune(cfg, export, run.dir.finetune, name, *settings, progress=progress)
    scored = export_and_score(run, arch, model_dir, lc, progress, model_dir=model_dir)
    return [row, {"name": f"{name} +ft{ft.steps}", "kind": "finetuned", "budget_ms": limit, **scored, "curve": curve}]


def run(cfg: Config, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the whole pipeline for `cfg`; a stopped run continues where it stopped."""
    if cfg.family == "nasbert":  # its own search: bucketed shrinking, then the lookup table (pipeline.nasbert)
        from mosnas.pipeline.nasbert import run_nasbert

        return run_nasbert(cfg, force, progress)
    t0 = time.perf_counter()
    split: dict[str, float] = {}  # stage -> wall seconds of this call (a stage reused from an earlier call: ~0)
    mark = [t0, ""]

    def stage(key: str, text: str) -> None:  # one header per stage; the previous stage's time is booked
        now = time.perf_counter()
        if mark[1]:
            split[mark[1]] = round(split.get(mark[1], 0.0) + now - mark[0], 1)
        mark[:] = [now, key]
        progress and print(f"== {text}", file=sys.stderr, flush=True)

    if force or needs_training(cfg):
        stage("train", f"train: {cfg.supernet.generator} supernet -> {cfg.run_dir}")
        train(cfg, resume=not force, force=force, show_progress=progress, ready=lambda d: check_size_budgets(cfg, d))
    else:
        adopt_config(cfg)  # the stages below read the run's config: the decode, eval, search... settings given now
    loaded = load_run(cfg.run_dir)
    run_dir, lc = RunDir(cfg.run_dir), cfg.latency
    for report in (run_dir.results, run_dir.summary, run_dir.pareto):  # rebuilt from fresh outputs only
        report.unlink(missing_ok=True)
    names = budgets(cfg.search, None)
    latency_report, predictor = None, None
    if cfg.search.latency_ms or cfg.search.latency_fractions:
        stage(
            "latency",
            f"latency: {lc.num_samples} archs and the layer table measured (unless done), the predictor fitted",
        )
        latency_report = latency_stage(loaded, lc, progress)
        predictor = predictor_of(loaded)[0]
        names = budgets(cfg.search, (predictor(loaded.space.smallest()), predictor(loaded.space.largest())))
    rows = []
    stage("reference", f"export and score the reference subnets: {', '.join(cfg.eval.archs)}")
    for name in cfg.eval.archs:  # reference subnets: largest and smallest
        arch = loaded.space.parse_arch(name)
        out = run_dir.export(name if name in ("largest", "smallest") else Path(name).stem)
        predicted = round(predictor(arch), 3) if predictor else None  # every row: predicted beside measured
        row = {"name": name, "kind": "reference", "predicted_latency_ms": predicted}
        rows.append({**row, **export_and_score(loaded, arch, out, lc, progress)})
    for name, limit in names.items():
        stage(
            "search",
            f"search {name}: evolution{' and random search' if cfg.search.random_baseline else ''}, export, score",
        )
        rows += _budget_rows(cfg, loaded, name, limit, progress)
    for size in cfg.search.params_budgets:  # one search per parameter budget (BERT's size budgets)
        stage("search", f"search params-{size / 1e6:g}M: evolution, export, score")
        sized = replace(cfg, search=replace(cfg.search, max_params=size, params_budgets=()))
        rows += _budget_rows(sized, loaded, f"params-{size / 1e6:g}M", None, progress)
    results = {
        "name": cfg.name,
        "family": cfg.family,
        "generator": cfg.supernet.generator,
        "steps": loaded.step,
        "train_log_last": next((r for r in reversed(read_log(run_dir.root)) if "elapsed_s" in r), {}),
        "latency_predictor": latency_report,
        "results": rows,
        "note": cfg.eval.note,
    }
    stage("", "report")
    results.update(wall_s_this_call=round(time.perf_counter() - t0, 1), stage_s_this_call=split)
    write_json(run_dir.results, results)
    write_reports(loaded, results)  # summary.md, pareto.png, train_curve.png
    return results
