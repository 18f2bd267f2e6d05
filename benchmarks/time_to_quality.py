"""Time to quality: BLEU and chrF of the largest and smallest subnets against training wall time, for the
largest arch trained alone (dense) and for each weight generator, on the machine it runs on.

Every run trains the quick start's recipe (`configs/quickstart.yaml`, or --config) for --minutes of training
time (the loop's own clock: updates only, no validation or checkpoint time) and checkpoints every --every
updates; afterwards the newest checkpoint at or before each time mark is scored on a seeded sample of
--eval-limit sentences of test_2016_flickr, beam of the config. With --together the runs train at the same time, each on
--threads threads (side by side: a ratio between them is fair; their absolute times are those of a shared
machine), else one after another.

    python benchmarks/time_to_quality.py --runs dense neuron --minutes 8 --marks 2 4 8 --threads 1 --together

Writes benchmarks/results/time_to_quality.{md,json}; the runs stay in benchmarks/work/ttq (ignored by git)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write  # noqa: E402

from mosnas.checkpoint import list_checkpoints, read_checkpoint  # noqa: E402
from mosnas.config import DecodeConfig  # noqa: E402
from mosnas.mt.evaluate import evaluate_model  # noqa: E402
from mosnas.run import load_model_state, load_run  # noqa: E402

WORK = ROOT / "benchmarks" / "work" / "ttq"


def _command(config: str, run: str, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "mosnas", "train", config, f"name=ttq-{run}", f"out_dir={WORK}"]
    cmd += [f"train.max_minutes={args.minutes}", f"train.threads={args.threads}", "train.max_steps=100000"]
    cmd += [f"train.ckpt_every={args.every}", "train.keep_last=100000", "train.valid_every=100000", "--quiet"]
    if run == "dense":  # the largest arch alone: a shared supernet that only ever trains its largest arch
        return cmd + ["supernet.generator=shared", "train.sampling=fixed", "train.fixed_arch=largest"]
    return cmd + [f"supernet.generator={run}"]


def train_all(args: argparse.Namespace) -> dict[str, float]:
    """Train every run (skipping finished ones); returns the wall seconds each took."""
    procs, walls = {}, {}
    for run in args.runs:
        if list_checkpoints(WORK / f"ttq-{run}") and not args.retrain:
            continue
        cmd = _command(args.config, run, args) + (["--force"] if args.retrain else [])
        print(" ".join(cmd[1:]), flush=True)
        procs[run] = (subprocess.Popen(cmd, cwd=ROOT), time.perf_counter())
        if not args.together:
            procs[run][0].wait()
    for run, (proc, t0) in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"training {run} failed (exit {proc.returncode})")
        walls[run] = round(time.perf_counter() - t0, 1)
    return walls


def score(run: str, args: argparse.Namespace) -> list[dict]:
    """BLEU/chrF of the largest (and, for a supernet, the smallest) arch at each time mark."""
    loaded = load_run(WORK / f"ttq-{run}")
    ckpts = [(read_checkpoint(p)[0]["elapsed"], p) for p in list_checkpoints(loaded.run_dir)]  # (seconds, path)
    decode = DecodeConfig(beam=loaded.cfg.decode.beam, batch_size=64)
    rows = []
    for mark in args.marks:
        final = mark >= args.minutes  # a run stops at the first update past its budget: its last checkpoint
        at = [p for seconds, p in ckpts if final or seconds <= mark * 60 + 1e-6]
        if not at:
            continue
        meta, sd, _ = read_checkpoint(at[-1])
        path = at[-1]
        load_model_state(loaded.net, sd, meta, loaded.space, path)
        for name in ("largest",) if run == "dense" else ("largest", "smallest"):
            model = loaded.net.export(loaded.space.parse_arch(name))
            r = evaluate_model(model, loaded.tokenizer, loaded.cfg.data, "test_2016_flickr", decode, args.eval_limit,
                               progress=False)  # fmt: skip
            rows.append({"run": run, "subnet": name, "mark_min": mark, "step": meta["step"],
                         "train_s": round(meta["elapsed"], 1), "bleu": r["bleu"], "chrf": r["chrf"],
                         "sentences": r["sentences"], "precision": meta.get("precision")})  # fmt: skip
            print(f"{run:7s} {name:8s} {mark:>5g} min  step {meta['step']:5d}  BLEU {r['bleu']:6.2f}", flush=True)
    return rows


def _line(r: dict) -> str:
    cells = [r["run"], r["subnet"], f"{r['train_s'] / 60:.1f}", str(r["step"]), f"{r['bleu']:.2f}", f"{r['chrf']:.2f}"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--runs", nargs="+", default=["dense", "neuron"], help="dense and/or shared, layer, neuron")
    p.add_argument("--minutes", type=float, default=8.0, help="training time of each run (the loop's clock)")
    p.add_argument("--marks", type=float, nargs="+", default=[2, 4, 8], help="time marks scored (minutes)")
    p.add_argument("--every", type=int, default=25, help="updates between checkpoints")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--together", action="store_true", help="train the runs at the same time (side by side)")
    p.add_argument("--eval-limit", type=int, default=500, help="test sentences scored at each mark (a seeded sample)")
    p.add_argument("--retrain", action="store_true")
    args = p.parse_args()
    walls = train_all(args)
    rows = [r for run in args.runs for r in score(run, args)]
    meta = {**machine(), **{k: v for k, v in vars(args).items()}, "wall_s": walls}
    env = load_run(WORK / f"ttq-{next((r for r in args.runs if r != 'dense'), args.runs[0])}").cfg
    md = [
        "# Time to quality: BLEU against training time (quick start recipe)",
        "",
        f"Config `{args.config}` ({env.train.sampling}, num_random {env.train.num_random}, lr {env.train.lr:g}, "
        f"warm-up {env.train.warmup}, {env.data.max_tokens} tokens per batch); {args.threads} thread(s) per run, "
        f"runs {'side by side at the same time' if args.together else 'one after another'}; training time is the "
        f"loop's clock (updates only). BLEU/chrF: sacreBLEU on a seeded sample of {args.eval_limit} sentences of "
        f"test_2016_flickr, beam {env.decode.beam}; `dense` = the largest arch trained alone.",
        "",
        "| run | subnet | minutes | step | BLEU | chrF |",
        "|---|---|---:|---:|---:|---:|",
        *(_line(r) for r in rows),
    ]
    write("time_to_quality", meta, rows, md)


if __name__ == "__main__":
    main()
