"""Time to quality: BLEU and chrF of the largest and smallest subnets against training wall time, for the
largest arch trained alone (dense) and for each weight generator, on the machine it runs on.

Every run trains the quick start's recipe (`configs/quickstart.yaml`, or --config) for --minutes of training
time (the loop's own clock: updates only, no validation or checkpoint time) and checkpoints every --every
updates; afterwards the newest checkpoint at or before each time mark is scored on a seeded sample of
--eval-limit sentences of test_2016_flickr, beam of the config. With --together the runs train at the same time, each on
--threads threads (side by side: a ratio between them is fair; their absolute times are those of a shared
machine; --jobs N: N at a time, in the order given), else one after another.

    python benchmarks/time_to_quality.py --runs dense neuron --minutes 8 --marks 2 4 8 --threads 1 --together

Writes benchmarks/results/time_to_quality.{md,json}; the runs stay in benchmarks/work/ttq (ignored by git)."""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write  # noqa: E402

from mosnas.config import DecodeConfig  # noqa: E402
from mosnas.core.space import arch_to_dict  # noqa: E402
from mosnas.engine.checkpoint import list_checkpoints, read_checkpoint  # noqa: E402
from mosnas.engine.load import load_model_state, load_run  # noqa: E402
from mosnas.mt.evaluate import evaluate_model  # noqa: E402
from mosnas.workspace.records import read_json  # noqa: E402

WORK = ROOT / "benchmarks" / "work" / "ttq"


def parse_run(spec: str) -> tuple[str, str, list[str]]:
    """`neuron` or `LABEL:GENERATOR[:key=value,key=value]` -> (label, generator or dense, overrides)."""
    parts = spec.split(":")
    if len(parts) == 1:
        return spec, spec, []
    return parts[0], parts[1], [o for o in ":".join(parts[2:]).split(",") if o]


def _command(config: str, spec: str, args: argparse.Namespace) -> list[str]:
    label, generator, overrides = parse_run(spec)
    cmd = [sys.executable, "-m", "mosnas", "train", config, f"name=ttq-{label}", f"out_dir={WORK}"]
    cmd += [f"train.max_minutes={args.minutes}", f"train.threads={args.threads}", "train.max_steps=100000"]
    cmd += [f"train.ckpt_every={args.every}", "train.keep_last=100000", "train.valid_every=100000", "--quiet"]
    if generator == "dense":  # the largest arch alone: a shared supernet that only ever trains its largest arch
        return cmd + ["supernet.generator=shared", "train.sampling=fixed", "train.fixed_arch=largest"] + overrides
    return cmd + [f"supernet.generator={generator}"] + overrides


def train_all(args: argparse.Namespace) -> dict[str, float]:
    """Train every run (skipping finished ones); returns the wall seconds each took."""
    procs, walls = {}, {}
    width = (args.jobs or len(args.runs)) if args.together else 1  # runs training at the same time

    def finish(run: str) -> None:
        proc, t0 = procs.pop(run)
        if proc.wait() != 0:
            raise SystemExit(f"training {run} failed (exit {proc.returncode})")
        walls[run] = round(time.perf_counter() - t0, 1)

    for spec in args.runs:
        run = parse_run(spec)[0]
        if list_checkpoints(WORK / f"ttq-{run}") and not args.retrain:
            continue
        while len(procs) >= width:  # wait for the oldest run to make room
            finish(next(iter(procs)))
        cmd = _command(args.config, spec, args) + (["--force"] if args.retrain else [])
        print(" ".join(cmd[1:]), flush=True)
        procs[run] = (subprocess.Popen(cmd, cwd=ROOT), time.perf_counter())
    for run in list(procs):
        finish(run)
    return walls


def subnets(space, count: int) -> list[tuple[str, object]]:
    """The largest, the smallest and `count` seeded random archs (the same for every run of a space)."""
    rng = random.Random(12345)
    return [("largest", space.largest()), ("smallest", space.smallest())] + [
        (f"random{i + 1}", space.sample(rng)) for i in range(count)
    ]


def score(spec: str, args: argparse.Namespace) -> list[dict]:
    """BLEU/chrF of the largest (and, for a supernet, the smallest and --random seeded random archs) at each
    time mark."""
    run, generator, _ = parse_run(spec)
    loaded = load_run(WORK / f"ttq-{run}")
    archs = subnets(loaded.space, args.random)[: 1 if generator == "dense" else None]
    # (state, path): each checkpoint's state.json only; the one scored is read (and checksummed) below
    ckpts = [(read_json(p / "state.json"), p) for p in list_checkpoints(loaded.run_dir)]
    decode = DecodeConfig(beam=loaded.cfg.decode.beam, batch_size=64)
    rows = []
    for mark in [None] if args.at_step else args.marks:
        if mark is None:  # equal updates: the newest checkpoint at or before update --at-step
            at = [p for state, p in ckpts if state["step"] <= args.at_step]
        else:  # a run stops at the first update past its budget: the final mark is its last checkpoint
            at = [p for state, p in ckpts if mark >= args.minutes or state["elapsed"] <= mark * 60 + 1e-6]
        if not at:
            continue
        meta, sd, _ = read_checkpoint(at[-1])
        path = at[-1]
        mark = mark if mark is not None else round(meta["elapsed"] / 60, 2)
        load_model_state(loaded.net, sd, meta, loaded.space, path)
        for name, arch in archs:
            model = loaded.net.export(arch)
            r = evaluate_model(model, loaded.tokenizer, loaded.cfg.data, "test_2016_flickr", decode, args.eval_limit,
                               progress=False)  # fmt: skip
            params_m = round(sum(t.numel() for t in model.parameters()) / 1e6, 2)
            rows.append({"run": run, "subnet": name, "arch": arch_to_dict(arch), "params_m": params_m,
                         "mark_min": mark, "step": meta["step"],
                         "train_s": round(meta["elapsed"], 1), "bleu": r["bleu"], "chrf": r["chrf"],
                         "sentences": r["sentences"], "precision": meta.get("precision")})  # fmt: skip
            print(f"{run:7s} {name:8s} {mark:>5g} min  step {meta['step']:5d}  BLEU {r['bleu']:6.2f}", flush=True)
    return rows


def _line(r: dict) -> str:
    cells = [r["run"], r["subnet"], f"{r['params_m']:.2f}", f"{r['train_s'] / 60:.1f}", str(r["step"]),
             f"{r['bleu']:.2f}", f"{r['chrf']:.2f}"]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def between(rows: list[dict]) -> list[str]:
    """Per supernet run at its last mark: the random archs' mean BLEU and how many score between the smallest
    and the largest arch (what a search's winners need)."""
    lines = []
    for run in dict.fromkeys(r["run"] for r in rows):
        last = max(r["mark_min"] for r in rows if r["run"] == run)
        at = {r["subnet"]: r["bleu"] for r in rows if r["run"] == run and r["mark_min"] == last}
        rand = [b for k, b in at.items() if k.startswith("random")]
        if "smallest" not in at or not rand:
            continue
        lo, hi = at["smallest"], at["largest"]
        inside = sum(lo <= b <= hi for b in rand)
        lines.append(f"- {run} at {last:g} min: random archs mean BLEU {sum(rand) / len(rand):.2f} "
                     f"(smallest {lo:.2f}, largest {hi:.2f}); {inside} of {len(rand)} between the two")  # fmt: skip
    return lines


def _together(args: argparse.Namespace) -> str:
    if not args.together:
        return "one after another"
    return f"side by side, {args.jobs} at a time in the order listed" if args.jobs else "side by side, all at once"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument(
        "--runs",
        nargs="+",
        default=["dense", "neuron"],
        help="dense, shared, layer, neuron, or LABEL:GENERATOR:key=value,... (config overrides)",
    )
    p.add_argument("--random", type=int, default=0, help="also score N seeded random archs of each supernet")
    p.add_argument("--minutes", type=float, default=8.0, help="training time of each run (the loop's clock)")
    p.add_argument("--marks", type=float, nargs="+", default=[2, 4, 8], help="time marks scored (minutes)")
    p.add_argument("--at-step", type=int, default=0, help="score at this update (equal updates) instead of --marks")
    p.add_argument("--every", type=int, default=25, help="updates between checkpoints")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--together", action="store_true", help="train the runs at the same time (side by side)")
    p.add_argument("--jobs", type=int, default=0, help="with --together: at most this many at a time (0: all)")
    p.add_argument("--eval-limit", type=int, default=500, help="test sentences scored at each mark (a seeded sample)")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--out", default="time_to_quality", help="results name: benchmarks/results/OUT.{md,json}")
    args = p.parse_args()
    walls = train_all(args)
    rows = [r for spec in args.runs for r in score(spec, args)]
    meta = {**machine(), **{k: v for k, v in vars(args).items()}, "wall_s": walls}
    first = next((r for r in args.runs if parse_run(r)[1] != "dense"), args.runs[0])  # a supernet's recipe
    env = load_run(WORK / f"ttq-{parse_run(first)[0]}").cfg
    md = [
        "# Time to quality: BLEU against training time (quick start recipe)",
        "",
        f"Config `{args.config}` ({env.train.sampling}, num_random {env.train.num_random}, lr {env.train.lr:g}, "
        f"warm-up {env.train.warmup}, {env.data.max_tokens} tokens per batch); {args.threads} thread(s) per run, "
        f"runs {_together(args)}; training time is the "
        f"loop's clock (updates only). BLEU/chrF: sacreBLEU on a seeded sample of {args.eval_limit} sentences of "
        f"test_2016_flickr, beam {env.decode.beam}; `dense` = the largest arch trained alone.",
        "",
        *(
            [
                f"Scored at equal updates: each run's newest checkpoint at or before update {args.at_step} (the "
                "minutes column is that checkpoint's training time), not at time marks.",
                "",
            ]
            if args.at_step
            else []
        ),
        "Runs (label:generator:overrides): " + ", ".join(f"`{r}`" for r in args.runs) + "; random archs: a seeded "
        "sample of the space, the same for every run.",
        "",
        "| run | subnet | params (M) | minutes | step | BLEU | chrF |",
        "|---|---|---:|---:|---:|---:|---:|",
        *(_line(r) for r in rows),
        "",
        *between(rows),
    ]
    write(args.out, meta, rows, md)


if __name__ == "__main__":
    main()
