"""The translation task of the training loop: parallel batches, label-smoothed cross-entropy with in-place
distillation, validation NLL (and BLEU of a fixed arch), and the search's fitness."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mosnas.config import Config
from mosnas.core.space import Arch, Space
from mosnas.core.supernet import Supernet
from mosnas.hardware import Precision
from mosnas.mt.data import PAD, ParallelData, load_parallel, load_tokenizer, read_parallel, train_tokenizer
from mosnas.mt.decode import translate
from mosnas.mt.evaluate import score


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def token_loss(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float, denominator: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Label-smoothed cross-entropy summed over non-pad tokens / `denominator` (default: their count)."""
    total = F.cross_entropy(
        logits.float().flatten(0, 1), target.flatten(), ignore_index=PAD, label_smoothing=smoothing, reduction="sum"
    )
    return total / (target.ne(PAD).sum() if denominator is None else denominator)


def distill_loss(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, denominator: torch.Tensor | float | None = None
) -> torch.Tensor:
    """KL(teacher || student) per token (temperature 1), summed over non-pad tokens / `denominator`."""
    kl = F.kl_div(student.float().log_softmax(-1), teacher.float().log_softmax(-1), log_target=True, reduction="none")
    mask = target.ne(PAD)
    return (kl.sum(-1) * mask).sum() / (mask.sum() if denominator is None else denominator)


@torch.no_grad()
def evaluate_loss(net: Supernet, data: ParallelData, arch: Arch, device: torch.device, bf16: bool = False) -> float:
    """Mean per-token NLL of `arch` (inherited weights) on every pair of `data`, in eval mode."""
    was_training = net.training
    net.eval()
    total, count = 0.0, 0
    for idx in data.batches(0, shuffle=False):
        b = data.collate(idx).to(device)
        with autocast(device, bf16):
            logits = net(b.src, b.prev, arch)
        total += F.cross_entropy(
            logits.float().flatten(0, 1), b.target.flatten(), ignore_index=PAD, reduction="sum"
        ).item()
        count += b.num_tokens
    net.train(was_training)
    return total / count


def supernet_fitness(
    net: Supernet, data: ParallelData, device: torch.device | str = "cpu", bf16: bool = False
) -> Callable[[Arch], float]:
    """DESIGN's search fitness: the supernet's validation loss for an arch (inherited weights) on `data`
    (under bf16 autocast when `bf16`)."""
    return lambda arch: evaluate_loss(net, data, arch, torch.device(device), bf16)


def tokenizer_for_run(cfg: Config, run_dir: Path):
    """The run's subword model: trained once on both sides of the training split, then reused."""
    path = run_dir / "spm.model"
    if path.is_file():
        return load_tokenizer(path)
    if cfg.data.tokenizer:  # reuse a trained vocabulary (fine-tuning an exported model)
        load_tokenizer(cfg.data.tokenizer)  # fails clearly if it is not a sentencepiece model
        shutil.copyfile(cfg.data.tokenizer, path)
        return load_tokenizer(path)
    src, tgt = read_parallel(cfg.data, cfg.data.train, cfg.data.train_limit, cfg.train.seed)
    return train_tokenizer(src + tgt, cfg.data.vocab_size, path)


def train_step(
    net: Supernet,
    batch,
    archs: list[tuple[str, Arch]],
    smoothing: float,
    distill: float,
    device: torch.device,
    bf16: bool,
    num_tokens: torch.Tensor | float | None = None,
) -> dict[str, torch.Tensor]:
    """Forward/backward every arch of the step on the same batch, accumulating gradients.

    Each loss is summed over this batch's tokens and divided by `num_tokens` (the global batch's
    count under DDP), so summing gradients over ranks gives exactly the global batch's gradient."""
    denominator = num_tokens if num_tokens is not None else float(batch.num_tokens)
    losses: dict[str, list[torch.Tensor]] = {}
    teacher = None
    for kind, arch in archs:
        with autocast(device, bf16):
            logits = net(batch.src, batch.prev, arch)
        loss = token_loss(logits, batch.target, smoothing, denominator)
        if distill > 0 and kind == "largest":
            teacher = logits.detach()
        elif distill > 0 and teacher is not None:
            kd = distill_loss(logits, teacher, batch.target, denominator)
            loss = (1 - distill) * loss + distill * kd
        loss.backward()
        losses.setdefault(kind, []).append(loss.detach())
    return {k: torch.stack(v).mean() for k, v in losses.items()}


def validate(
    net: Supernet,
    data: ParallelData,
    space: Space,
    device: torch.device,
    bf16: bool,
    step: int,
    fixed: Arch | None,
    bleu: tuple[Any, list[str], list[str], Any, str, str] | None = None,
) -> dict[str, Any]:
    """Validation NLL of the largest and smallest archs (or the fixed one); with `bleu` =
    (tokenizer, sources, references, decode config, target language, BLEU tokenizer setting), also the
    fixed arch's BLEU (tokenized for the target language, as evaluation does)."""
    archs = {"fixed": fixed} if fixed is not None else {"largest": space.largest(), "smallest": space.smallest()}
    record: dict[str, Any] = {
        "step": step,
        **{f"valid_nll_{k}": round(evaluate_loss(net, data, a, device, bf16), 4) for k, a in archs.items()},
    }
    if bleu is not None and fixed is not None:
        tokenizer, src, ref, dc, tgt_lang, tokenize = bleu
        hyps = translate(
            net.export(fixed), tokenizer, src, dc.beam, dc.lenpen, dc.max_len_a, dc.max_len_b, dc.batch_size
        )
        net.train()
        record["valid_bleu"] = score(hyps, ref, tgt_lang, tokenize or None)["bleu"]
    return record


class TranslationTask:
    """What the training loop asks of translation: deterministic batches of a run's parallel corpus, the
    sandwich's losses on one batch, and validation records. With a fixed arch (fine-tuning, from-scratch
    controls) validation reports that arch, and its BLEU on `train.valid_bleu` sentences."""

    def __init__(
        self, cfg: Config, run_dir: Path, space: Space, fixed: Arch | None, device: torch.device, precision: Precision
    ):
        tc, dc = cfg.train, cfg.data
        self.space, self.fixed, self.device, self.bf16 = space, fixed, device, precision.bf16
        self.smoothing, self.distill = tc.label_smoothing, tc.distill
        tokenizer = load_tokenizer(run_dir / "spm.model")
        self.data, dropped = load_parallel(dc, dc.train, tokenizer, dc.train_limit, dc.max_len, tc.seed)
        self.valid, _ = load_parallel(dc, dc.valid, tokenizer, dc.valid_limit, seed=tc.seed)
        self.bleu = None
        if tc.valid_bleu and fixed is not None:
            sample = read_parallel(dc, dc.valid, tc.valid_bleu, tc.seed)
            self.bleu = (tokenizer, *sample, cfg.decode, dc.tgt_lang, cfg.eval.bleu_tokenize)
        self.vocab_size = tokenizer.get_piece_size()
        self.info = {"train_pairs": len(self.data), "dropped_pairs": dropped, "vocab_size": self.vocab_size}

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches (sentence indices); the order depends only on (seed, epoch): exact resume."""
        return self.data.batches(epoch)

    def collate(self, indices: list[int]) -> Any:
        return self.data.collate(indices).to(self.device)

    def count(self, batch: Any) -> int:
        """Target tokens: the denominator of the loss (summed over a global batch under DDP)."""
        return batch.num_tokens

    def step(
        self, net: Supernet, batch: Any, archs: list[tuple[str, Arch]], denominator: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return train_step(net, batch, archs, self.smoothing, self.distill, self.device, self.bf16, denominator)

    def validate(self, net: Supernet, step: int) -> dict[str, Any]:
        return validate(net, self.valid, self.space, self.device, self.bf16, step, self.fixed, self.bleu)


def task(
    cfg: Config, run_dir: Path, space: Space, fixed: Arch | None, device: torch.device, precision: Precision
) -> TranslationTask:
    """The training loop's task for a run of `cfg` (its tokenizer is in `run_dir`: see `prepare`)."""
    return TranslationTask(cfg, run_dir, space, fixed, device, precision)


def prepare(cfg: Config, run_dir: Path) -> None:
    """What a run needs before training, made once on rank 0: the subword model (see `tokenizer_for_run`)."""
    tokenizer_for_run(cfg, run_dir)
