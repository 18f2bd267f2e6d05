"""Step-cost levers of the quick start's training step, each measured in its own process, round-robin.

    python benchmarks/step_levers.py [--rounds 3] [--steps 12] [--warmup 4] [--levers base threads1 ...]

Every lever times the quick start's step (configs/quickstart.yaml: neuron-wise MoS, its sandwich, label
smoothing, AdamW, its precision) on the same real Multi30k batches; levers change one thing each:

- base: the quick start's step as it runs before update `train.random_from` (largest + smallest; 2 threads, glibc
  malloc tuned by mosnas.tune_malloc, 2048-token batches);
- threads1: 1 intra-op thread;  malloc-default: glibc's default trimming (what torch does without mosnas);
- tok1024 / tok4096: batches of up to 1024 / 4096 tokens (tokens/s is the fair figure: a step is larger);
- fp32 / bf16: the precision forced (auto picks bf16 only on CPUs with native bf16);
- compile: `torch.compile(net)` (inductor, dynamic shapes) of the whole supernet; its compile time is the first
  steps' excess, reported apart; archs change every step, so each new arch/shape may recompile.
- random: the sandwich with one random arch per step (the paper's; the quick start's from `random_from` on).

A round runs every lever once, in a rotated order, each in a fresh process (threads and malloc settings are
per process), so slow drift of a shared machine hits all alike; the table gives the median over rounds of each
lever's median step time. Writes benchmarks/results/step_levers.{md,json}."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write  # noqa: E402

LEVERS = {
    "base": {},
    "threads1": {"threads": 1},
    "malloc-default": {"malloc": False},
    "tok1024": {"max_tokens": 1024},
    "tok4096": {"max_tokens": 4096},
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "compile": {"compile": True},
    "random": {"num_random": 1},
}


def child(lever: str, steps: int, warmup: int) -> dict:
    """Time `steps` quick start steps after `warmup` ones with one lever set; runs in its own process."""
    opts = {"threads": 2, "malloc": True, "max_tokens": 0, "precision": "", "compile": False, "num_random": 0}
    opts.update(LEVERS[lever])
    if opts["malloc"]:
        from mosnas import tune_malloc

        tune_malloc()
    import torch

    from mosnas import mt
    from mosnas.config import load_config
    from mosnas.core.supernet import Supernet
    from mosnas.engine.schedule import step_archs
    from mosnas.hardware import resolve_precision
    from mosnas.mt.data import load_parallel, read_parallel, train_tokenizer
    from mosnas.mt.space import load_space
    from mosnas.mt.task import train_step

    torch.set_num_threads(opts["threads"])
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    data_cfg = replace(cfg.data, max_tokens=opts["max_tokens"] or cfg.data.max_tokens)
    tc = cfg.train
    num_random = opts["num_random"]
    precision = resolve_precision(opts["precision"] or tc.precision, "cpu")
    space = load_space(cfg.supernet.space)
    spm_path = ROOT / "benchmarks" / "work" / f"spm_levers_{cfg.data.vocab_size}.model"
    if spm_path.is_file():
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
    else:
        src, tgt = read_parallel(data_cfg, data_cfg.train)
        sp = train_tokenizer(src + tgt, cfg.data.vocab_size, spm_path)
    data, _ = load_parallel(data_cfg, data_cfg.train, sp, max_len=data_cfg.max_len)
    batches = [data.collate(b) for b in data.batches(0)[: steps + warmup]]
    torch.manual_seed(0)
    net = Supernet(space, sp.get_piece_size(), cfg.supernet, mt)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    model = torch.compile(net, dynamic=True) if opts["compile"] else net
    times, device = [], torch.device("cpu")
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        train_step(model, batch, step_archs(space, "sandwich", num_random, tc.seed, i), 0.1, 0.0, device,
                   precision.bf16)  # fmt: skip
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    tokens = [int(b.num_tokens) for b in batches]
    timed = times[warmup:]
    return {
        "lever": lever,
        "s_per_step": statistics.median(timed),
        "tokens_per_s": sum(tokens[warmup:]) / sum(timed),
        "first_steps_s": round(sum(times[:warmup]), 2),
        "excess_first_s": round(sum(times[:warmup]) - warmup * statistics.median(timed), 2),
        "precision": precision.name,
        "threads": opts["threads"],
        "max_tokens": data_cfg.max_tokens,
        "num_random": num_random,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per lever and round")
    ap.add_argument("--warmup", type=int, default=4, help="untimed first steps (compile time shows here)")
    ap.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    ap.add_argument("--timeout", type=int, default=240, help="seconds a lever's process may take")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.warmup)))
        return
    results: dict[str, list[dict]] = {k: [] for k in args.levers}
    for r in range(args.rounds):
        order = args.levers[r % len(args.levers) :] + args.levers[: r % len(args.levers)]
        for lever in order:
            cmd = [sys.executable, __file__, "--child", lever, "--steps", str(args.steps), "--warmup", str(args.warmup)]
            try:
                out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ},
                                     timeout=args.timeout)  # fmt: skip
            except subprocess.TimeoutExpired:
                results[lever].append({"lever": lever, "error": f"did not finish within {args.timeout} s"})
                print(f"round {r + 1} {lever}: did not finish within {args.timeout} s", flush=True)
                continue
            if out.returncode != 0:
                err = (out.stderr.strip().splitlines() or ["?"])[-1]
                results[lever].append({"lever": lever, "error": err[:300]})
                print(f"round {r + 1} {lever}: failed: {err[:200]}", flush=True)
                continue
            results[lever].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {lever}: {results[lever][-1]['s_per_step']:.3f} s/step", flush=True)
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, list[dict]]) -> None:
    rows = []
    for lever, runs in results.items():
        ok = [x for x in runs if "error" in x] == [] and runs
        if not ok:
            rows.append({"lever": lever, "error": next(x["error"] for x in runs if "error" in x)})
            continue
        row = {k: runs[0][k] for k in ("precision", "threads", "max_tokens", "num_random")}
        row["s_per_step"] = round(statistics.median(x["s_per_step"] for x in runs), 3)
        row["tokens_per_s"] = round(statistics.median(x["tokens_per_s"] for x in runs), 1)
        row["excess_first_s"] = round(statistics.median(x["excess_first_s"] for x in runs), 2)
        rows.append({"lever": lever, **row, "rounds": runs})
    base = next((r for r in rows if r["lever"] == "base" and "error" not in r), None)
    md = [
        "# Step-cost levers of the quick start's training step",
        "",
        f"configs/quickstart.yaml's step (neuron-wise MoS, its sandwich, AdamW) on the same real Multi30k batches; "
        f"each lever in its own process, {args.rounds} rounds in rotated order, {args.steps} timed steps after "
        f"{args.warmup} untimed ones; medians. `excess first steps` = the untimed steps' time beyond the median step "
        "(compile time, allocator warm-up). Ratios are to `base` measured in the same rounds.",
        "",
        "| lever | precision | threads | max tokens | random archs | s/step | tokens/s | tokens/s vs base | "
        "excess first steps (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['lever']} | failed: {r['error']} |  |  |  |  |  |  |  |")
            continue
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}" if base else "?"
        cells = [r["lever"], r["precision"], r["threads"], r["max_tokens"], r["num_random"], f"{r['s_per_step']:.3f}"]
        cells += [f"{r['tokens_per_s']:.0f}", ratio, f"{r['excess_first_s']:.1f}"]
        md.append("| " + " | ".join(map(str, cells)) + " |")
    write("step_levers", {**machine(), **vars(args)}, rows, md)


if __name__ == "__main__":
    main()
