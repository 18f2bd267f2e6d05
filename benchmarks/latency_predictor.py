"""Latency predictor quality on held-out archs of a trained run's space (MLP vs linear baseline).

    python benchmarks/latency_predictor.py RUN [--samples 200]

Measures `--samples` archs of RUN's space with HAT's protocol (exported dense model, one source
sentence of 30 tokens, beam 5, 30 decoder steps, 1 thread), fits the MLP predictor on 80% and
reports RMSE / MAPE / Kendall tau on the held-out 20%, beside a linear regression on the same
features. Writes benchmarks/results/latency_predictor.{md,json} (the run keeps samples and plot).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write  # noqa: E402

from mosnas.pipeline import latency_stage  # noqa: E402
from mosnas.run import load_run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    run = load_run(args.run)
    lc = replace(run.cfg.latency, num_samples=args.samples, repeats=args.repeats, warmup=2)
    report = latency_stage(run, lc)
    rows = [{"predictor": k, **report[k]} for k in ("mlp", "linear")]
    meta = {
        **machine(),
        "run": str(args.run),
        "space": run.space.name,
        "train_samples": report["train_samples"],
        "heldout_samples": report["heldout_samples"],
        "settings": report["settings"],
    }
    s = report["settings"]
    md = [
        "# Latency predictor on held-out archs",
        "",
        f"Space `{run.space.name}` (run `{args.run}`); {report['train_samples']} measured archs to train, "
        f"{report['heldout_samples']} held out. Protocol: exported dense model, source length {s['src_len']}, "
        f"beam {s['beam']}, {s['tgt_len']} decoder steps, {s['repeats']} timed repeats after {s['warmup']} warm-ups, "
        f"median of the middle 80%; {report['device']['threads']} thread(s). Latencies measured span "
        f"{report['smallest_ms']:.1f} ms (smallest arch) to {report['largest_ms']:.1f} ms (largest).",
        "",
        "| predictor | RMSE ms | MAPE % | Kendall tau |",
        "|---|---:|---:|---:|",
    ]
    md += [f"| {r['predictor']} | {r['rmse_ms']:.2f} | {r['mape_pct']:.2f} | {r['kendall_tau']:.3f} |" for r in rows]
    md += [
        "",
        f"Scatter plot: `{Path(args.run) / 'latency' / 'scatter.png'}` (not committed). On this 2-core VM "
        "repeated timings of one model spread by about +-15% (see `times_ms` in the samples), which bounds what "
        "any predictor can reach here; more repeats (latency.repeats) tighten it at a proportional cost.",
    ]
    write("latency_predictor", meta, rows, md)


if __name__ == "__main__":
    main()
