"""The latency stage of a run: measure archs (interleaved, with the noise floor of one re-measured reference),
measure the per-layer lookup table, fit HAT's MLP, the linear baseline and the calibrated table on the same
training archs, and keep the one with the lowest held-out MAPE (its report says which and why).

Files in RUN/latency/: timing.json (device, precision), samples.jsonl (+ .made_from.json), table.json (the
layer shapes' times), report.json, predictor.json (+ predictor.safetensors for the MLP), scatter.png."""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mosnas.config import LatencyConfig
from mosnas.engine.load import LoadedRun
from mosnas.errors import ConfigError
from mosnas.hardware import Precision
from mosnas.latency.load import load_predictor
from mosnas.latency.measure import (
    measure_archs,
    measure_interleaved,
    noise_floor,
    read_samples,
    timing_device,
    workload_precision,
    write_samples,
)
from mosnas.latency.predictors import LatencyPredictor, LinearPredictor, evaluate_predictor
from mosnas.latency.stats import scatter_plot
from mosnas.latency.table import TablePredictor
from mosnas.workspace.records import changes, fresh, made_from, read_json, write_json

TIMING = ("src_len", "tgt_len", "beam", "warmup", "repeats", "threads", "device", "precision")
INTERLEAVE = 8  # archs timed together, round-robin, with the noise-floor reference arch
TABLE_ARCHS = 20  # measured archs that calibrate the per-layer lookup table


def timing_settings(lc: LatencyConfig, *extra: str) -> dict[str, Any]:
    """The settings a latency sample is made with (its record)."""
    return {**{k: getattr(lc, k) for k in TIMING + extra}, "interleave": INTERLEAVE}


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


def _timing(lc: LatencyConfig, device: torch.device, offset: int = 0) -> dict[str, Any]:
    """measure_interleaved's keywords from the settings (latency.threads=0 means 1; each group its own order)."""
    threads, seed = max(lc.threads, 1), lc.seed + offset
    return {"warmup": lc.warmup, "repeats": lc.repeats, "device": device, "threads": threads, "seed": seed}


def measured_samples(run: LoadedRun, lc: LatencyConfig, progress: bool) -> tuple[list[dict], list[dict], Precision]:
    """(arch samples, reference samples, precision): the first `num_samples` archs of the seeded list (largest
    and smallest first), measured `interleave` at a time with a reference arch (drawn first from the same
    seeded generator) in every group: its spread is the noise floor. Samples made with the same settings and
    checkpoint are kept, so a stopped run or a longer list measures only what is missing."""
    samples_file, record_file = run.dir.latency / "samples.jsonl", run.dir.latency / "samples.made_from.json"
    record = made_from(latency=timing_settings(lc, "seed"), checkpoint=run.checkpoint)
    if not fresh(record_file, record, "latency samples"):
        samples_file.unlink(missing_ok=True)
        write_json(record_file, {"made_from": record})  # before any sample: samples.jsonl holds only these
    samples = read_samples(samples_file) if samples_file.is_file() else []
    device, precision = timing(run, lc)
    rng = random.Random(lc.seed)
    reference = run.space.sample(rng)
    archs = [run.space.largest(), run.space.smallest()] + [run.space.sample(rng) for _ in range(lc.num_samples - 2)]
    samples, done = _prefix(samples, len(archs))
    group = INTERLEAVE
    settings = {**timing_settings(lc), "precision": precision.name}
    workload = lambda model: run.family.workload(model, lc, device, precision.dtype)
    bar = tqdm(total=len(archs), initial=done, desc="latency", disable=not progress, dynamic_ncols=True)
    for start in range(done, len(archs), group):  # a stopped run keeps the groups it measured
        group_archs, how = archs[start : start + group], _timing(lc, device, start)
        timed = measure_archs(run.net, group_archs, workload, how, reference, group, progress=False)
        samples += [{**s, "settings": settings} for s in timed]
        write_samples(samples, samples_file)
        bar.update(len(group_archs))
    bar.close()
    return [s for s in samples if not s.get("reference")], [s for s in samples if s.get("reference")], precision


def _prefix(samples: list[dict], n: int) -> tuple[list[dict], int]:
    """The samples of the first `n` archs (in file order, with the reference samples among them and the one
    right after the n-th) and how many archs that is: a shorter list reuses a prefix, a longer one adds groups."""
    out, archs = [], 0
    for s in samples:
        if archs == n and not s.get("reference"):
            break
        out.append(s)
        archs += not s.get("reference")
    return out, archs


def layer_table(run: LoadedRun, lc: LatencyConfig, progress: bool) -> dict[str, Any]:
    """Every layer shape of the space timed alone (the family's space_parts / part_workload), interleaved in
    groups; kept in latency/table.json while the timing settings, vocabulary and space hold."""
    path = run.dir.latency / "table.json"
    record = made_from(latency=timing_settings(lc, "seed"), space=run.space.to_dict(), vocab=run.net.vocab_size)
    if fresh(path, record, "latency table"):
        return read_json(path)
    device, precision = timing(run, lc)
    keys, table, t0 = run.family.space_parts(run.space), {}, time.perf_counter()
    group = 2 * INTERLEAVE  # layer modules built at once: bounded memory for wide spaces
    for start in tqdm(range(0, len(keys), group), desc="latency table", disable=not progress, dynamic_ncols=True):
        part = keys[start : start + group]
        args = (run.space, run.net.vocab_size, run.cfg.supernet, lc, device, precision.dtype)
        works = [run.family.part_workload(k, *args) for k in part]
        timed = measure_interleaved(works, **_timing(lc, device, start))
        table.update({k: t["latency_ms"] for k, t in zip(part, timed)})
    result = {"table": table, "entries": len(keys), "seconds": round(time.perf_counter() - t0, 1)}
    write_json(path, {**result, "made_from": record})
    return read_json(path)


def _split(samples: list[dict], lc: LatencyConfig) -> tuple[list[dict], list[dict]]:
    order = list(range(len(samples)))
    random.Random(lc.seed).shuffle(order)
    cut = int(round(len(samples) * (1 - lc.holdout)))
    return [samples[i] for i in order[:cut]], [samples[i] for i in order[cut:]]


def _fit(run: LoadedRun, lc: LatencyConfig, train_s: list[dict], table: dict[str, Any]) -> dict[str, tuple[Any, int]]:
    """Each predictor fit on the training archs, with the measurements it needed (archs + layer shapes)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(max(lc.threads, 1))
        mlp = LatencyPredictor(run.space, lc.hidden, lc.num_layers, lc.seed).fit(train_s, steps=lc.fit_steps)
    finally:
        torch.set_num_threads(threads)
    groups = tuple(run.family.latency_parts(run.space.smallest()))
    calibration = train_s[:TABLE_ARCHS]
    tab = TablePredictor(run.space, run.family.latency_parts, table["table"], groups).fit(calibration)
    return {
        "mlp": (mlp, len(train_s)),
        "linear": (LinearPredictor(run.space).fit(train_s), len(train_s)),
        "table": (tab, table["entries"] + len(calibration)),
    }


def latency_stage(run: LoadedRun, lc: LatencyConfig, progress: bool = True) -> dict[str, Any]:
    """Measure the archs and the layer table, fit every predictor, keep the best on held-out archs."""
    out = run.dir.latency
    report_file = out / "report.json"
    record = made_from(latency=asdict(lc), checkpoint=run.checkpoint)
    if fresh(report_file, record, "latency predictor"):
        return read_json(report_file)
    report_file.unlink(missing_ok=True)  # the predictor is trusted only beside its report
    samples, refs, precision = measured_samples(run, lc, progress)
    table = layer_table(run, lc, progress)
    train_s, test_s = _split(samples, lc)
    fitted = _fit(run, lc, train_s, table)
    errors = {name: {**evaluate_predictor(p, test_s), "measurements": n} for name, (p, n) in fitted.items()}
    chosen = min(errors, key=lambda k: errors[k]["mape_pct"])
    others = ", ".join(f"{k} {v['mape_pct']:.2f}%" for k, v in errors.items() if k != chosen)
    (out / "predictor.safetensors").unlink(missing_ok=True)
    fitted[chosen][0].save(out)
    test_archs = [run.space.arch_from_dict(s["arch"]) for s in test_s]
    title = f"latency predictor ({chosen}), held-out archs ({run.space.name})"
    scatter_plot([s["latency_ms"] for s in test_s], fitted[chosen][0].predict(test_archs), out / "scatter.png", title)
    report = {
        "train_samples": len(train_s),
        "heldout_samples": len(test_s),
        **{name: e for name, e in errors.items()},
        "chosen": chosen,
        "why": f"lowest held-out MAPE: {errors[chosen]['mape_pct']:.2f}% ({others})",
        "noise": noise_floor([s["latency_ms"] for s in refs]),
        "seconds_per_arch": statistics.median(s["cost_s"] for s in samples),
        "table_entries": table["entries"],
        "table_seconds": table["seconds"],
        "device": samples[0].get("device"),
        "settings": samples[0].get("settings"),
        "precision": precision.to_dict(),
        "smallest_ms": samples[1]["latency_ms"],
        "largest_ms": samples[0]["latency_ms"],
        "made_from": record,
    }
    write_json(report_file, report)
    return report


def predictor_of(run: LoadedRun) -> tuple[Any, dict[str, Any]]:
    """The run's latency predictor and its record; refused (one line) when missing or made from another
    checkpoint than the run's newest."""
    report_file = run.dir.latency / "report.json"
    stored = read_json(report_file).get("made_from") if report_file.is_file() else None
    if stored is None:
        raise ConfigError(f"a latency budget needs the predictor: run `mosnas latency {run.run_dir}` first")
    if stored.get("checkpoint") != run.checkpoint:
        why = "; ".join(changes(stored["checkpoint"], run.checkpoint)[:1])
        raise ConfigError(f"the latency predictor is stale (checkpoint {why}): run `mosnas latency {run.run_dir}`")
    return load_predictor(run.dir.latency, run.space, run.family.latency_parts), stored


def budget_predictor(run: LoadedRun, latency_ms: float | None, folder: str | Path | None = None) -> tuple[Any, Any]:
    """(predictor, record) of a search: none without a latency budget, the run's own (predictor_of), or the
    one saved in `folder` (e.g. fit on another device's dataset), recorded by its path and content hash."""
    if latency_ms is None:
        return None, None
    if folder is None:
        return predictor_of(run)
    text = (Path(folder) / "predictor.json").read_bytes() if (Path(folder) / "predictor.json").is_file() else b""
    predictor = load_predictor(folder, run.space, run.family.latency_parts)
    return predictor, {"folder": str(Path(folder).resolve()), "sha256": hashlib.sha256(text).hexdigest()}
