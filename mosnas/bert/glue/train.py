"""One GLUE fine-tuning run of a Hugging Face BERT folder: a new classification (or regression) head,
AdamW with linear warm-up and decay, dynamic padding, optional knowledge distillation from a fine-tuned teacher.

The recipe is BERT's (Devlin et al. 2019, appendix A.3): AdamW without weight decay on biases and LayerNorm
weights, linear warm-up over a fraction of the steps then linear decay to 0
(`transformers.get_linear_schedule_with_warmup`), gradient norm clipped at 1, the dev metric of the final
model. KD at fine-tuning (mosnas.bert.glue.kd): the MoS paper's (1 - a) hard + a soft at the prediction layer,
and with `glue.kd_intermediate` Distiller's intermediate terms from the teacher run beside the student."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mosnas.bert.glue.data import Example, Task, subset
from mosnas.bert.glue.kd import kd_loss, pipeline_for, step_outputs
from mosnas.bert.glue.metrics import compute, metric_key, score
from mosnas.config import GlueConfig
from mosnas.errors import ConfigError, TrainingError
from mosnas.hardware import Precision
from mosnas.workspace.records import write_json

Encoded = dict[str, list[list[int]]]  # input_ids, token_type_ids, attention_mask: one list of ids per example


@dataclass
class Prepared:
    """A task made ready once for every run of it: tokenized splits, targets and the KD teacher's outputs."""

    tokenizer: Any
    device: torch.device
    train: Encoded
    targets: list[float] | list[int]  # class indices, or scores of a regression
    dev: dict[str, Encoded]  # per dev split
    gold: dict[str, list[float] | list[int]]
    teacher: torch.Tensor | None = None  # (N_train, num_labels) outputs of the fine-tuned teacher
    teacher_model: Any = None  # the fine-tuned teacher itself, for glue.kd_intermediate (same token ids)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' own warnings (e.g. 'newly initialized' head weights, which we record instead)
    and its progress bars for loading and saving weights."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def encode(tokenizer: Any, examples: list[Example], max_seq_len: int) -> Encoded:
    """WordPiece ids of every example (a pair truncated longest-first to max_seq_len tokens, [CLS]/[SEP] in)."""
    columns = [list(col) for col in zip(*(e.texts for e in examples))]
    enc = tokenizer(*columns, truncation=True, max_length=max_seq_len)
    return {k: list(v) for k, v in enc.items() if k in ("input_ids", "token_type_ids", "attention_mask")}


def collate(enc: Encoded, idx: list[int], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The batch of examples `idx`, padded to its longest: (B, L) int64 tensors on `device`."""
    length = max(len(enc["input_ids"][i]) for i in idx)
    out = {}
    for key, rows in enc.items():
        fill = pad_id if key == "input_ids" else 0
        out[key] = torch.tensor([rows[i] + [fill] * (length - len(rows[i])) for i in idx], device=device)
    return out


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.bf16)


@torch.no_grad()
def predict(
    model: Any, enc: Encoded, batch_size: int, pad_id: int, device: torch.device, precision: Precision
) -> np.ndarray:
    """The model's outputs (N, num_labels) in fp32, in eval mode (no dropout); batches in length order."""
    model.eval()
    n = len(enc["input_ids"])
    order = sorted(range(n), key=lambda i: len(enc["input_ids"][i]))  # less padding
    out = np.zeros((n, model.config.num_labels), dtype=np.float32)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        with autocast(device, precision):
            logits = model(**collate(enc, idx, pad_id, device)).logits
        out[idx] = logits.float().cpu().numpy()
    return out


def prepare(
    model_dir: Path, task: Task, gc: GlueConfig, teacher: Path | None, device: torch.device, precision: Precision
) -> Prepared:
    """Tokenize the seeded subsets once for every run; with a KD `teacher` folder, its outputs on the training
    subset (with its own tokenizer)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    train = subset(task.train, gc.train_limit, gc.seed)
    dev = {split: subset(examples, gc.dev_limit, gc.seed) for split, examples in task.dev.items()}
    data = Prepared(
        tokenizer,
        device,
        encode(tokenizer, train, gc.max_seq_len),
        [task.target(e.label) for e in train],
        {split: encode(tokenizer, examples, gc.max_seq_len) for split, examples in dev.items()},
        {split: [task.target(e.label) for e in examples] for split, examples in dev.items()},
    )
    if teacher is not None:
        with quiet_transformers():
            t_tok = AutoTokenizer.from_pretrained(str(teacher), local_files_only=True)
            t_model = AutoModelForSequenceClassification.from_pretrained(str(teacher), local_files_only=True)
        enc = encode(t_tok, train, gc.max_seq_len)
        out = predict(t_model.to(device), enc, 2 * gc.batch_size, t_tok.pad_token_id or 0, device, precision)
        data.teacher = torch.from_numpy(out)
        if gc.kd_intermediate:  # the teacher runs on the student's batches: the ids must mean the same tokens
            if enc["input_ids"] != data.train["input_ids"]:
                raise ConfigError(
                    f"glue.kd_intermediate: {teacher} tokenizes the training set differently from {model_dir}; "
                    "intermediate KD needs one tokenizer"
                )
            data.teacher_model = t_model  # on `device` and in eval mode (predict)
    return data


def load_classifier(model_dir: Path, task: Task) -> tuple[Any, list[str]]:
    """The folder's encoder with a new head for `task` (label names in its config), and the weights that are
    new (the head; also the pooler where the folder has none)."""
    from transformers import AutoModelForSequenceClassification

    from mosnas.bert.nasbert.hf_modeling import register

    register()  # a NAS-BERT student's folder (model_type mosnas-nasbert)
    labels = list(task.labels) if not task.regression else ["score"]
    with quiet_transformers():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir),
            num_labels=task.num_labels,
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            problem_type="regression" if task.regression else "single_label_classification",
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # a folder fine-tuned on another task: its head is replaced
        )
    return model, sorted({*info["missing_keys"], *(k for k, *_ in info.get("mismatched_keys", []))})


def _optimizer(model: Any, gc: GlueConfig, lr: float) -> torch.optim.AdamW:
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", ".norm.weight")  # the last: NAS-BERT's op norms
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": gc.weight_decay},
        {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def train_run(
    model_dir: Path,
    task: Task,
    data: Prepared,
    gc: GlueConfig,
    lr: float,
    seed: int,
    precision: Precision,
    progress: bool = True,
    save_dir: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune `model_dir` on `data.train` (with KD when `data.teacher` is set) and score the final model on
    every dev split. Seeded: the head's init, the dropout masks and the batch order come from `seed`.
    Returns the run's record; `save_dir`: also save the fine-tuned classifier there."""
    torch.manual_seed(seed)
    model, new_weights = load_classifier(model_dir, task)
    model.to(data.device)
    pipeline = pipeline_for(gc, model, data.teacher_model) if data.teacher_model is not None else None
    steps, losses, train_s = _loop(model, task, data, gc, lr, seed, precision, progress, pipeline)
    metrics: dict[str, float] = {}
    for split, enc in data.dev.items():
        out = predict(model, enc, 2 * gc.batch_size, data.pad_id, data.device, precision)
        found = compute(task.spec.metrics, out, data.gold[split])
        metrics.update({metric_key(m, split): v for m, v in found.items()})
    if save_dir is not None:
        save_classifier(model, data.tokenizer, save_dir, task)
    per_epoch = math.ceil(len(data.targets) / gc.batch_size)
    return {
        "lr": lr,
        "seed": seed,
        "steps": steps,
        "metrics": metrics,
        "score": score(metrics),
        "train_loss_last_epoch": round(float(np.mean(losses[-per_epoch:])), 4),
        "train_s": round(train_s, 1),
        "train_examples_per_s": round(steps * gc.batch_size / train_s, 1),
        "new_weights": new_weights,
    }


def epoch_batches(lengths: list[int], batch_size: int, buckets: int, gen: torch.Generator) -> list[list[int]]:
    """One epoch's batches of example indices: a seeded shuffle cut into batches; with `buckets`, each run of
    `buckets` batches of the shuffle is sorted by length first, longest first (Hugging Face's group_by_length
    megabatches), so a batch pads to similar lengths while the epoch stays random."""
    order = torch.randperm(len(lengths), generator=gen).tolist()
    if buckets:
        size = buckets * batch_size
        chunks = [order[i : i + size] for i in range(0, len(order), size)]
        order = [i for chunk in chunks for i in sorted(chunk, key=lambda j: -lengths[j])]
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _loop(
    model: Any,
    task: Task,
    data: Prepared,
    gc: GlueConfig,
    lr: float,
    seed: int,
    precision: Precision,
    progress: bool,
    pipeline: Any = None,
) -> tuple[int, list[float], float]:
    """The training steps: ceil(epochs * batches per epoch), reshuffled each epoch; with a KD `pipeline`
    (mosnas.bert.distiller.pipeline.KDPipeline) its intermediate terms join the loss and its own parameters the
    optimizer. Returns the number of steps, the loss of each step and the seconds spent."""
    from transformers import get_linear_schedule_with_warmup

    n, device = len(data.targets), data.device
    steps = max(1, math.ceil(gc.epochs * math.ceil(n / gc.batch_size)))
    opt = _optimizer(model, gc, lr)
    if pipeline is not None:  # projections / MI-α critics, trained with the student
        opt.add_param_group({"params": list(pipeline.parameters()), "weight_decay": 0.0})
    sched = get_linear_schedule_with_warmup(opt, round(gc.warmup * steps), steps)
    targets = torch.tensor(data.targets, dtype=torch.float32 if task.regression else torch.long)
    gen = torch.Generator().manual_seed(seed)
    lengths = [len(ids) for ids in data.train["input_ids"]]
    order: list[list[int]] = []
    bar = tqdm(total=steps, desc=f"{task.name} lr {lr:g} seed {seed}", disable=not progress, leave=False)
    start, losses = time.perf_counter(), []
    model.train()
    for step in range(steps):
        if not order:
            order = epoch_batches(lengths, gc.batch_size, gc.length_buckets, gen)
        idx, order = order[0], order[1:]
        with autocast(device, precision):
            logits, terms = step_outputs(model, collate(data.train, idx, data.pad_id, device), pipeline,
                                         data.teacher_model)  # fmt: skip
        teacher = data.teacher[idx].to(device) if data.teacher is not None else None
        loss = kd_loss(logits, targets[idx].to(device), teacher, task.regression, gc)
        if terms:
            loss = loss + gc.kd_intermediate_weight * torch.stack([v.float() for v in terms.values()]).sum()
        if not torch.isfinite(loss):
            raise TrainingError(f"{task.name}: the loss is {loss.item()} at step {step + 1} (lower the lr)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        speed = (step + 1) * gc.batch_size / (time.perf_counter() - start)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", ex_s=f"{speed:.0f}")
        bar.update()
    bar.close()
    return steps, losses, time.perf_counter() - start


def save_classifier(model: Any, tokenizer: Any, folder: Path, task: Task) -> None:
    """A Hugging Face classifier folder (loads with AutoModelForSequenceClassification; a KD teacher for
    `mosnas glue --kd-teacher`), with glue_model.json naming its task and labels."""
    with quiet_transformers():
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
    write_json(
        folder / "glue_model.json", {"task": task.name, "labels": list(task.labels), "regression": task.regression}
    )
