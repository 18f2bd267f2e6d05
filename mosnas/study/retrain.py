"""Retraining cost and the Pareto front of one supernet (a variant and a seed).

Retraining (the MoS paper's Table 6 analogue): search the supernet under a parameter budget, fine-tune the
winner from its inherited weights and find the first check at which its validation BLEU reaches the same arch
trained alone from scratch; then the reviewers' control: a dense model of that arch trained from scratch with
the compute of the whole route (supernet training + search + fine-tuning to the target), matched once in wall
time and once in FLOPs. Pareto: the pipeline's latency, search, export, short fine-tune and scoring stages
(mosnas.pipeline.run.run) at the study's latency fractions."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mosnas.config import Config
from mosnas.core.space import Arch
from mosnas.engine.load import LoadedRun
from mosnas.hardware import resolve_precision
from mosnas.pipeline.export import ensure_export
from mosnas.pipeline.finetune import finetune
from mosnas.pipeline.run import export_and_score
from mosnas.pipeline.run import run as run_pipeline
from mosnas.pipeline.search import search_stage
from mosnas.study.archs import arch_key, budget_limit, elapsed_at, matched_steps, reach, supernet_pair_flops
from mosnas.study.work import Study
from mosnas.workspace.run_dir import read_log

CURVE_KEYS = ("step", "valid_bleu", "valid_nll_fixed")


def _curve(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: r[k] for k in CURVE_KEYS if k in r} for r in curve]


def pairs_per_batch(run: LoadedRun) -> float:
    """Training pairs per batch of a run's data: the batches its training loop draws (the family's task)."""
    device = next(run.net.parameters()).device
    task = run.family.task(run.cfg, run.run_dir, run.space, None, device, resolve_precision("fp32", device))
    batches = task.batches(0)
    return sum(len(b) for b in batches) / len(batches)


def searched(study: Study, cfg: Config) -> tuple[LoadedRun, Arch, dict[str, Any]]:
    """The winner of the supernet's evolutionary search (mosnas.pipeline.search.search_stage) under the retraining's
    parameter budget, exported; the search's record with its budget."""
    run = study.loaded(cfg.run_dir)
    params = lambda a: run.family.costs(a, run.space, run.net.vocab_size, run.cfg.supernet, cfg.latency)["parameters"]
    low, high = params(run.space.smallest()), params(run.space.largest())
    limit = int(budget_limit(low, high, study.cfg.retrain.params_fraction))
    sc = replace(cfg.search, max_params=limit, latency_ms=(), latency_fractions=(), params_budgets=())
    name = f"study-params-{limit}"
    found = search_stage(run, sc, name, None, cfg.latency, study.progress)
    arch = run.space.arch_from_dict(found["evolution"]["arch"])
    ensure_export(run, arch, run.dir.export(name))
    return run, arch, {**found, "name": name, "params_limit": limit, "parameters": params(arch)}


def compute(
    run: LoadedRun, cfg: Config, arch: Arch, found: dict, supernet: dict, finetuned: tuple[int, float], scratch: dict
) -> dict[str, Any]:
    """The compute of the NAS route (supernet training, search, `finetuned` = (steps, seconds) of fine-tuning to
    the target) in seconds (each training loop's own clock; the search's wall time) and FLOPs (3 x forward per
    trained pair, forward only for the search's validation pairs; the family's FLOPs of one pair at the latency
    protocol's lengths stand for a pair), and the steps a dense model of `arch` takes for the same: `wall_steps`
    (at the scratch run's speed) and `flops_steps`."""
    tc = run.cfg.train
    flops = lambda a: run.family.costs(a, run.space, run.net.vocab_size, run.cfg.supernet, cfg.latency)["flops"]
    pairs = pairs_per_batch(run) * tc.update_freq * supernet.get("world_size", 1)  # pairs of one update
    sup = pairs * supernet_pair_flops(
        run.space, flops, supernet["steps"], tc.sampling, tc.num_random, tc.seed, tc.random_every, tc.random_from
    )
    evaluated = [run.space.arch_from_dict(c["arch"]) for c in found["evolution"]["candidates"]]
    mean_flops = statistics.fmean(flops(a) for a in evaluated)  # the ranked candidates stand for all evaluated
    search = found["evolution"]["num_evaluations"] * found.get("valid_sentences", 0) * mean_flops
    dense_step = 3 * flops(arch) * pairs
    steps, seconds = finetuned
    total_s = supernet["train_s"] + found["evolution_s"] + seconds
    total_flops = sup + search + steps * dense_step
    dense_s_per_step = scratch["train_s"] / max(scratch["steps"], 1)  # the arch alone, at the study's recipe
    return {
        "supernet_s": supernet["train_s"],
        "search_s": found["evolution_s"],
        "finetune_s": round(seconds, 1),
        "total_s": round(total_s, 1),
        "flops": {"supernet": sup, "search": search, "finetune": steps * dense_step, "total": total_flops},
        "pairs_per_update": round(pairs, 2),
        "dense_s_per_step": round(dense_s_per_step, 4),
        "dense_step_flops": dense_step,
        "wall_steps": round(total_s / dense_s_per_step, 1) if dense_s_per_step > 0 else 0.0,
        "flops_steps": round(total_flops / dense_step, 1),
    }


def _at(curve: list[dict[str, Any]], step: int) -> float | None:
    return next((r.get("valid_bleu") for r in curve if r["step"] == step), None)


def retrain(study: Study, variant: str, seed: int, scratch_of: Callable[[Arch, int], dict[str, Any]]) -> dict[str, Any]:
    """The retraining piece of one supernet (see the module docstring); `scratch_of(arch, seed)` is the result
    of the arch's scratch piece (run now unless its record is done: the plan's, shared with the fidelity study)."""
    rt, cfg = study.cfg.retrain, study.supernet_config(variant, seed)
    run, arch, found = searched(study, cfg)
    scratch = scratch_of(arch, seed)
    target = scratch["valid_bleu"]
    out = study.dir.retrain(variant, seed)
    dense = study.dense_config(seed, f"train.log_every={rt.check_every}")  # the loop's clock at every check
    ft = cfg.finetune
    model_dir, curve = finetune(
        dense, run.dir.export(found["name"]), out, "finetune", rt.max_steps, ft.lr, ft.warmup, rt.check_every,
        rt.valid_bleu, progress=study.progress,
    )  # fmt: skip
    reached = reach(curve, "valid_bleu", target)
    spent = reached if reached is not None else rt.max_steps
    ft_s = elapsed_at(read_log(model_dir.parent), spent)
    supernet = study.records.record("supernet", f"{variant}/s{seed}")["result"]
    cost = compute(run, cfg, arch, found, supernet, (spent, ft_s), scratch)
    matched = matched_steps(cost["wall_steps"], cost["flops_steps"], rt.check_every, rt.max_checks)
    template, tc = study.template(arch, seed), dense.train
    control_dir, control_curve = finetune(
        dense, template, out, "control", matched["steps"], tc.lr, tc.warmup, matched["every"], rt.valid_bleu,
        scratch=True, progress=study.progress,
    )  # fmt: skip
    return {
        "arch": arch.to_dict(),
        "parameters": found["parameters"],
        "search": {k: found[k] for k in ("name", "params_limit", "evolution_s")}
        | {"fitness": found["evolution"]["fitness"], "evaluations": found["evolution"]["num_evaluations"]},
        "target": {"valid_bleu": target, "steps": scratch["steps"], "bleu": scratch.get("bleu")}
        | {"piece": f"{arch_key(arch)}/s{seed}"},  # the scratch piece it reads
        "finetune": {
            "reached_step": reached,
            "reached_s": round(ft_s, 1) if reached is not None else None,
            "route_valid_bleu": _at(curve, spent),  # where the route stands at the compute it is charged
            "max_steps": rt.max_steps,
            "curve": _curve(curve),
            **study.score(study.loaded(model_dir.parent), model_dir, cfg),
        },
        "compute": cost,
        "control": {
            **matched,
            "valid_bleu_wall": _at(control_curve, matched["wall"]),
            "valid_bleu_flops": _at(control_curve, matched["flops"]),
            "curve": _curve(control_curve),
            **study.score(study.loaded(control_dir.parent), control_dir, cfg),
        },
    }


def _finetuned(study: Study, run: LoadedRun, cfg: Config, row: dict[str, Any], seed: int) -> dict[str, Any]:
    """A searched winner after the study's short fine-tune (the retraining recipe: the study's dense config),
    re-measured and scored like the winner itself (mosnas.pipeline.run.export_and_score)."""
    steps, ft = study.cfg.pareto.finetune_steps, cfg.finetune
    check = row.get("budget_check")  # the winner, or the fallback that held the budget when measured
    export = run.dir.export(check["tried"][check["chosen"]]["export"] if check else row["name"])
    model_dir, _ = finetune(
        study.dense_config(seed), export, run.dir.finetune, row["name"], steps, ft.lr, ft.warmup, steps, 0,
        progress=study.progress,
    )  # fmt: skip
    arch = run.space.arch_from_dict(row["arch"])
    scored = export_and_score(run, arch, model_dir, cfg.latency, study.progress, model_dir=model_dir)
    return {"name": f"{row['name']} +ft{steps}", "kind": "finetuned", "budget_ms": row.get("budget_ms"), **scored}


def pareto(study: Study, variant: str, seed: int) -> dict[str, Any]:
    """The Pareto piece of one supernet: `mosnas run`'s stages after training (latency predictor, evolutionary
    search at each latency fraction, budgets re-measured, export, BLEU) on it, then the same short fine-tune of
    every winner, re-measured and scored."""
    pc = study.cfg.pareto
    fractions = "[" + ",".join(f"{f:g}" for f in pc.latency_fractions) + "]"
    budgets = [f"search.latency_fractions={fractions}", "search.latency_ms=[]", "search.params_budgets=[]"]
    cfg = study.supernet_config(variant, seed, *budgets, "finetune.steps=0")
    results = run_pipeline(cfg, progress=study.progress)
    run = study.loaded(cfg.run_dir)
    found = [r for r in results["results"] if r["kind"] == "search"]
    rows = results["results"] + [_finetuned(study, run, cfg, r, seed) for r in found if pc.finetune_steps]
    keep = ("name", "kind", "budget_ms", "predicted_latency_ms", "measured_latency_ms", "bleu", "chrf", "parameters")
    lp = results.get("latency_predictor") or {}
    chosen = lp.get("chosen")
    return {
        "rows": [{k: r.get(k) for k in keep} | {"arch": r["arch"], "note": r.get("budget_note")} for r in rows],
        "steps": results["steps"],
        "latency_predictor": {
            "chosen": chosen,
            **{k: (lp.get(chosen) or {}).get(k) for k in ("mape_pct", "kendall_tau")},
        },
        "noise_pct": (lp.get("noise") or {}).get("rel_std_pct"),
    }
