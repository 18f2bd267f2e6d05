"""`mosnas run`: train -> latency -> search -> export -> fine-tune -> evaluate -> report.

Each stage writes its files into the run folder with what they were made from (mosnas.records) and is
skipped while that still holds, so a stopped run continues where it stopped and a changed input redoes
exactly the stages that read it. What depends on the model, data or metric is asked of the
run's family (`run.family`: see mosnas.family)."""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mosnas.config import Config, LatencyConfig, SearchConfig
from mosnas.errors import ConfigError
from mosnas.export import ensure_export
from mosnas.finetune import finetune
from mosnas.hardware import Precision, resolve_precision
from mosnas.latency import (
    LatencyPredictor,
    LinearPredictor,
    evaluate_predictor,
    measure_archs,
    read_samples,
    timing_device,
    workload_precision,
    write_samples,
)
from mosnas.rebuild import write_reports
from mosnas.records import changes, fresh, made_from, read_json, write_json
from mosnas.run import LoadedRun, RunDir, adopt_config, load_run, needs_training, read_log
from mosnas.search import Budget, evolutionary_search, random_search
from mosnas.space import Arch
from mosnas.stats import scatter_plot
from mosnas.train import train

# -- latency ---------------------------------------------------------------------------------------
TIMING = ("src_len", "tgt_len", "beam", "warmup", "repeats", "threads", "device", "precision")  # what a sample is


def _timing_settings(lc: LatencyConfig, *extra: str) -> dict[str, Any]:
    return {k: getattr(lc, k) for k in TIMING + extra}


def timing(run: LoadedRun, lc: LatencyConfig) -> tuple[torch.device, Precision]:
    """The device and precision this run's latencies are measured in: decided once per trained supernet
    (for `auto`, by timing its largest arch both ways, see `latency.workload_precision`) and kept in
    latency/timing.json, so the predictor's samples and the winners' re-measurements agree."""
    path = run.dir.latency / "timing.json"
    record = made_from(
        latency={k: getattr(lc, k) for k in ("device", "precision", "threads")}, checkpoint=run.checkpoint
    )
    device = timing_device(lc.device)
    if fresh(path, record, "latency timing"):
        return device, Precision.from_dict(read_json(path)["precision"])

    def time_in(dtype: torch.dtype) -> float:
        model = run.net.export(run.space.largest())
        return run.family.time_model(model, lc, device, dtype, max(lc.repeats, 3))["latency_ms"]

    precision = workload_precision(lc.precision, device, lc.threads, time_in)
    write_json(path, {"made_from": record, "precision": precision.to_dict()})
    return device, precision


def _samples(run: LoadedRun, lc: LatencyConfig, progress: bool) -> tuple[list[dict[str, Any]], Precision]:
    """The first `num_samples` archs of the seeded list, measured: samples measured with the same timing
    settings and checkpoint are kept (a longer list only measures what is missing), others are dropped."""
    samples_file, record_file = run.dir.latency / "samples.jsonl", run.dir.latency / "samples.made_from.json"
    record = made_from(latency=_timing_settings(lc, "seed"), checkpoint=run.checkpoint)
    if not fresh(record_file, record, "latency samples"):
        samples_file.unlink(missing_ok=True)
        write_json(record_file, {"made_from": record})  # before any sample: samples.jsonl holds only these
    samples = read_samples(samples_file) if samples_file.is_file() else []
    device, precision = timing(run, lc)
    rng = random.Random(lc.seed)
    archs = [run.space.largest(), run.space.smallest()] + [run.space.sample(rng) for _ in range(lc.num_samples - 2)]
    samples = samples[: len(archs)]
    time_model = lambda model: run.family.time_model(model, lc, device, precision.dtype, lc.repeats)
    for start in range(len(samples), len(archs), 20):  # measure in chunks so a stopped run keeps what it measured
        samples += measure_archs(run.net, archs[start : start + 20], time_model, progress)
        write_samples(samples, samples_file)
    return samples, precision


def latency_stage(run: LoadedRun, lc: LatencyConfig, progress: bool = True) -> dict[str, Any]:
    """Measure `num_samples` archs, fit the MLP predictor (and a linear baseline), report held-out accuracy."""
    out = run.dir.latency
    report_file = out / "report.json"
    record = made_from(latency=asdict(lc), checkpoint=run.checkpoint)
    if fresh(report_file, record, "latency predictor"):
        return read_json(report_file)
    report_file.unlink(missing_ok=True)  # the predictor is trusted only beside its report
    samples, precision = _samples(run, lc, progress)
    split = int(round(len(samples) * (1 - lc.holdout)))
    order = list(range(len(samples)))
    random.Random(lc.seed).shuffle(order)
    train_s, test_s = [samples[i] for i in order[:split]], [samples[i] for i in order[split:]]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(max(lc.threads, 1))
        mlp = LatencyPredictor(run.space, lc.hidden, lc.num_layers, lc.seed).fit(train_s, steps=lc.fit_steps)
    finally:
        torch.set_num_threads(threads)
    linear = LinearPredictor(run.space).fit(train_s)
    mlp.save(out)
    test_archs = [run.space.arch_from_dict(s["arch"]) for s in test_s]
    scatter_plot(
        [s["latency_ms"] for s in test_s],
        mlp.predict(test_archs),
        out / "scatter.png",
        title=f"latency predictor, held-out archs ({run.space.name})",
    )
    report = {
        "train_samples": len(train_s),
        "heldout_samples": len(test_s),
        "mlp": evaluate_predictor(mlp, test_s),
        "linear": evaluate_predictor(linear, test_s),
        "device": samples[0].get("device"),
        "settings": samples[0].get("settings"),
        "precision": precision.to_dict(),
        "smallest_ms": samples[1]["latency_ms"],
        "largest_ms": samples[0]["latency_ms"],
        "made_from": record,
    }
    write_json(report_file, report)
    return report


def predictor_of(run: LoadedRun) -> tuple[LatencyPredictor, dict[str, Any]]:
    """The run's latency predictor and its record; refused (one line) when missing or made from another
    checkpoint than the run's newest."""
    report_file = run.dir.latency / "report.json"
    stored = read_json(report_file).get("made_from") if report_file.is_file() else None
    if stored is None:
        raise ConfigError(f"a latency budget needs the predictor: run `mosnas latency {run.run_dir}` first")
    if stored.get("checkpoint") != run.checkpoint:
        why = "; ".join(changes(stored["checkpoint"], run.checkpoint)[:1])
        raise ConfigError(f"the latency predictor is stale (checkpoint {why}): run `mosnas latency {run.run_dir}`")
    return LatencyPredictor.load(run.dir.latency, run.space.schema), stored


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
            out[f"latency-{v:g}ms"] = v
    if not out and (sc.max_params or sc.max_flops):
        out["limits"] = None
    return out


def search_stage(
    run: LoadedRun, sc: SearchConfig, name: str, latency_ms: float | None, lc: LatencyConfig, progress: bool = True
) -> dict[str, Any]:
    """Evolutionary search (and the random baseline at equal evaluations) under one budget."""
    out_file = run.dir.search(name)
    predictor, upstream = predictor_of(run) if latency_ms is not None else (None, None)
    settings = {k: v for k, v in asdict(sc).items() if k not in ("latency_ms", "latency_fractions")}
    settings.update(latency_ms=latency_ms, flops_at=[lc.src_len, lc.tgt_len])  # FLOPs count at these lengths
    record = made_from(search=settings, predictor=upstream, checkpoint=run.checkpoint)
    if fresh(out_file, record, f"search {name}"):
        return read_json(out_file)
    out_file.unlink(missing_ok=True)
    budget = Budget(
        latency_ms=latency_ms,
        latency=predictor,
        max_params=sc.max_params or None,
        params=lambda arch: _costs(run, arch, lc)["parameters"],
        max_flops=sc.max_flops or None,
        flops=lambda arch: _costs(run, arch, lc)["flops"],
    )
    device = next(run.net.parameters()).device
    precision = resolve_precision(sc.precision, device, "search.precision")
    fitness, about = run.family.fitness(run, sc, device, precision.bf16)
    t0 = time.perf_counter()
    settings = (sc.population, sc.parents, sc.mutations, sc.crossovers, sc.mutation_prob, sc.generations, sc.seed)
    evo = evolutionary_search(run.space, fitness, budget, *settings, progress=progress)
    result: dict[str, Any] = {
        "budget": name,
        "latency_ms": latency_ms,
        **{k: getattr(sc, k) for k in ("max_params", "max_flops")},
        **about,
        "precision": precision.to_dict(),
        "evolution": evo.to_dict(),
        "evolution_s": round(time.perf_counter() - t0, 1),
    }
    if sc.random_baseline:
        rnd = random_search(run.space, fitness, budget, evo.num_evaluations, sc.seed, progress=progress)
        result["random"] = rnd.to_dict()
    result["predicted_latency_ms"] = round(predictor(evo.arch), 3) if predictor else None
    write_json(out_file, {**result, "made_from": record})
    return read_json(out_file)


# -- export, evaluation, report ----------------------------------------------------------------------
def _costs(run: LoadedRun, arch: Arch, lc: LatencyConfig) -> dict[str, int]:
    return run.family.costs(arch, run.space, run.net.vocab_size, run.cfg.supernet, lc)


def export_and_score(
    run: LoadedRun, arch: Arch, out: Path, lc: LatencyConfig, progress: bool, model_dir: Path | None = None
) -> dict[str, Any]:
    """Export `arch` (unless `model_dir` holds it already: a fine-tuned model), re-measure its latency and score
    it on the test split; each output is reused only while what it was made from holds."""
    if model_dir is None:
        ensure_export(run, arch, out)
    model = read_json(out / "export.json").get("made_from")  # what the exported model itself was made from
    scores = run.family.evaluate(out, run.cfg, progress, model)
    device, precision = timing(run, lc)
    record = made_from(model=model, latency=_timing_settings(lc), precision=precision.name)
    latency_file = out / "latency.json"
    if not fresh(latency_file, record, f"latency of {out.name}"):  # the winner's latency is re-measured
        latency_file.unlink(missing_ok=True)
        dense = run.family.load_model(out)[0]
        timed = run.family.time_model(dense, lc, device, precision.dtype, max(lc.repeats, 10))
        write_json(latency_file, {**timed, "made_from": record})
    return {
        **scores,
        "measured_latency_ms": read_json(latency_file)["latency_ms"],
        "arch": arch.to_dict(),
        **_costs(run, arch, lc),
    }


def _budget_rows(cfg: Config, run: LoadedRun, name: str, limit: float | None, progress: bool) -> list[dict[str, Any]]:
    """The searched subnet of one budget (and, with finetune.steps, the same subnet fine-tuned)."""
    lc, export = cfg.latency, run.dir.export(name)
    found = search_stage(run, cfg.search, name, limit, lc, progress)
    arch = run.space.arch_from_dict(found["evolution"]["arch"])
    row = {
        "name": name,
        "kind": "search",
        "budget_ms": limit,
        "fitness": found["evolution"]["fitness"],
        "predicted_latency_ms": found["predicted_latency_ms"],
        **{k: found[k] for k in ("max_params", "max_flops")},  # the row carries its own limits
        **export_and_score(run, arch, export, lc, progress),
    }
    if "random" in found:
        row["random_search_fitness"] = found["random"]["fitness"]
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
    if force or needs_training(cfg):
        train(cfg, resume=not force, force=force, show_progress=progress)
    else:
        adopt_config(cfg)  # the stages below read the run's config: the decode, eval, search... settings given now
    loaded = load_run(cfg.run_dir)
    run_dir, lc = RunDir(cfg.run_dir), cfg.latency
    for report in (run_dir.results, run_dir.summary, run_dir.pareto):  # rebuilt from fresh outputs only
        report.unlink(missing_ok=True)
    names = budgets(cfg.search, None)
    latency_report = None
    if cfg.search.latency_ms or cfg.search.latency_fractions:
        latency_report = latency_stage(loaded, lc, progress)
        predictor = predictor_of(loaded)[0]
        names = budgets(cfg.search, (predictor(loaded.space.smallest()), predictor(loaded.space.largest())))
    rows = []
    for name in cfg.eval.archs:  # reference subnets: largest and smallest
        arch = loaded.space.parse_arch(name)
        out = run_dir.export(name if name in ("largest", "smallest") else Path(name).stem)
        rows.append({"name": name, "kind": "reference", **export_and_score(loaded, arch, out, lc, progress)})
    for name, limit in names.items():
        rows += _budget_rows(cfg, loaded, name, limit, progress)
    results = {
        "name": cfg.name,
        "family": cfg.family,
        "generator": cfg.supernet.generator,
        "steps": loaded.step,
        "train_log_last": next((r for r in reversed(read_log(run_dir.root)) if "elapsed_s" in r), {}),
        "latency_predictor": latency_report,
        "results": rows,
        "wall_s_this_call": round(time.perf_counter() - t0, 1),
    }
    write_json(run_dir.results, results)
    write_reports(loaded, results)  # summary.md, pareto.png, train_curve.png
    return results
