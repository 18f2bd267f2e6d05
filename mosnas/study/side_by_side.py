"""The side-by-side latency piece of a seed: every arch of the seed's Pareto pieces (the reference subnets and
each budget's winner, of every variant) re-measured in one session, interleaved, so all fronts stand on one
latency axis.

Each Pareto piece measures its own predictor's samples and re-measures its own winners, at its own time. On a
shared machine that is not one axis: in the CPU study's first seed the same largest arch measured 105.7 ms in
one piece and 182.3 ms in another. A piece's budgets are consistent within the piece (its predictor and its
re-measurements come minutes apart), but fronts from different pieces cannot be compared in ms. This piece
times every arch together (mosnas.latency.measure.measure_interleaved: each round runs every model once in a fresh
seeded order, so a slow phase falls on all of them alike), in `BLOCKS` consecutive blocks whose medians' spread
is each arch's noise floor. Latency does not depend on the weights (HAT's protocol: fixed source and target
lengths, the exported dense model), so one supernet's exports stand for every variant's, inherited or
fine-tuned."""

from __future__ import annotations

import statistics
from typing import Any

from mosnas.errors import ConfigError
from mosnas.latency.measure import device_info, measure_interleaved, noise_floor
from mosnas.pipeline.latency import timing
from mosnas.study.archs import arch_key
from mosnas.study.work import Study

BLOCKS = 3  # consecutive blocks of `latency.repeats` interleaved rounds: their medians' spread is the noise floor


def pareto_records(study: Study, seed: int) -> dict[str, dict[str, Any]]:
    """variant -> the finished Pareto record of `seed`; ConfigError (one line) naming the first one missing."""
    out = {}
    for variant, _ in study.cfg.variants:
        record = study.records.record("pareto", f"{variant}/s{seed}")
        if record is None:
            raise ConfigError(f"study piece latency s{seed} needs the piece pareto {variant}/s{seed} finished first")
        out[variant] = record
    return out


def side_by_side(study: Study, seed: int) -> dict[str, Any]:
    """Measure every distinct arch of the seed's Pareto rows together (the study's latency settings, the
    precision the first variant's run chose): per arch `latency_ms` (median of all timed rounds, ms) and
    `range_pct` ((max - min) / median of the blocks' medians, %), with the Pareto records it read."""
    records = pareto_records(study, seed)
    first = study.cfg.variants[0][0]
    cfg = study.supernet_config(first, seed)
    run, lc = study.loaded(cfg.run_dir), cfg.latency
    archs: dict[str, dict[str, Any]] = {}
    for record in records.values():
        for row in record["result"]["rows"]:
            archs.setdefault(arch_key(run.space.arch_from_dict(row["arch"])), row["arch"])
    device, precision = timing(run, lc)
    models = [run.net.export(run.space.arch_from_dict(a)) for a in archs.values()]
    works = [run.family.workload(m, lc, device, precision.dtype) for m in models]
    threads = max(lc.threads, 1)
    blocks = [measure_interleaved(works, lc.warmup, lc.repeats, device, threads, lc.seed + b) for b in range(BLOCKS)]
    rows = []
    for i, (key, arch) in enumerate(archs.items()):
        times = [t for block in blocks for t in block[i]["times_ms"]]
        floor = noise_floor([block[i]["latency_ms"] for block in blocks])
        rows.append({"key": key, "arch": arch, "latency_ms": round(statistics.median(times), 3),
                     "range_pct": round(floor["range_pct"], 2)})  # fmt: skip
    return {
        "archs": rows,
        "blocks": BLOCKS,
        "repeats": lc.repeats,
        "warmup": lc.warmup,
        "precision": precision.name,
        "device": device_info(device, threads),
        "exported_from": f"{first}/s{seed}",
        "pareto": {variant: record["finished"] for variant, record in records.items()},
    }


def describe(measured: dict[str, Any]) -> str:
    """One line of the report on a side-by-side piece's result: archs, rounds, precision and the noise floor."""
    spread = sorted(a["range_pct"] for a in measured["archs"])
    return (
        f"{len(spread)} archs, {measured['blocks']} blocks of {measured['repeats']} interleaved rounds, "
        f"{measured['precision']}, exported from {measured['exported_from']}; the blocks' spread per arch "
        f"{spread[0]:.1f}–{spread[-1]:.1f}% (median {spread[len(spread) // 2]:.1f}%)"
    )


def attach(rows: list[dict[str, Any]], measured: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The Pareto `rows` (each with its variant, seed and arch), each with `side_by_side_ms`: its arch's latency
    in its seed's side-by-side piece (`measured`: seed -> that piece's result), None where the piece is not
    finished or did not measure the arch (a Pareto piece redone after it)."""
    out = []
    for row in rows:
        found = measured.get(row["seed"]) or {}
        ms = next((a["latency_ms"] for a in found.get("archs", []) if a["arch"] == row["arch"]), None)
        out.append({**row, "side_by_side_ms": ms})
    return out
