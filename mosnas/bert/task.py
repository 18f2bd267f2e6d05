"""The BERT family's training task: task-agnostic distillation of the supernet from the teacher on unlabeled
text (mosnas.bert.data), with the losses of mosnas.bert.distill; its held-out loss for validation, for the
search's fitness and for the evaluation of an exported student.

Splits: the supernet trains on `data.train` of `data.dir` (Wikipedia), validation and the search's fitness read
`data.valid` of the same folder (selection), and the final evaluation reads `bert.eval_text` (WikiText-2 raw
test by default), which nothing is ever selected on."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from mosnas.bert.data import Batch, TextData, load_text, text_files
from mosnas.bert.distill import Distiller, check_relation_heads
from mosnas.bert.glue.stage import check_glue, glue_scores
from mosnas.bert.importance import ORDERED, kept_layers, ordered_teacher
from mosnas.bert.subspace import CROPPED, crop_teacher
from mosnas.bert.teacher import load_teacher, teacher_path, teacher_weights
from mosnas.config import Config, SearchConfig
from mosnas.core.space import Arch, Space
from mosnas.hardware import Precision
from mosnas.workspace.model_dir import ModelDir
from mosnas.workspace.records import fresh, made_from, read_json, write_json

RUN_FILES = (CROPPED, ORDERED)  # the teacher cut to the space and ordered by importance (`prepare`)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def batch_size(cfg: Config) -> int:
    """Sequences per batch: `data.max_tokens` // `bert.max_seq_len` (at least 1)."""
    return max(1, cfg.data.max_tokens // cfg.bert.max_seq_len)


def eval_files(cfg: Config) -> list[Path]:
    """The final evaluation's text: `bert.eval_text`, or `data.test` of `data.dir` when it is ""."""
    if not cfg.bert.eval_text:
        return text_files(cfg.data.dir, cfg.data.test)
    path = Path(cfg.bert.eval_text)
    if not path.is_file():
        from mosnas.errors import ConfigError

        raise ConfigError(f"bert.eval_text: file not found: {path}")
    return [path]


def check_inputs(cfg: Config) -> None:
    """Text splits, the teacher, relation heads against the space and the teacher, and GLUE task folders, checked
    before a run folder is made."""
    import transformers

    from mosnas.bert.space import load_space

    for split in (cfg.data.train, cfg.data.valid):
        text_files(cfg.data.dir, split)
    eval_files(cfg)
    folder = teacher_path(cfg.bert.teacher)
    hidden = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True).hidden_size
    if cfg.bert.objective != "hidden":
        check_relation_heads(cfg.bert.relation_heads, list(load_space(cfg.supernet.space).hidden), hidden)
    check_glue(cfg)


def distill_teacher(cfg: Config) -> str:
    """The teacher folder a run distils from and scores against: its importance-ordered teacher (`RUN/teacher/`,
    whose units line up with the supernet's) when it has one, else `bert.teacher`."""
    ordered = cfg.run_dir / ORDERED
    return str(ordered) if (ordered / "config.json").is_file() else cfg.bert.teacher


def prepare(cfg: Config, run_dir: Path) -> None:
    """What a run needs before its supernet is built, with `bert.init` from the teacher: with `bert.order=
    importance` the importance-ordered teacher (mosnas.bert.importance), and for a space narrower or shallower
    than the teacher, the (ordered) teacher cut to the space (mosnas.bert.subspace: a shallower space keeps the
    most important layers). The tokenizer is the teacher's WordPiece (the run's config names it)."""
    import transformers

    from mosnas.bert.space import load_space

    if cfg.bert.init == "random":
        return
    space = load_space(cfg.supernet.space)
    weights, layers = teacher_weights(cfg.bert.teacher), None
    if cfg.bert.order == "importance":
        weights = ordered_teacher(cfg, run_dir) / "model.safetensors"
        layers = kept_layers(run_dir, max(space.layers))
    if (Path(run_dir) / CROPPED).is_file():
        return
    folder = teacher_path(cfg.bert.teacher)
    vocab_size = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True).vocab_size
    crop_teacher(weights, space, vocab_size, Path(run_dir) / CROPPED, layers)


def _distiller(cfg: Config, space: Space, teacher_hidden: int) -> Distiller:
    bc = cfg.bert
    return Distiller(bc.objective, bc.relation_heads, max(space.hidden), teacher_hidden, bc.relation_loss)


@torch.no_grad()
def _targets(teacher: Any, batch: Batch) -> dict[str, Any]:
    """What the losses read of the teacher: the last layer's q, k, v and hidden states (B, T, H), the pooled
    output (B, H)."""
    out = teacher.outputs(batch.input_ids, batch.attention_mask)
    return {"last_qkv": out["last_qkv"], "hidden": out["hidden"], "pooled": out["pooled"]}


@torch.no_grad()
def heldout_loss(
    student: Any,
    batches: list[Batch],
    targets: list[dict],
    distiller: Distiller,
    device: torch.device,
    bf16: bool,
    desc: str = "",
) -> float:
    """Mean distillation loss per real token of `student(input_ids, attention_mask)` on `batches` (a progress
    bar named `desc` when given)."""
    total, tokens = 0.0, 0
    for b, t in tqdm(list(zip(batches, targets)), desc=desc, disable=not desc, leave=False, unit="batch"):
        with _autocast(device, bf16):
            out = student(b.input_ids, b.attention_mask)
        total += float(distiller(out, t, b.attention_mask, denominator=1.0))
        tokens += b.num_tokens
    return total / tokens


class DistillTask:
    """Distillation batches of packed text, the sandwich's losses against the teacher (its outputs computed
    once per batch) and validation records. The projection (every objective but `relations`) is the
    task's `module`: the trainer optimizes and checkpoints it with the supernet."""

    def __init__(
        self, cfg: Config, run_dir: Path, space: Space, fixed: Arch | None, device: torch.device, precision: Precision
    ):
        dc, bc, tc = cfg.data, cfg.bert, cfg.train
        self.space, self.fixed, self.device, self.bf16 = space, fixed, device, precision.bf16
        self.teacher = load_teacher(distill_teacher(cfg)).to(device)
        tok, size = self.teacher.tokenizer, batch_size(cfg)
        self.data = load_text(text_files(dc.dir, dc.train), tok, bc.max_seq_len, size, dc.train_limit, 0, tc.seed)
        valid = load_text(text_files(dc.dir, dc.valid), tok, bc.max_seq_len, size, 0, dc.valid_limit, tc.seed)
        self.valid = [valid.collate(b).to(device) for b in valid.batches(0, shuffle=False)]
        self.valid_targets = [_targets(self.teacher, b) for b in self.valid]
        self.module: nn.Module | None = _distiller(cfg, space, self.teacher.config.hidden_size).to(device)
        self.distiller = self.module
        if not any(True for _ in self.module.parameters()):
            self.module = None  # nothing to train beside the supernet (relations)
        self.vocab_size = self.teacher.config.vocab_size
        self.info = {
            "train_sequences": len(self.data),
            "valid_sequences": len(valid),
            "batch_sequences": size,
            "objective": bc.objective,
            "teacher": str(self.teacher.path),
            "vocab_size": self.vocab_size,
        }

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches (sequence indices); the order depends only on (seed, epoch): exact resume."""
        return self.data.batches(epoch)

    def collate(self, indices: list[int]) -> Batch:
        return self.data.collate(indices).to(self.device)

    def count(self, batch: Batch) -> int:
        """Real tokens: the loss's denominator (summed over a global batch under DDP)."""
        return batch.num_tokens

    def step(
        self, net: nn.Module, batch: Batch, archs: list[tuple[str, Arch]], denominator: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Forward and backward of every arch on `batch` against the teacher's outputs (computed once)."""
        target = _targets(self.teacher, batch)
        losses: dict[str, list[torch.Tensor]] = {}
        for kind, arch in archs:
            with _autocast(self.device, self.bf16):
                out = net(batch.input_ids, batch.attention_mask, arch)
            loss = self.distiller(out, target, batch.attention_mask, denominator)
            loss.backward()
            losses.setdefault(kind, []).append(loss.detach())
        return {k: torch.stack(v).mean() for k, v in losses.items()}

    def validate(self, net: nn.Module, step: int) -> dict[str, Any]:
        """Held-out distillation loss per token of the largest and smallest archs (or the fixed one)."""
        archs = (
            {"fixed": self.fixed}
            if self.fixed
            else {"largest": self.space.largest(), "smallest": self.space.smallest()}
        )
        was_training = net.training
        net.eval()
        record: dict[str, Any] = {"step": step}
        for kind, arch in archs.items():
            student = lambda ids, mask, arch=arch: net(ids, mask, arch)
            loss = heldout_loss(student, self.valid, self.valid_targets, self.distiller, self.device, self.bf16)
            record[f"valid_loss_{kind}"] = round(loss, 5)
        net.train(was_training)
        return record


def task(
    cfg: Config, run_dir: Path, space: Space, fixed: Arch | None, device: torch.device, precision: Precision
) -> DistillTask:
    """The training loop's task for a run of `cfg`."""
    return DistillTask(cfg, run_dir, space, fixed, device, precision)


def trained_distiller(cfg: Config, space: Space, task_state: dict[str, torch.Tensor], teacher_hidden: int) -> Distiller:
    """The run's distiller with its trained projection: `task_state`, the tensors the trainer checkpointed for this
    task's `module` (a loaded run's `task_state`)."""
    distiller = _distiller(cfg, space, teacher_hidden)
    if distiller.state_dict():
        distiller.load_state_dict(task_state)
    return distiller


def _fixed_sample(
    cfg: Config, teacher: Any, files: list[Path], limit: int, device: torch.device, desc: str = ""
) -> tuple:
    """A held-out sample of `limit` sequences across every document of `files` (mosnas.bert.data.sample_sequences:
    the same for every run) in batches on `device`, and the teacher's outputs for each."""
    data: TextData = load_text(files, teacher.tokenizer, cfg.bert.max_seq_len, batch_size(cfg), 0, limit)
    batches = [data.collate(b).to(device) for b in data.batches(0, shuffle=False)]
    bar = tqdm(batches, desc=desc, disable=not desc, leave=False, unit="batch")
    return batches, [_targets(teacher, b) for b in bar], len(data)


def fitness(run: Any, sc: SearchConfig, device: torch.device, bf16: bool) -> tuple[Any, dict[str, Any]]:
    """The search's fitness: the inherited student's distillation loss per token (the run's objective, lower is
    better) on a held-out sample of `search.valid_sentences` sequences across all of `data.valid`; the teacher's
    outputs are computed once."""
    cfg = run.cfg
    teacher = load_teacher(distill_teacher(cfg)).to(device)
    files = text_files(cfg.data.dir, cfg.data.valid)
    batches, targets, n = _fixed_sample(cfg, teacher, files, sc.valid_sentences, device)
    distiller = trained_distiller(cfg, run.space, run.task_state, teacher.config.hidden_size).to(device)

    def fit(arch: Arch) -> float:
        student = lambda ids, mask: run.net(ids, mask, arch)
        return heldout_loss(student, batches, targets, distiller, device, bf16)

    return fit, {"valid_sequences": n, "objective": cfg.bert.objective}


def selection_score(run: Any, sc: SearchConfig, device: torch.device, bf16: bool) -> tuple[Any, dict[str, Any]]:
    """The search's final pick (`search.rerank`): the fitness on a held-out sample of `search.rerank_sentences`
    validation sequences (more than the search saw, holding those), negated so that higher is better. GLUE is
    not a pick-time measure: it needs fine-tuning per task."""
    fit, about = fitness(run, replace(sc, valid_sentences=sc.rerank_sentences), device, bf16)
    return (lambda arch: -fit(arch)), {"rerank_metric": "-distill loss", "rerank_sentences": about["valid_sequences"]}


def evaluate(model_dir: Path, cfg: Config, progress: bool, upstream: dict[str, Any] | None) -> dict[str, Any]:
    """An exported student's held-out relation loss against the teacher (`distill_loss`: MiniLMv2's Q-Q, K-K,
    V-V KL per token on `eval.limit` sequences of the evaluation text; the same measure whatever objective
    trained it, as it needs no trained projection), saved as eval.distill.json, and with `glue.tasks` its GLUE
    dev scores (mosnas.bert.glue.stage). Each result is reused only while what it was made from holds."""
    bc, model_dir = cfg.bert, Path(model_dir)
    files = eval_files(cfg)
    result_file = ModelDir(model_dir).eval("distill")
    record = made_from(
        model=upstream,
        text=[str(f) for f in files],
        bert={"teacher": distill_teacher(cfg), "max_seq_len": bc.max_seq_len, "relation_heads": bc.relation_heads},
        eval={"limit": cfg.eval.limit},
    )
    if not fresh(result_file, record, f"evaluation of {model_dir.name}"):
        result_file.unlink(missing_ok=True)
        from mosnas.bert.export import load_model

        teacher = load_teacher(distill_teacher(cfg))
        student, _ = load_model(model_dir)
        what = f"teacher on {files[0].name}" if progress else ""
        batches, targets, n = _fixed_sample(cfg, teacher, files, cfg.eval.limit, torch.device("cpu"), what)
        relations = Distiller("relations", bc.relation_heads, 1, 1)
        what = f"relation loss of {model_dir.name}" if progress else ""
        loss = heldout_loss(student, batches, targets, relations, torch.device("cpu"), False, what)
        result = {"distill_loss": round(loss, 5), "eval_sequences": n, "eval_text": [f.name for f in files]}
        result["split"] = f"{'+'.join(f.name for f in files)}, {n:,} seq. of <= {bc.max_seq_len} tok."  # report
        write_json(result_file, {**result, "made_from": record})
    out = {k: v for k, v in read_json(result_file).items() if k != "made_from"}
    glue = glue_scores(model_dir, cfg, progress, upstream)
    return {**out, **({"glue": glue} if glue else {})}
