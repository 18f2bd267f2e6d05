"""`mosnas run`: train -> latency -> search -> export -> fine-tune -> evaluate -> report.

Each stage writes its files into the run folder with what they were made from (mosnas.records) and is
skipped while that still holds, so a stopped run continues where it stopped and a changed input redoes
exactly the stages that read it. What depends on the model, data or metric is asked of the
run's family (`run.family`: see mosnas.family)."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from mosnas.config import Config, LatencyConfig, SearchConfig
from mosnas.errors import ConfigError
from mosnas.finetune import finetune
from mosnas.hardware import resolve_precision
from mosnas.latency_stage import budget_predictor, latency_stage, predictor_of, timing  # noqa: F401
from mosnas.rebuild import write_reports
from mosnas.records import fresh, made_from, read_json, write_json
from mosnas.run import LoadedRun, RunDir, adopt_config, load_run, needs_training, read_log
from mosnas.search import Budget, evolutionary_search, random_search, rerank
from mosnas.space import Arch
from mosnas.train import train
from mosnas.winner import describe_check, hold_budget, remeasure


# -- search ----------------------------------------------------------------------------------------
def budgets(sc: SearchConfig, span: tuple[float, float] | None) -> dict[str, float | None]:
    """Budget name -> latency limit in ms (None: only the params / FLOPs limits). `latency_fractions` place
    budgets within `span` = the predictor's latency of the smallest and largest arch: the search's constraint
    uses the predictor, so the smallest arch always fits (measured values would make a low budget infeasible
    whenever the predictor errs upwards)."""
    out: dict[str, float | None] = {f"latency-{v:g}ms": float(v) for v in sc.latency_ms}
    if sc.latency_fractions and span:
        lo, hi = span
        for f in sc.latency_fractions:
            v = math.ceil((lo + f * (hi - lo)) * 100) / 100  # rounded up: never below the smallest arch
            out[f"latency-frac{f:g}"] = v  # named by the fraction: the same folder when the predictor is refit
    if not out and (sc.max_params or sc.max_flops or sc.max_memory_mb):
        out["limits"] = None
    return out


def search_stage(
    run: LoadedRun,
    sc: SearchConfig,
    name: str,
    latency_ms: float | None,
    lc: LatencyConfig,
    progress: bool = True,
    predictor_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evolutionary search (and the random baseline at equal evaluations) under one budget; the latency
    budget uses the run's predictor, or the one in `predictor_dir` (`mosnas latency --fit`)."""
    out_file = run.dir.search(name)
    predictor, upstream = budget_predictor(run, latency_ms, predictor_dir)
    settings = {k: v for k, v in asdict(sc).items() if k not in ("latency_ms", "latency_fractions", "params_budgets")}
    settings.update(latency_ms=latency_ms, flops_at=[lc.src_len, lc.tgt_len])  # FLOPs count at these lengths
    record = made_from(search=settings, predictor=upstream, checkpoint=run.checkpoint)
    if fresh(out_file, record, f"search {name}"):
        return read_json(out_file)
    out_file.unlink(missing_ok=True)
    if sc.max_memory_mb and "memory_mb" not in _costs(run, run.space.smallest(), lc):
        raise ConfigError(f"search.max_memory_mb: the {run.cfg.family} family gives no memory estimate (costs)")
    budget = Budget(
        latency_ms=latency_ms,
        latency=predictor,
        max_params=sc.max_params or None,
        params=lambda arch: _costs(run, arch, lc)["parameters"],
        max_flops=sc.max_flops or None,
        flops=lambda arch: _costs(run, arch, lc)["flops"],
        max_memory_mb=sc.max_memory_mb or None,
        memory=lambda arch: _costs(run, arch, lc)["memory_mb"],
    )
    device = next(run.net.parameters()).device
    precision = resolve_precision(sc.precision, device, "search.precision")
    fitness, about = run.family.fitness(run, sc, device, precision.bf16)
    t0 = time.perf_counter()
    settings = (sc.population, sc.parents, sc.mutations, sc.crossovers, sc.mutation_prob, sc.generations, sc.seed)
    evo = evolutionary_search(run.space, fitness, budget, *settings, progress=progress)
    picked: dict[str, Any] = {"evolution_best_fitness": evo.fitness}  # the evolution's own best (vs random search)
    if sc.rerank:  # the final pick by the family's selection score (validation BLEU for MT)
        score, about_score = run.family.selection_score(run, sc, device, precision.bf16)
        evo, rows = rerank(run.space, evo, fitness, score, sc.rerank, budget)
        picked.update(about_score, rerank=rows)
    result: dict[str, Any] = {
        "budget": name,
        "latency_ms": latency_ms,
        **{k: getattr(sc, k) for k in ("max_params", "max_flops", "max_memory_mb")},
        **about,
        "precision": precision.to_dict(),
        "evolution": evo.to_dict(),
        **picked,
        "evolution_s": round(time.perf_counter() - t0, 1),
    }
    if sc.random_baseline:
        rnd = random_search(run.space, fitness, budget, evo.num_evaluations, sc.seed, progress=progress)
        result["random"] = rnd.to_dict()
    result["predicted_latency_ms"] = round(predictor(evo.arch), 3) if predictor else None
    write_json(out_file, {**result, "made_from": record})
    return read_json(out_file)


def _rerank_note(found: dict[str, Any]) -> str:
    rows, metric = found["rerank"], found.get("rerank_metric", "selection score")
    small = next((f"; the smallest arch {r['score']:.2f}" for r in rows if r["smallest"]), "")
    return (f"picked by {metric} ({found.get('rerank_sentences') or 'all'} sentences) among {len(rows)} archs: "
            f"{rows[0]['score']:.2f}{small}")  # fmt: skip


# -- export, evaluation, report ----------------------------------------------------------------------
def _costs(run: LoadedRun, arch: Arch, lc: LatencyConfig) -> dict[str, int]:
    return run.family.costs(arch, run.space, run.net.vocab_size, run.cfg.supernet, lc)


def export_and_score(
    run: LoadedRun, arch: Arch, out: Path, lc: LatencyConfig, progress: bool, model_dir: Path | None = None
) -> dict[str, Any]:
    """Export `arch` (unless `model_dir` holds it already: a fine-tuned model), re-measure its latency and score
    it on the test split; each output is reused only while what it was made from holds."""
    measured = remeasure(run, arch, out, lc, exported=model_dir is not None)  # latency and peak memory
    model = read_json(out / "export.json").get("made_from")  # what the exported model itself was made from
    scores = run.family.evaluate(out, run.cfg, progress, model)
    return {
        **scores,
        "measured_latency_ms": measured["latency_ms"],
        "peak_memory_mb": measured["memory"]["peak_mb"],
        "arch": arch.to_dict(),
        **_costs(run, arch, lc),
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
        row["rerank_note"] = _rerank_note(found)
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
        train(cfg, resume=not force, force=force, show_progress=progress)
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
