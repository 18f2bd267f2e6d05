"""Latency predictors on held-out archs: HAT's MLP, the linear baseline and the per-layer lookup table, beside
the noise floor of the measurement itself; and predictors fit on HAT's published latency datasets.

    python benchmarks/latency_predictor.py [RUN] [--samples 200] [--repeats 10] [--hat-only]

Without RUN, a one-step run of configs/bench_multi30k.yaml is trained in runs/latency-bench (latency does not
depend on the weights, only on the arch). Measures `--samples` archs of the run's space with HAT's protocol
(exported dense model, one source sentence of 30 tokens, beam 5, 30 decoder steps, 1 thread), 8 archs at a
time interleaved with a reference arch re-measured in every group (the noise floor), and every layer shape of
the space alone (the table); fits each predictor on 80% of the archs (the table: 20 of them calibrate it) and
scores it on the other 20%. Then fits the linear and MLP feature predictors on each of HAT's 8 CSV datasets
(../shared/data/hat-latency, 2,000 archs each, 80/20 split). Writes benchmarks/results/latency_predictor.{md,json}.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write  # noqa: E402

from mosnas.engine.load import load_run  # noqa: E402
from mosnas.latency.datasets import fit_dataset  # noqa: E402
from mosnas.latency.predictors import LatencyPredictor, LinearPredictor, evaluate_predictor  # noqa: E402
from mosnas.pipeline.latency import latency_stage  # noqa: E402

HAT = ROOT.parent / "shared" / "data" / "hat-latency"
KEYS = ("kendall_tau", "mape_pct", "rmse_ms", "measurements")
PREDICTORS = ("mlp", "linear", "table")


def _bench_run(args: argparse.Namespace) -> Path:
    from mosnas.config import load_config
    from mosnas.engine.run_folder import needs_training
    from mosnas.engine.train import train

    overrides = ["out_dir=runs", "name=latency-bench", "train.max_steps=1", "train.max_minutes=0", "train.threads=1"]
    cfg = load_config(ROOT / "configs" / "bench_multi30k.yaml", overrides)
    if needs_training(cfg):
        train(cfg, show_progress=True)
    return cfg.run_dir


def _run_section(args: argparse.Namespace) -> tuple[list[dict], dict, list[str]]:
    run = load_run(args.run or _bench_run(args))
    lc = replace(run.cfg.latency, num_samples=args.samples, repeats=args.repeats, warmup=2, threads=1, device="cpu")
    report = latency_stage(run, lc)
    rows = [{"dataset": "measured here", "predictor": k, **{m: report[k].get(m) for m in KEYS}} for k in PREDICTORS]
    # the table needs far fewer whole archs: the MLP and the linear fit on as many archs as calibrate it
    lines = (run.dir.latency / "samples.jsonl").read_text().splitlines()
    archs = [s for s in map(json.loads, lines) if not s.get("reference")]
    order = list(range(len(archs)))
    random.Random(lc.seed).shuffle(order)
    cut = int(round(len(archs) * (1 - lc.holdout)))
    train_s, test_s = [archs[i] for i in order[:cut]][:20], [archs[i] for i in order[cut:]]
    for name, pred in (("linear@20", LinearPredictor(run.space)), ("mlp@20", LatencyPredictor(run.space, 64, 2))):
        e = evaluate_predictor(pred.fit(train_s), test_s)
        keep = {k: e[k] for k in ("kendall_tau", "mape_pct", "rmse_ms")}
        rows.append({"dataset": "measured here", "predictor": name, **keep, "measurements": len(train_s)})
    noise, s = report["noise"], report["settings"]
    meta = {k: report[k] for k in ("train_samples", "heldout_samples", "chosen", "why", "noise", "settings")}
    meta.update(seconds_per_arch=report["seconds_per_arch"], table_seconds=report["table_seconds"])
    md = [
        f"## Measured on this machine: space `{run.space.name}`",
        "",
        f"{report['train_samples']} measured archs to train, {report['heldout_samples']} held out; protocol: "
        f"exported dense model, source length {s['src_len']}, beam {s['beam']}, {s['tgt_len']} decoder steps, "
        f"{s['repeats']} timed rounds after {s['warmup']} warm-ups, {s['interleave']} archs interleaved per round "
        f"with a reference arch, median; {report['device']['threads']} thread(s), {s['precision']}. Latencies span "
        f"{report['smallest_ms']:.1f} ms (smallest arch) to {report['largest_ms']:.1f} ms (largest); "
        f"{report['seconds_per_arch']:.2f} s per measured arch, {report['table_seconds']:.0f} s for the "
        f"{report['table_entries']} layer shapes of the table.",
        "",
        f"**Noise floor**: the reference arch re-measured {noise['n']} times (once per group): relative std "
        f"{noise['rel_std_pct']:.2f}%, mean absolute deviation from its median {noise['mape_pct']:.2f}% (what a "
        f"perfect predictor's MAPE would be), range {noise['range_pct']:.1f}%.",
        "",
        "| predictor | measurements | Kendall tau | MAPE % | RMSE ms |",
        "|---|---:|---:|---:|---:|",
    ]
    md += [
        f"| {r['predictor']} | {r['measurements']} | {r['kendall_tau']:.3f} | {r['mape_pct']:.2f} | "
        f"{r['rmse_ms']:.2f} |"
        for r in rows
    ]
    md += [
        "",
        f"Chosen: **{report['chosen']}** ({report['why']}; chosen on the same held-out archs it is scored on). "
        "Measurements: whole archs, plus layer shapes for the table. `@20`: fit on the 20 archs that calibrate "
        "the table. Scatter plot of the chosen predictor: `RUN/latency/scatter.png` (not committed).",
        "",
    ]
    return rows, meta, md


def _hat_section(models: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    rows = []
    for path in sorted(HAT.glob("*_all.csv.gz")):
        with gzip.open(path, "rt") as f:  # HAT's recorded std of its repeated timings, per arch
            recs = list(csv.DictReader(f))
        mean = lambda r: float(r["latency_mean_encoder"]) + float(r["latency_mean_decoder"])
        spread = statistics.median(
            (float(r["latency_std_encoder"]) + float(r["latency_std_decoder"])) / mean(r) for r in recs
        )
        _, report = fit_dataset(path, holdout=0.2, seed=0, models=models)
        for name, e in report["predictors"].items():
            rows.append({"dataset": path.name.split("_all")[0], "predictor": name, **e})
            rows[-1].update(measurements=report["train_rows"], hat_repeat_std_pct=100 * spread)
    md = [
        "## HAT's published latency datasets",
        "",
        "Wang et al. 2020 (HAT), `latency_dataset/*_all.csv` of mit-han-lab/hardware-aware-transformers (MIT "
        "license; ../shared/data/hat-latency): 2,000 measured archs per device, their 10 features, target = "
        "encoder + decoder mean latency. 1,600 archs fit (`mosnas latency --fit`), 400 held out (seed 0). "
        "`repeat std %`: median over archs of HAT's recorded std of repeated timings / mean (a single timing's "
        "spread; the mean HAT fits on is steadier). HAT reports about 5-6 % error for its MLP on these.",
        "",
        "| dataset | predictor | Kendall tau | MAPE % | RMSE ms | repeat std % |",
        "|---|---|---:|---:|---:|---:|",
    ]
    md += [
        f"| {r['dataset']} | {r['predictor']} | {r['kendall_tau']:.3f} | {r['mape_pct']:.2f} | "
        f"{r['rmse_ms']:.1f} | {r['hat_repeat_std_pct']:.1f} |"
        for r in rows
    ]
    return rows, md


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", nargs="?", help="a trained run (default: a one-step run of configs/bench_multi30k.yaml)")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--hat-only", action="store_true", help="only the HAT-dataset section (no timing here)")
    ap.add_argument("--hat-models", nargs="+", default=["linear", "mlp"], choices=["linear", "mlp"])
    args = ap.parse_args()
    rows, meta, md = [], {**machine()}, ["# Latency predictors on held-out archs", ""]
    if args.hat_only:
        md += [
            "The section measured on this machine (MLP, linear and per-layer table on held-out archs, with the noise "
            "floor) comes from a full run: `python benchmarks/latency_predictor.py` (about 10 minutes on a quiet "
            "2-core VM); not run yet.",
            "",
        ]
    else:
        run_rows, run_meta, run_md = _run_section(args)
        rows += run_rows
        meta["measured"] = run_meta
        md += run_md
    hat_rows, hat_md = _hat_section(tuple(args.hat_models))
    write("latency_predictor", meta, rows + hat_rows, md + hat_md)


if __name__ == "__main__":
    main()
