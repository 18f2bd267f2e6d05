"""Training throughput: 1 process vs a 2-process torchrun (gloo, CPU) on the bench supernet.

    python benchmarks/ddp_throughput.py [--steps 24]

Same config (configs/bench_multi30k.yaml, neuron MoS); 1 process uses 2 threads, each of the 2
ranks uses 1 thread, so both use the machine's 2 cores. A DDP step trains a global batch of 2
batches, so throughput is compared in target tokens per second (the first log window, warm-up,
is dropped). Writes benchmarks/results/ddp_throughput.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write  # noqa: E402

OUT = ROOT / "runs" / "ddp-bench"


def run(name: str, world: int, steps: int) -> dict:
    args = [
        "configs/bench_multi30k.yaml",
        f"name={name}",
        f"out_dir={OUT}",
        f"train.max_steps={steps}",
        "train.max_minutes=0",
        "train.log_every=4",
        f"train.valid_every={steps * 10}",
        f"train.ckpt_every={steps * 10}",
        f"train.threads={2 // world}",
        "--quiet",
        "--force",
    ]
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"]
        if world > 1
        else [sys.executable]
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(2 // world)}
    subprocess.run([*launcher, "-m", "mosnas", "train", *args], cwd=ROOT, check=True, env=env)
    log = [json.loads(x) for x in (OUT / name / "train_log.jsonl").read_text().splitlines()]
    windows = [r for r in log if "tokens_per_s" in r][1:]
    tokens = sum(r["tokens_per_s"] * r["s_per_step"] * 4 for r in windows)
    seconds = sum(r["s_per_step"] * 4 for r in windows)
    return {
        "processes": world,
        "threads_each": 2 // world,
        "steps": steps,
        "timed_steps": 4 * len(windows),
        "tokens_per_s": round(tokens / seconds, 1),
        "s_per_step": round(seconds / (4 * len(windows)), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=24)
    args = ap.parse_args()
    rows = [run("single", 1, args.steps), run("ddp2", 2, args.steps)]
    shutil.rmtree(OUT, ignore_errors=True)
    ratio = rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"]
    md = [
        "# DDP throughput on this CPU: 1 process vs torchrun with 2 processes (gloo)",
        "",
        "configs/bench_multi30k.yaml (neuron MoS supernet, sandwich rule, train.precision=auto: the runs' "
        "train_log records what it chose); both use the 2 cores.",
        "",
        "| processes | threads each | timed steps | s/step | target tokens/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    md += [
        f"| {r['processes']} | {r['threads_each']} | {r['timed_steps']} | {r['s_per_step']:.2f} | "
        f"{r['tokens_per_s']:.0f} |"
        for r in rows
    ]
    md += ["", f"Ratio (2 processes / 1 process): {ratio:.2f}x tokens/s."]
    write("ddp_throughput", {**machine(), "ratio": round(ratio, 3)}, rows, md)


if __name__ == "__main__":
    main()
