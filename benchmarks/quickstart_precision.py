"""The quick start under each precision on this machine: training steps, wall time and BLEU.

    python benchmarks/quickstart_precision.py [--precisions fp32 bf16 auto] [--emulate-avx2]

Runs `mosnas run configs/quickstart.yaml` once per precision (train, latency, search and fine-tuning
precision all set to it), one run at a time so they do not share the cores, and reads each run's
results.json. `--emulate-avx2` adds one run at `auto` with oneDNN and ATen limited to AVX2
(ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2): on a CPU with native bf16 this is what a user
of an AVX2-only CPU gets (bf16 emulated), so `auto` must choose fp32 there. Writes
benchmarks/results/quickstart_precision.{md,json} with the machine, its CPU flags and the date.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write  # noqa: E402

CONFIG = ROOT / "configs" / "quickstart.yaml"
RUNS = ROOT / "benchmarks" / "work" / "quickstart_precision"
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
STAGES = ("train", "latency", "search", "finetune")


def quickstart(name: str, precision: str, env: dict[str, str]) -> dict:
    """One `mosnas run` of the quick start at `precision`; returns its results plus wall time and precision."""
    overrides = [f"{stage}.precision={precision}" for stage in STAGES]
    cmd = [sys.executable, "-m", "mosnas", "run", str(CONFIG), f"name={name}", f"out_dir={RUNS}", *overrides]
    RUNS.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(RUNS / f"{name}.log", "w") as log:
        done = subprocess.run([*cmd, "--quiet", "--force"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        sys.exit(f"run {name} failed; see {RUNS / (name + '.log')}")
    results = json.loads((RUNS / name / "results.json").read_text())
    env_json = json.loads((RUNS / name / "environment.json").read_text())
    return {**results, "wall_min": round((time.time() - start) / 60, 2), "precision": env_json["precision"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("auto", "fp32", "bf16"))
    ap.add_argument("--emulate-avx2", action="store_true", help="also run `auto` with oneDNN/ATen limited to AVX2")
    args = ap.parse_args()
    runs = [(p, f"qs-{p}", p, dict(os.environ)) for p in args.precisions]
    if args.emulate_avx2:
        runs.append(("auto, AVX2 emulated", "qs-auto-avx2", "auto", {**os.environ, **AVX2_ONLY}))
    rows = []
    for label, name, precision, env in runs:
        r = quickstart(name, precision, env)
        by = {row["name"]: row for row in r["results"]}
        searched = [row for row in r["results"] if row["kind"] == "search"]
        rows.append(
            {
                "run": label,
                "precision": r["precision"]["precision"],
                "reason": r["precision"]["reason"],
                "steps": r["steps"],
                "train_s": r["train_log_last"].get("elapsed_s"),
                "wall_min": r["wall_min"],
                "largest_bleu": by["largest"]["bleu"],
                "largest_chrf": by["largest"]["chrf"],
                "smallest_bleu": by["smallest"]["bleu"],
                "searched_bleu": [row["bleu"] for row in searched],
                "bleu_signature": by["largest"]["bleu_signature"],
            }
        )
    md = [
        "# The quick start under each precision",
        "",
        "`python benchmarks/quickstart_precision.py "
        + " ".join(["--precisions", *args.precisions] + (["--emulate-avx2"] if args.emulate_avx2 else []))
        + "`: `mosnas run configs/quickstart.yaml` with `{train,latency,search,finetune}.precision` set as shown, "
        "one run at a time (6 minutes of supernet training each; BLEU on test_2016_flickr, beam 4). "
        "'AVX2 emulated' limits oneDNN and ATen to AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`), "
        "where bf16 matmuls are emulated, as on an AVX2-only CPU.",
        "",
        "| run | precision used | training steps | training s | wall min | largest BLEU / chrF | smallest BLEU "
        "| searched winners' BLEU |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['run']} | {r['precision']} | {r['steps']} | {r['train_s']} | {r['wall_min']} "
            f"| {r['largest_bleu']:.2f} / {r['largest_chrf']:.2f} | {r['smallest_bleu']:.2f} "
            f"| {', '.join(f'{b:.2f}' for b in r['searched_bleu'])} |"
        )
    md += ["", "Why each precision was used (from the run's environment.json):", ""]
    md += [f"- {r['run']}: {r['reason']}" for r in rows]
    md += ["", f"BLEU signature: `{rows[0]['bleu_signature']}`"]
    write("quickstart_precision", machine(), rows, md)


if __name__ == "__main__":
    main()
