"""Budgets that hold when measured: the search's winner is exported and re-measured; when its measured latency is
over the budget by more than the measured noise floor, the next candidate of the search's ranked list is taken,
skipping those whose prediction, scaled by the measured/predicted ratio seen so far, would break it too. Each
exported model's latency and peak memory are kept in its folder (latency.json) beside what they were made from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosnas.config import LatencyConfig
from mosnas.core.space import Arch
from mosnas.engine.load import LoadedRun
from mosnas.pipeline.export import ensure_export
from mosnas.pipeline.latency import predictor_of, timing, timing_settings
from mosnas.workspace.model_dir import ModelDir
from mosnas.workspace.records import fresh, made_from, read_json, write_json

FALLBACKS = 3  # candidates tried after the winner when it is over its latency budget


def remeasure(run: LoadedRun, arch: Arch, out: Path, lc: LatencyConfig, exported: bool = False) -> dict[str, Any]:
    """latency.json of the model in `out` (exported first unless `exported`): the family's latency sample
    (at least 10 repeats) and its peak inference `memory` (mosnas.latency.memory), in the run's timing device and
    precision; reused while the model and the timing settings hold."""
    if not exported:
        ensure_export(run, arch, out)
    model = ModelDir(out).made_from()  # what the exported model itself was made from
    device, precision = timing(run, lc)
    record = made_from(model=model, latency=timing_settings(lc), precision=precision.name)
    latency_file = ModelDir(out).latency
    if not fresh(latency_file, record, f"latency of {out.name}"):
        latency_file.unlink(missing_ok=True)
        dense = run.family.load_model(out)[0]
        timed = run.family.time_model(dense, lc, device, precision.dtype, max(lc.repeats, 10))
        memory = run.family.memory(dense, lc, device, precision.dtype)
        write_json(latency_file, {**timed, "memory": memory, "made_from": record})
    return read_json(latency_file)


def noise_pct(run: LoadedRun) -> float:
    """The run's latency noise floor (relative std of the reference arch re-measured, %; 0 when unknown)."""
    report = run.dir.latency / "report.json"
    noise = read_json(report).get("noise", {}) if report.is_file() else {}
    return float(noise.get("rel_std_pct") or 0.0)


def hold_budget(
    run: LoadedRun, found: dict[str, Any], name: str, limit: float, lc: LatencyConfig, fallbacks: int = FALLBACKS
) -> tuple[Arch, Path, dict[str, Any]]:
    """(arch, export folder, check) for a latency budget of `limit` ms: the first of the search's ranked
    candidates (found["evolution"]["candidates"], the winner first) whose measured latency is within
    limit * (1 + noise floor), trying at most 1 + `fallbacks` of them. The winner is exported to
    RUN/export/<name>, fallback i to <name>-fallback<i>. When none holds, the one measured fastest is kept and
    `check["held"]` is False. `check` lists every tried arch with its predicted and measured latency."""
    predictor = predictor_of(run)[0]
    noise = noise_pct(run)
    tolerance = limit * (1 + noise / 100)
    ranked = found["evolution"].get("candidates") or [{"arch": found["evolution"]["arch"]}]
    tried: list[dict[str, Any]] = []
    ratio = 1.0  # the largest measured/predicted latency seen: how far the predictor is off near this budget
    for cand in ranked:
        if len(tried) > fallbacks:
            break
        arch = run.space.arch_from_dict(cand["arch"])
        predicted = float(predictor(arch))
        if tried and predicted * ratio > tolerance:
            continue  # would break the budget too, judging by the candidates measured so far
        out = run.dir.export(name if not tried else f"{name}-fallback{len(tried)}")
        measured = remeasure(run, arch, out, lc)["latency_ms"]
        tried.append({"arch": arch.to_dict(), "predicted_ms": round(predicted, 3), "measured_ms": measured})
        tried[-1].update(export=out.name, fitness=cand.get("fitness"))
        if measured <= tolerance:
            break
        ratio = max(ratio, measured / predicted)
    held = [i for i, t in enumerate(tried) if t["measured_ms"] <= tolerance]
    chosen = held[0] if held else min(range(len(tried)), key=lambda i: tried[i]["measured_ms"])
    check = {
        "budget_ms": limit,
        "noise_pct": round(noise, 3),
        "tolerance_ms": round(tolerance, 3),
        "held": bool(held),
        "chosen": chosen,
        "tried": tried,
    }
    return run.space.arch_from_dict(tried[chosen]["arch"]), run.dir.export(tried[chosen]["export"]), check


def describe_check(check: dict[str, Any]) -> str:
    """One line for a summary: how the budget was checked by measurement."""
    t, c = check["tried"], check["chosen"]
    first = f"winner predicted {t[0]['predicted_ms']:.2f} ms, measured {t[0]['measured_ms']:.2f} ms"
    limit = f"budget {check['budget_ms']:.2f} ms (+{check['noise_pct']:.1f}% noise = {check['tolerance_ms']:.2f} ms)"
    if c == 0 and check["held"]:
        return f"{limit}: {first}: held"
    if check["held"]:
        return f"{limit}: {first}: over; fallback {c} ({t[c]['measured_ms']:.2f} ms measured) holds"
    return (
        f"{limit}: {first}: over; {len(t)} candidates tried, none held: kept the fastest ({t[c]['measured_ms']:.2f} ms)"
    )
