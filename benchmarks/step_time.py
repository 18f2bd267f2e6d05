"""Training-step cost of the three weight generators, measured side by side in one process.

    python benchmarks/step_time.py [--repeats 6] [--threads 2]

Builds the bench supernet (configs/bench_multi30k.yaml: Multi30k space, 2 experts) with each
generator and times full sandwich steps (largest + smallest + 1 random arch, forward + backward +
AdamW) on the same real Multi30k batches, round-robin so machine noise hits all alike. Also times the
dense largest arch alone. Reports medians and ratios to `shared` in benchmarks/results/step_time.{md,json}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write  # noqa: E402

sys.path.insert(0, str(ROOT))

from mosnas import tune_malloc  # noqa: E402

tune_malloc()

import torch  # noqa: E402

from mosnas import mt  # noqa: E402
from mosnas.config import load_config  # noqa: E402
from mosnas.core.supernet import Supernet  # noqa: E402
from mosnas.engine.schedule import step_archs  # noqa: E402
from mosnas.hardware import resolve_precision  # noqa: E402
from mosnas.mt.data import load_parallel, read_parallel, train_tokenizer  # noqa: E402
from mosnas.mt.space import load_space  # noqa: E402
from mosnas.mt.task import train_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, "cpu")
    cfg = load_config(ROOT / "configs" / "bench_multi30k.yaml")
    space = load_space(ROOT / cfg.supernet.space)
    work = ROOT / "benchmarks" / "work"
    src, tgt = read_parallel(cfg.data, cfg.data.train)
    sp = train_tokenizer(src + tgt, cfg.data.vocab_size, work / "spm.model")
    data, _ = load_parallel(cfg.data, cfg.data.train, sp, max_len=cfg.data.max_len)
    batches = [data.collate(b) for b in data.batches(0)[: args.repeats + 1]]
    device = torch.device("cpu")
    nets, opts = {}, {}
    for gen in ("shared", "layer", "neuron"):
        torch.manual_seed(0)
        nets[gen] = Supernet(space, sp.get_piece_size(), replace(cfg.supernet, generator=gen), mt)
        opts[gen] = torch.optim.AdamW(nets[gen].parameters(), lr=1e-4)
    runs = {"shared": "sandwich", "layer": "sandwich", "neuron": "sandwich", "dense-largest": "fixed"}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i, batch in enumerate(batches):
        for name, sampling in runs.items():
            net = nets["shared" if name == "dense-largest" else name]
            opt = opts["shared" if name == "dense-largest" else name]
            archs = step_archs(space, sampling, 1, 1, i, fixed=space.largest())
            t0 = time.perf_counter()
            train_step(net, batch, archs, 0.1, 0.0, device, precision.bf16)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i > 0:  # the first round is warm-up
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [
        {
            "run": k,
            "median_s_per_step": round(v, 3),
            "ratio_to_shared": round(v / med["shared"], 3),
            "parameters": sum(p.numel() for p in nets["shared" if k == "dense-largest" else k].parameters()),
        }
        for k, v in med.items()
    ]
    meta = {
        **machine(),
        "threads": args.threads,
        "precision": precision.to_dict(),
        "repeats": args.repeats,
        "batch_max_tokens": cfg.data.max_tokens,
    }
    md = [
        "# Training-step time per weight generator (side by side, one process)",
        "",
        f"{args.threads} threads; precision {precision.describe()}; median of {args.repeats} real Multi30k batches "
        f"(<= {cfg.data.max_tokens} tokens), round-robin over the generators; a step = largest + smallest + 1 random "
        "arch (sandwich), forward + backward + AdamW; `dense-largest` = the largest arch alone.",
        "",
        "| run | supernet parameters | median s/step | ratio to shared |",
        "|---|---:|---:|---:|",
    ]
    md += [
        f"| {r['run']} | {r['parameters']:,} | {r['median_s_per_step']:.3f} | {r['ratio_to_shared']:.2f} |"
        for r in rows
    ]
    write("step_time", meta, rows, md)


if __name__ == "__main__":
    main()
