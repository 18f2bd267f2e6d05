"""Supernet training: sandwich rule, in-place distillation, checkpoints and exact resume."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from mosnas.checkpoint import (
    checkpoint_step,
    list_checkpoints,
    load_optimizer,
    read_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from mosnas.config import Config
from mosnas.data import (
    PAD,
    ParallelData,
    load_parallel,
    load_tokenizer,
    read_parallel,
    train_tokenizer,
)
from mosnas.errors import ConfigError, TrainingError
from mosnas.hardware import resolve_precision
from mosnas.mt.space import load_space
from mosnas.run import RunDir, build_supernet, load_model_state, prepare_run_dir, record_precision, truncate_log
from mosnas.space import Arch, Space
from mosnas.supernet import Supernet


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class StopSignals:
    """SIGINT / SIGTERM become a flag that the loop reads at the end of a step, so every rank of a
    torchrun job stops at the same step (a second SIGINT interrupts at once)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def step_archs(
    space: Space, sampling: str, num_random: int, seed: int, step: int, fixed: Arch | None = None
) -> list[tuple[str, Arch]]:
    """The archs trained at `step`; seeded by the step alone, so every rank and a resumed run agree."""
    rng = random.Random(seed * 1_000_003 + step)
    if sampling == "sandwich":
        return [("largest", space.largest()), ("smallest", space.smallest())] + [
            ("random", space.sample(rng)) for _ in range(num_random)
        ]
    if sampling == "uniform":
        return [("random", space.sample(rng))]
    assert fixed is not None
    return [("fixed", fixed)]


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


def lr_lambda(warmup: int, schedule: str = "inverse_sqrt", max_steps: int = 0, min_ratio: float = 0.0):
    """The learning-rate factor of each update: linear warm-up to the peak over `warmup` updates, then
    inverse square root decay (fairseq's inverse_sqrt) or a half cosine down to `min_ratio` of the peak at
    `max_steps` (HAT's recipe; fairseq's cosine with one period, no restarts).

    LambdaLR calls f(k) for the (k+1)-th update (k = 0 at construction), so f counts updates from 1:
    the first update runs at lr/warmup, the `warmup`-th at the peak."""

    def f(k: int) -> float:
        n = k + 1
        if warmup > 0 and n < warmup:
            return n / warmup
        if schedule == "cosine":
            span = max(max_steps - warmup, 1)
            progress = min(max(n - warmup, 0) / span, 1.0)
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return math.sqrt(warmup / n) if warmup > 0 else 1.0

    return f


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


class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when not launched by torchrun)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = dist.get_rank() if self.world > 1 else 0
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def any(self, flag: bool) -> bool:
        """True if `flag` is true on any rank: every stop decision is made by all ranks together."""
        return bool(self.sum(torch.tensor([1.0 if flag else 0.0], device=self.device)).item() > 0)


def sum_gradients(params: list[torch.nn.Parameter], dist_: Distributed) -> None:
    """All-reduce (sum) every gradient in one flat buffer; losses are already divided by the
    global token count, so the sum is the gradient of the whole global batch."""
    grads = [p.grad for p in params if p.grad is not None]
    if dist_.world == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def train(cfg: Config, resume: bool = False, force: bool = False, show_progress: bool = True) -> Path:
    """Train the supernet of `cfg` into `cfg.run_dir`; with `resume`, continue from the newest checkpoint.
    Under torchrun every rank trains the same archs on its own share of each global batch, and every
    decision to stop (step or wall budget, non-finite loss, SIGINT/SIGTERM) is taken by all ranks at once."""
    tc = cfg.train
    ddp = Distributed()
    if ddp.main:
        prepare_run_dir(cfg, resume, force)
        tokenizer_for_run(cfg, cfg.run_dir)
        for stale in RunDir(cfg.run_dir).checkpoints.glob(".tmp-*"):  # left by a killed save
            shutil.rmtree(stale, ignore_errors=True)
    ddp.barrier()
    run_dir = cfg.run_dir
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    device = ddp.device
    precision = resolve_precision(tc.precision, device, "train.precision")
    bf16 = precision.bf16
    space = load_space(cfg.supernet.space)
    fixed = space.parse_arch(tc.fixed_arch) if tc.sampling == "fixed" else None
    sp = load_tokenizer(run_dir / "spm.model")
    train_data, dropped = load_parallel(cfg.data, cfg.data.train, sp, cfg.data.train_limit, cfg.data.max_len, tc.seed)
    valid_data, _ = load_parallel(cfg.data, cfg.data.valid, sp, cfg.data.valid_limit, seed=tc.seed)
    bleu = None
    if tc.valid_bleu and fixed is not None:
        sample = read_parallel(cfg.data, cfg.data.valid, tc.valid_bleu, tc.seed)
        bleu = (sp, *sample, cfg.decode, cfg.data.tgt_lang, cfg.eval.bleu_tokenize)

    net = build_supernet(space, sp.get_piece_size(), cfg).to(device)
    params = list(net.parameters())
    opt = torch.optim.AdamW(params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tc.warmup, tc.schedule, tc.max_steps, tc.min_lr / tc.lr))
    step, epoch, position, elapsed = 0, 0, 0, 0.0
    ckpts = list_checkpoints(run_dir)
    log_path = RunDir(run_dir).log
    if resume and ckpts:
        meta, model_sd, extra = read_checkpoint(ckpts[-1])
        load_model_state(net, model_sd, meta, space, ckpts[-1])
        load_optimizer(opt, {k: v for k, v in extra.items() if not k.startswith("rng.")}, meta["optimizer"])
        sched.load_state_dict(meta["scheduler"])
        set_rng_state(extra, meta["rng"])
        step, epoch, position, elapsed = meta["step"], meta["epoch"], meta["position"], meta["elapsed"]
        if ddp.main:
            truncate_log(log_path, step)
    elif ddp.main:
        log_path.unlink(missing_ok=True)  # a fresh start (e.g. killed before its first checkpoint)
    writer = _tensorboard(run_dir) if tc.tensorboard and ddp.main else None
    batches = train_data.batches(epoch)

    def checkpoint() -> Path | None:
        if not ddp.main:
            return None
        state = {
            "epoch": epoch,
            "position": position,
            "elapsed": elapsed,
            "scheduler": sched.state_dict(),
            "space": space.to_dict(),
            "config": cfg.to_dict(),
            "vocab_size": sp.get_piece_size(),
            "world_size": ddp.world,
            "precision": precision.to_dict(),
        }
        return save_checkpoint(run_dir, step, net, opt, state, tc.keep_last)

    def log(record: dict[str, Any]) -> None:
        if not ddp.main:
            return
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if writer:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    writer.add_scalar(k, v, record["step"])

    def next_indices() -> list[int]:
        nonlocal epoch, position, batches
        if position >= len(batches):
            epoch, position = epoch + 1, 0
            batches = train_data.batches(epoch)
        position += 1
        return batches[position - 1]

    if ddp.main:
        record_precision(run_dir, precision)
    log(
        {
            "step": step,
            "event": "start" if step == 0 else "resume",
            "train_pairs": len(train_data),
            "dropped_pairs": dropped,
            "vocab_size": sp.get_piece_size(),
            "parameters": sum(p.numel() for p in params),
            "generator": cfg.supernet.generator,
            "device": str(device),
            "world_size": ddp.world,
            "threads": torch.get_num_threads(),
            **precision.to_dict(),
        }
    )
    if show_progress and ddp.main:
        tqdm.write(f"precision: {precision.describe()}")
    if step == 0 and fixed is not None and ddp.main:  # the starting point of a fine-tuning curve
        log(validate(net, valid_data, space, device, bf16, step, fixed, bleu))
    net.train()
    # With a wall budget the bar counts training seconds (its ETA is then the real end); else steps.
    timed = bool(tc.max_minutes)
    bar = tqdm(
        total=round(tc.max_minutes * 60) if timed else tc.max_steps,
        initial=round(elapsed) if timed else step,
        unit="s" if timed else "step",
        bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s [{elapsed}<{remaining}{postfix}]" if timed else None,
        disable=not (show_progress and ddp.main),
        desc=f"train {cfg.name}",
        dynamic_ncols=True,
    )
    window: dict[str, list[float]] = {}
    window_tokens, window_time, window_steps = 0, 0.0, 0
    stop_reason = None
    signals = StopSignals()
    try:
        with signals:
            while step < tc.max_steps:
                # One collective decision per step (each rank's own clock would part them: ranks that
                # wait for rank 0's validation reach the budget first and leave it alone in a collective).
                over_time = bool(tc.max_minutes) and elapsed >= tc.max_minutes * 60
                if ddp.any(over_time or signals.received is not None):
                    stop_reason = signals.received or "max_minutes"
                    break
                t0 = time.perf_counter()
                # A global batch is `update_freq` x `world` consecutive batches; rank r trains on its share.
                shares = [next_indices() for _ in range(tc.update_freq * ddp.world)]
                micro = [train_data.collate(shares[i * ddp.world + ddp.rank]).to(device) for i in range(tc.update_freq)]
                tokens = ddp.sum(torch.tensor(float(sum(b.num_tokens for b in micro)), device=device))
                # Dropout masks depend on (seed, step, rank) only: a resumed run draws the same ones.
                torch.manual_seed(tc.seed * 1_000_003 + step * 1009 + ddp.rank)
                archs = step_archs(space, tc.sampling, tc.num_random, tc.seed, step, fixed)
                per_batch = [
                    train_step(net, b, archs, tc.label_smoothing, tc.distill, device, bf16, tokens) for b in micro
                ]
                # each batch's loss is already divided by the global token count: the sum is the step's loss
                losses = {k: torch.stack([p[k] for p in per_batch]).sum() for k in per_batch[0]}
                sum_gradients(params, ddp)
                values = ddp.sum(torch.stack([v.detach().float() for v in losses.values()]))
                if not torch.isfinite(values).all():
                    bad = [k for k, v in zip(losses, values.tolist()) if not math.isfinite(v)]
                    raise TrainingError(
                        f"non-finite loss at step {step + 1} ({', '.join(bad)} arch); stopped without "
                        "updating, the last checkpoint is kept (lower train.lr or use train.precision=fp32)"
                    )
                max_norm = tc.clip_norm if tc.clip_norm > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                dt = time.perf_counter() - t0
                elapsed += dt
                window_time, window_tokens = window_time + dt, window_tokens + int(tokens)
                window_steps += 1
                for (kind, _), v in zip(losses.items(), values.tolist()):
                    window.setdefault(kind, []).append(v)
                bar.update(min(dt, bar.total - bar.n) if timed else 1)
                if step % tc.log_every == 0 or step == tc.max_steps:
                    record = {
                        "step": step,
                        "lr": sched.get_last_lr()[0],
                        "grad_norm": round(float(grad_norm), 4),
                        "tokens_per_s": round(window_tokens / window_time, 1),
                        "s_per_step": round(window_time / window_steps, 4),
                        "elapsed_s": round(elapsed, 1),
                        "epoch": epoch,
                        **{f"loss_{k}": sum(v) / len(v) for k, v in window.items()},
                    }
                    log(record)
                    shown = record.get("loss_largest", record.get("loss_random", record.get("loss_fixed", 0.0)))
                    bar.set_postfix(step=step, loss=f"{shown:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
                    window, window_tokens, window_time, window_steps = {}, 0, 0.0, 0
                if step % tc.valid_every == 0 and ddp.main:
                    log(validate(net, valid_data, space, device, bf16, step, fixed, bleu))
                if step % tc.ckpt_every == 0:
                    checkpoint()
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, between two collectives
        path = checkpoint()
        raise TrainingError(f"interrupted at step {step}; checkpoint saved to {path}; continue with --resume") from None
    finally:
        bar.close()
    last = list_checkpoints(run_dir)
    if ddp.main and (not last or checkpoint_step(last[-1]) != step):
        if step % tc.valid_every:
            log(validate(net, valid_data, space, device, bf16, step, fixed, bleu))
        checkpoint()
    if writer:
        writer.close()
    ddp.barrier()
    if stop_reason in ("SIGINT", "SIGTERM"):
        raise TrainingError(f"stopped by {stop_reason} at step {step}; checkpoint saved; continue with --resume")
    return run_dir


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
        from mosnas.decode import translate
        from mosnas.evaluate import score

        tokenizer, src, ref, dc, tgt_lang, tokenize = bleu
        hyps = translate(
            net.export(fixed), tokenizer, src, dc.beam, dc.lenpen, dc.max_len_a, dc.max_len_b, dc.batch_size
        )
        net.train()
        record["valid_bleu"] = score(hyps, ref, tgt_lang, tokenize or None)["bleu"]
    return record


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard=true needs the tensorboard package: pip install 'mosnas[tb]'") from None
    return SummaryWriter(str(RunDir(run_dir).tensorboard))
