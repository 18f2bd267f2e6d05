"""`mosnas glue`: fine-tune a Hugging Face BERT folder on GLUE tasks (mosnas.bert.glue.harness), with options
that stand for `glue.*` settings, checked as those are declared."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from mosnas.cli.args import setting
from mosnas.config import GlueConfig, setting_default
from mosnas.workspace.model_dir import ModelDir

_option = setting  # an option for a glue.* setting: help gets the default and the config key; checked as declared


def add_commands(sub: Any) -> None:
    """`mosnas glue MODEL --task T [T ...]`."""
    g = sub.add_parser(
        "glue",
        help="fine-tune a Hugging Face BERT folder on GLUE tasks and report the official dev metrics",
        description="Fine-tune MODEL (an exported student, the teacher, any BERT folder) on GLUE tasks in the "
        "standard TSV layout; writes OUT/glue/<task>/result.json and prints one line per task. A task folder "
        "that is not a GLUE task needs no code: its columns come from its header or a glue_task.json "
        "(see mosnas/bert/glue/data.py).",
    )
    g.add_argument("model", help="Hugging Face model folder (config.json, weights, tokenizer files)")
    g.add_argument("--task", nargs="+", required=True, help="task folder(s) of --data, e.g. SST-2 STS-B CoLA")
    default_data = setting_default("glue.data")
    g.add_argument(
        "--data",
        default=default_data,
        help=f"GLUE folder: one folder per task with train/dev .tsv[.gz] (default: {default_data}) [config: glue.data]",
    )
    g.add_argument(
        "--out",
        help="output folder; results in OUT/glue/<task>/ (default: a mosnas export's own folder, "
        "else runs/<model folder name>)",
    )
    _option(
        g,
        "--epochs",
        "glue.epochs",
        help="passes over the training (sub)set, fractions allowed; 0: the task's standard",
    )
    _option(g, "--lr", "glue.lr", nargs="+", help="peak learning rate (0: the task's standard); several: a sweep")
    _option(g, "--batch-size", "glue.batch_size", help="examples per step")
    _option(g, "--length-buckets", "glue.length_buckets", help="batches per length-sorted bucket (0: none)")
    _option(g, "--max-seq-len", "glue.max_seq_len", help="WordPiece tokens per example, longer ones truncated")
    _option(g, "--warmup", "glue.warmup", help="fraction of the steps with linear warm-up")
    _option(g, "--weight-decay", "glue.weight_decay", help="AdamW's (not on biases and LayerNorm weights)")
    _option(g, "--train-limit", "glue.train_limit", help="seeded random subset of N training examples (0: all)")
    _option(g, "--dev-limit", "glue.dev_limit", help="seeded random subset of N dev examples (0: all)")
    _option(g, "--seed", "glue.seed", help="seed of the subsets, and of the fine-tuning unless --seeds")
    _option(g, "--seeds", "glue.seed", nargs="+", default=(), help="fine-tune once per seed: mean and std")
    g.add_argument(
        "--kd-teacher",
        default="",
        help="fine-tuned classifier folder (or OUT of a --save run); KD at fine-tuning (default: none) "
        "[config: glue.kd_teacher]",
    )
    _option(g, "--kd-alpha", "glue.kd_alpha", help="weight of the soft loss: (1 - a) hard + a soft")
    _option(g, "--kd-temperature", "glue.kd_temperature", help="softmax temperature of the soft loss")
    _option(g, "--kd-loss", "glue.kd_loss", help="prediction-layer KD: ce (KL at the temperature) | mse of logits")
    _option(
        g,
        "--kd-intermediate",
        "glue.kd_intermediate",
        nargs="+",
        help="Distiller's intermediate representations, also learned from --kd-teacher: hidden attention relations",
    )
    _option(g, "--kd-layer-map", "glue.kd_layer_map", help="student layer -> teacher layer: skip | last | first")
    _option(g, "--kd-hidden-loss", "glue.kd_hidden_loss", help="hidden-state loss per layer pair: mse | cos | pkd | mi")
    _option(g, "--kd-attention-loss", "glue.kd_attention_loss", help="attention loss per layer pair: mse | kl")
    _option(g, "--kd-intermediate-weight", "glue.kd_intermediate_weight", help="weight of the intermediate terms")
    _option(g, "--kd-mi-alpha", "glue.kd_mi_alpha", help="MI-α's α in [0, 1]: 1 = InfoNCE, 0 = TUBA")
    _option(g, "--precision", "glue.precision", help="auto | fp32 | bf16")
    _option(g, "--threads", "glue.threads", help="torch threads (0: torch's default)")
    g.add_argument("--save", action="store_true", help="keep the best run's classifier in OUT/glue/<task>/model")
    g.add_argument("--force", action="store_true", help="replace a result of other settings in OUT")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.set_defaults(handler=run_glue_command)


def settings_of(args: argparse.Namespace) -> GlueConfig:
    """The glue settings of a parsed command line (several --lr values are a sweep)."""
    lrs = tuple(args.lr) if isinstance(args.lr, (list, tuple)) else (args.lr,)
    fields = {f.name for f in dataclasses.fields(GlueConfig)}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()
             if k in fields and k not in ("lr", "seeds")}  # fmt: skip
    return GlueConfig(
        **given, tasks=tuple(args.task), lr=lrs[0], lr_sweep=lrs if len(lrs) > 1 else (), seeds=tuple(args.seeds)
    )


def run_glue_command(args: argparse.Namespace) -> int:
    """Plan every task (a bad one fails before any work and leaves no files), then fine-tune each and print
    its summary line."""
    from mosnas.bert.glue.harness import execute, plan

    gc = settings_of(args)
    folder = Path(args.model).resolve()
    # a mosnas export: its own folder (as `mosnas run` does); else runs/<model folder name>, a folder named `model`
    # (the bundled teacher's, a `--save`d classifier's) by its parent
    named = Path("runs") / (folder.parent.name if folder.name == "model" else folder.name)
    out = Path(args.out) if args.out else folder if ModelDir(folder).record.is_file() else named
    plans = {}
    for name in args.task:
        p = plan(args.model, name, args.data, out, gc, args.force, args.save)
        plans.setdefault(p.task.name, p)  # sst2 and SST-2 are one task
    for p in plans.values():
        reused = p.done
        result = execute(p, progress=not args.quiet)
        print(result["summary"] + ("  [reused]" if reused else ""), flush=True)
        print(f"  {p.result_path}", file=sys.stderr)
    return 0
