"""Shared vs layer-wise vs neuron-wise MoS on Multi30k En->De under one config and wall budget,
plus a dense Transformer of the largest arch trained for the same number of steps.

    python benchmarks/mt_generators.py [--minutes 70] [--parallel 3]

Each generator is a `mosnas run` of configs/bench_multi30k.yaml (runs/bench/<name>); runs are
resumable, so re-running the script continues where it stopped. Writes
benchmarks/results/mt_generators.{md,json} with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write  # noqa: E402

CONFIG = ROOT / "configs" / "bench_multi30k.yaml"
RUNS = ROOT / "runs" / "bench"


def mosnas_run(name: str, overrides: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mosnas", "run", str(CONFIG), f"name={name}", f"out_dir={RUNS}", *overrides, "--quiet"]
    log = open(RUNS / f"{name}.log", "a")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_all(procs: dict[str, subprocess.Popen]) -> None:
    for name, p in procs.items():
        if p.wait() != 0:
            sys.exit(f"run {name} failed; see {RUNS / ('bench-' + name + '.log')}")


def step_time(run_dir: Path) -> float:
    """Mean seconds per training step over the whole run (from the JSONL log)."""
    recs = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    last = [r for r in recs if "elapsed_s" in r][-1]
    return last["elapsed_s"] / last["step"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=70.0, help="training wall budget per generator")
    ap.add_argument("--parallel", type=int, default=3, help="generators trained at once (1 thread each)")
    args = ap.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    gens = ["shared", "layer", "neuron"]
    for i in range(0, len(gens), args.parallel):
        wait_all(
            {
                g: mosnas_run(f"bench-{g}", [f"supernet.generator={g}", f"train.max_minutes={args.minutes}"])
                for g in gens[i : i + args.parallel]
            }
        )
    results = {g: json.loads((RUNS / f"bench-{g}" / "results.json").read_text()) for g in gens}
    steps = results["shared"]["steps"]
    # The reference: a plain dense Transformer of the largest arch (the shared generator trained on
    # the largest arch only has exactly a dense model's parameters), same number of steps.
    wait_all(
        {
            "dense": mosnas_run(
                "bench-dense",
                [
                    "supernet.generator=shared",
                    "train.sampling=fixed",
                    "train.fixed_arch=largest",
                    f"train.max_steps={steps}",
                    "train.max_minutes=0",
                    "train.threads=0",  # runs alone: both cores (threads do not change the result)
                    "eval.archs=[largest]",
                ],
            )
        }
    )
    results["dense"] = json.loads((RUNS / "bench-dense" / "results.json").read_text())

    rows, table = [], []
    for name, res in results.items():
        for r in res["results"]:
            row = {
                "run": name,
                "arch": r["name"],
                "steps": res["steps"],
                "s_per_step": round(step_time(RUNS / f"bench-{name}"), 3),
                "parameters": r["parameters"],
                "latency_ms": r["measured_latency_ms"],
                "bleu": r["bleu"],
                "chrf": r["chrf"],
            }
            rows.append(row)
            table.append(
                f"| {name} | {r['name']} | {row['parameters']:,} | {row['steps']} | "
                f"{row['s_per_step']:.2f} | {row['latency_ms']:.1f} | {r['bleu']:.2f} | {r['chrf']:.2f} |"
            )
    sig = results["shared"]["results"][0]
    meta = {
        **machine(),
        "minutes_per_generator": args.minutes,
        "parallel_runs": args.parallel,
        "config": str(CONFIG.relative_to(ROOT)),
        "bleu_signature": sig["bleu_signature"],
        "chrf_signature": sig["chrf_signature"],
    }
    md = [
        "# Weight generators on Multi30k En->De (test_2016_flickr)",
        "",
        f"Config `{meta['config']}`; {args.minutes:g} min training wall budget per generator, {args.parallel} runs "
        "at once on the machine's cores (1 thread each); `dense` = the largest arch trained alone for the shared "
        "run's number of steps. BLEU/chrF: sacreBLEU on detokenized output against the raw references, beam 5. "
        "Latency: the exported model, HAT's protocol (30-token source, beam 5, 30 decoder steps, 1 thread).",
        "",
        "| run | subnet | parameters | steps | s/step | latency ms | BLEU | chrF |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *table,
        "",
        f"BLEU signature: `{meta['bleu_signature']}`",
        "",
        f"chrF signature: `{meta['chrf_signature']}`",
        "",
        "s/step is measured inside each run while the runs shared the CPU; see `step_time.md` for a "
        "side-by-side ratio of the generators' step cost.",
    ]
    write("mt_generators", meta, rows, md)


if __name__ == "__main__":
    main()
