"""Latency: time any workload of an exported subnet (a family says what it runs), interleaved across archs,
with the noise floor of the measurement itself. The predictors are in mosnas.latency.predictors (MLP, linear),
mosnas.latency.table (per-layer lookup table) and mosnas.latency.datasets (fit on a portable dataset)."""

from __future__ import annotations

import json
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mosnas.core.space import Arch
from mosnas.errors import ConfigError, PredictorError
from mosnas.hardware import Precision, cpu_flags, cpu_name, resolve_precision
from mosnas.latency.predictors import LatencyPredictor, LinearPredictor, evaluate_predictor
from mosnas.workspace.files import read_text_file
from mosnas.workspace.records import write_text

__all__ = ["LatencyPredictor", "LinearPredictor", "evaluate_predictor"]  # their home: mosnas.latency.predictors

# -- measurement ------------------------------------------------------------------------------


def timing_device(setting: str) -> torch.device:
    """The device of `latency.device`: cpu | cuda | cuda:N | auto (the first GPU when there is one, else cpu).
    Raises ConfigError for a CUDA device this machine does not have."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError:
        raise ConfigError(f"latency.device: unknown device {setting!r}; expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"latency.device={setting}: no such CUDA device on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"latency.device: {setting!r} is not supported; expected cpu, cuda, cuda:N or auto")
    return device


def workload_precision(
    requested: str, device: torch.device, threads: int, time_in: Callable[[torch.dtype], float]
) -> Precision:
    """The precision models are timed (deployed) in. `auto` first asks `resolve_precision` (its matmul probe
    rules out emulated bf16 cheaply); where that says bf16, the workload itself decides: `time_in(dtype)`
    (ms of one representative model, e.g. the largest arch) is measured in both precisions and bf16 is kept
    only if it is faster. A batch-1 beam search is not matmul-bound: on a CPU with native bf16 it ran
    slower in bf16 (largest quick-start arch 174.7 vs 158.5 ms) although a 256^3 matmul is 2x faster."""
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(max(threads, 1))
        first = resolve_precision(requested, device, "latency.precision")
        if requested != "auto" or not first.bf16:
            return first
        fp32, bf16 = time_in(torch.float32), time_in(torch.bfloat16)
    finally:
        torch.set_num_threads(old)
    measured = f"the largest arch took {bf16:.2f} ms in bf16 vs {fp32:.2f} ms in fp32"
    timed = {**first.probe, "workload_fp32_ms": round(fp32, 3), "workload_bf16_ms": round(bf16, 3)}
    if bf16 < fp32:
        return Precision("bf16", requested, f"auto: bf16 is faster for this workload: {measured}", timed)
    return Precision("fp32", requested, f"auto: bf16 is not faster for this workload: {measured}", timed)


def device_info(device: str | torch.device = "cpu", threads: int | None = None) -> dict[str, Any]:
    """What a latency sample was measured on: device name, thread count (`threads`, default torch's now),
    CPU flags, torch and OS."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "device": str(device),
        "name": name,
        "threads": torch.get_num_threads() if threads is None else threads,
        "cpu_flags": cpu_flags(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


@torch.no_grad()
def measure(
    work: Callable[[], Any],
    warmup: int = 5,
    repeats: int = 20,
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Latency (ms) of `work()`, whatever it runs: `warmup` untimed calls, then `repeats` timed ones; drops
    the slowest and fastest 10% and reports the median (`latency_ms`) and mean (`mean_ms`) of the rest, with
    every time (`times_ms`) and what it ran on (`device`). Runs on `threads` CPU threads (restored after);
    CUDA work is synchronized before each clock reading."""
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"latency: repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    old_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        for _ in range(warmup):
            work()
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            work()
            sync()  # CUDA kernels run asynchronously: wait for them before reading the clock
            times.append((time.perf_counter() - start) * 1000)
        info = device_info(device)
    finally:
        torch.set_num_threads(old_threads)
    cut = int(0.1 * repeats)
    kept = sorted(times)[cut : repeats - cut]
    return {"latency_ms": statistics.median(kept), "mean_ms": statistics.fmean(kept), "times_ms": times, "device": info}


def _robust(times: list[float]) -> dict[str, float]:
    """Median (`latency_ms`) and the mean of the middle 80% (`mean_ms`) of `times` (ms)."""
    cut = int(0.1 * len(times))
    kept = sorted(times)[cut : len(times) - cut]
    return {"latency_ms": statistics.median(times), "mean_ms": statistics.fmean(kept)}


@torch.no_grad()
def measure_interleaved(
    works: Sequence[Callable[[], Any]],
    warmup: int = 2,
    repeats: int = 10,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Time several workloads together: each of `repeats` rounds runs every work once, in a fresh seeded order,
    so a slow phase of a shared machine (another process, a clock change) falls on all works alike instead of
    on whichever was being timed then; `warmup` untimed rounds come first. Per work (in order): `latency_ms`
    (median of its times), `mean_ms` (mean of the middle 80%), `times_ms`. CUDA work is synchronized before
    each clock reading; `threads` CPU threads (restored after). Raises ConfigError for repeats < 1 or
    warmup < 0."""
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"latency: repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    rng, times = random.Random(seed), [[] for _ in works]
    old_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        for r in range(warmup + repeats):
            order = list(range(len(works)))
            rng.shuffle(order)
            for i in order:
                sync()
                start = time.perf_counter()
                works[i]()
                sync()  # CUDA kernels run asynchronously: wait for them before reading the clock
                if r >= warmup:
                    times[i].append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(old_threads)
    return [{**_robust(t), "times_ms": t} for t in times]


def noise_floor(latencies_ms: Sequence[float]) -> dict[str, Any]:
    """The spread of one model's latency re-measured (each value one full measurement, e.g. a median of
    repeats): `rel_std_pct` (sample std / median), `mape_pct` (mean |x - median| / median: what a perfect
    predictor's MAPE would be against these measurements), `range_pct` ((max - min) / median), all in %.
    A predictor's error cannot meaningfully go below it. Needs >= 2 values (else the spreads are None)."""
    x = np.asarray(latencies_ms, dtype=np.float64)
    if len(x) == 0:
        raise PredictorError("noise_floor needs at least one latency")
    med = float(np.median(x))
    if len(x) < 2:
        return {"n": 1, "median_ms": med, "rel_std_pct": None, "mape_pct": None, "range_pct": None}
    return {
        "n": len(x),
        "median_ms": med,
        "rel_std_pct": float(x.std(ddof=1) / med * 100),
        "mape_pct": float(np.mean(np.abs(x - med)) / med * 100),
        "range_pct": float((x.max() - x.min()) / med * 100),
    }


def measure_archs(
    supernet: Any,
    archs: list[Arch],
    workload: Callable[[Any], Callable[[], Any]],
    timing: dict[str, Any],
    reference: Arch | None = None,
    interleave: int = 8,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Latency samples of each arch's exported (collapsed, dense) model, `interleave` archs timed together
    (measure_interleaved with `timing`: warmup, repeats, device, threads, seed); `workload(model)` is the
    family's work of one sample. With `reference`, that arch is timed in every group too and its sample
    ({"reference": true, ...}) follows the group's: its spread over the groups is the noise floor. Each sample
    holds `cost_s`, the wall time its group took divided by the models timed."""
    ref_work = workload(supernet.export(reference)) if reference is not None else None
    samples: list[dict[str, Any]] = []
    bar = tqdm(total=len(archs), desc="latency", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(archs), max(interleave, 1)):
        group = archs[start : start + max(interleave, 1)]
        works = [workload(supernet.export(a)) for a in group] + ([ref_work] if ref_work else [])
        t0 = time.perf_counter()
        timed = measure_interleaved(works, **{**timing, "seed": timing.get("seed", 0) + start})
        cost = (time.perf_counter() - t0) / len(works)
        info = device_info(timing.get("device", "cpu"), timing.get("threads"))
        for i, (arch, t) in enumerate(zip(group + ([reference] if ref_work else []), timed)):
            sample = {"arch": arch.to_dict(), **t, "cost_s": round(cost, 4), "device": info}
            samples.append({**sample, "reference": True} if i == len(group) else sample)
        bar.update(len(group))
    bar.close()
    return samples


def write_samples(samples: list[dict[str, Any]], path: str | Path) -> None:
    """Write latency samples as JSON lines (atomically: a stopped run keeps the previous file)."""
    write_text(Path(path), "".join(json.dumps(s) + "\n" for s in samples))


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """Read latency samples written by write_samples."""
    text = read_text_file(path, "latency samples", PredictorError)
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise PredictorError(f"{path}: line {n} is not valid JSON") from None
    return out
