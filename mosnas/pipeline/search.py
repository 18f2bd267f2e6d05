"""The search stage of a run: budgets (latency, from the predictor's span, and size limits), the evolutionary
search and the random baseline under one budget, and the final pick by the family's selection score. The
algorithms themselves are pure (mosnas.search.evolution); here they meet the run's supernet and predictor."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mosnas.config import LatencyConfig, SearchConfig
from mosnas.core.space import Arch
from mosnas.engine.load import LoadedRun
from mosnas.errors import ConfigError
from mosnas.hardware import resolve_precision
from mosnas.pipeline.latency import budget_predictor
from mosnas.search.evolution import Budget, evolutionary_search, random_search, rerank
from mosnas.workspace.records import fresh, made_from, read_json, write_json


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
    if sc.max_memory_mb and "memory_mb" not in costs_of(run, run.space.smallest(), lc):
        raise ConfigError(f"search.max_memory_mb: the {run.cfg.family} family gives no memory estimate (costs)")
    budget = Budget(
        latency_ms=latency_ms,
        latency=predictor,
        max_params=sc.max_params or None,
        params=lambda arch: costs_of(run, arch, lc)["parameters"],
        max_flops=sc.max_flops or None,
        flops=lambda arch: costs_of(run, arch, lc)["flops"],
        max_memory_mb=sc.max_memory_mb or None,
        memory=lambda arch: costs_of(run, arch, lc)["memory_mb"],
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


def rerank_note(found: dict[str, Any]) -> str:
    rows, metric = found["rerank"], found.get("rerank_metric", "selection score")
    small = next((f"; the smallest arch {r['score']:.2f}" for r in rows if r["smallest"]), "")
    return (f"picked by {metric} ({found.get('rerank_sentences') or 'all'} sentences) among {len(rows)} archs: "
            f"{rows[0]['score']:.2f}{small}")  # fmt: skip


# -- export, evaluation, report ----------------------------------------------------------------------
def costs_of(run: LoadedRun, arch: Arch, lc: LatencyConfig) -> dict[str, int]:
    """The exact costs of `arch` in `run` (parameters, FLOPs at the latency lengths, the family's extras)."""
    return run.family.costs(arch, run.space, run.net.vocab_size, run.cfg.supernet, lc)


def check_size_budgets(cfg: Any, run_dir: Path) -> None:
    """Every parameter, FLOPs and memory limit of `cfg.search` admits the space's smallest arch (costs need the
    run's vocabulary: called once the run is prepared, before its supernet trains). BudgetError (one line)
    otherwise, the search's own message."""
    from mosnas.errors import BudgetError
    from mosnas.family import family_of

    sc, family = cfg.search, family_of(cfg.family)
    space = family.load_space(cfg.supernet.space)
    smallest = space.smallest()
    costs = family.costs(smallest, space, family.vocab(run_dir)[1], family.supernet_config(cfg), cfg.latency)
    limits = [("params", size, costs["parameters"]) for size in (*sc.params_budgets, sc.max_params) if size]
    limits += [("FLOPs", sc.max_flops, costs["flops"])] if sc.max_flops else []
    if sc.max_memory_mb and "memory_mb" in costs:
        limits.append(("memory", sc.max_memory_mb, costs["memory_mb"]))
    failed = [f"{name} <= {limit:,} (smallest arch: {value:,})" for name, limit, value in limits if value > limit]
    if failed:
        raise BudgetError(f"no architecture in space '{space.name}' satisfies {failed[0]}")
