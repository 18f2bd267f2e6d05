"""Supernet training: sandwich rule, in-place distillation, checkpoints and exact resume."""

from __future__ import annotations

import contextlib
import json
import math
import platform
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

import mosnas
from mosnas.checkpoint import list_checkpoints, load_optimizer, read_checkpoint, save_checkpoint, set_rng_state
from mosnas.config import Config, config_from_dict
from mosnas.data import PAD, ParallelData, load_parallel, load_tokenizer, read_parallel, train_tokenizer
from mosnas.errors import CheckpointError, ConfigError, TrainingError
from mosnas.models.supernet import Supernet
from mosnas.space import Arch, Space, load_space

# Keys that may change when a run is resumed (budgets and bookkeeping, not the model or data).
RESUMABLE_KEYS = {
    "train.max_steps",
    "train.max_minutes",
    "train.log_every",
    "train.valid_every",
    "train.ckpt_every",
    "train.keep_last",
    "train.threads",
    "train.tensorboard",
    "decode",
    "eval",
}


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


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


def token_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Label-smoothed cross-entropy, mean over non-pad target tokens."""
    return (
        F.cross_entropy(
            logits.float().flatten(0, 1), target.flatten(), ignore_index=PAD, label_smoothing=smoothing, reduction="sum"
        )
        / target.ne(PAD).sum()
    )


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per token (temperature 1), mean over non-pad tokens."""
    kl = F.kl_div(
        student.float().log_softmax(-1), teacher.float().log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)
    mask = target.ne(PAD)
    return (kl * mask).sum() / mask.sum()


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


def lr_lambda(warmup: int):
    """Linear warm-up to the peak, then inverse square root decay."""

    def f(step: int) -> float:
        step = max(step, 1)
        return min(step / warmup, math.sqrt(warmup / step)) if warmup > 0 else 1.0

    return f


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict[str, Any]:
    return {
        "mosnas": mosnas.__version__,
        "git_commit": _git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and not any(prefix + k == r for r in RESUMABLE_KEYS):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def prepare_run_dir(cfg: Config, resume: bool, force: bool) -> Path:
    """Create the run folder; refuse to mix two different runs in one folder."""
    run_dir = cfg.run_dir
    saved = run_dir / "config.yaml"
    if saved.is_file():
        old = _flatten(yaml.safe_load(saved.read_text(encoding="utf-8")) or {})
        new = _flatten(cfg.to_dict())
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_KEYS)
        if force:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            for name in ("train_log.jsonl", "spm.model"):
                (run_dir / name).unlink(missing_ok=True)
        elif changed:
            raise ConfigError(
                f"{run_dir} holds a different run (changed: {', '.join(changed[:4])}); "
                "choose another name or pass --force to overwrite it"
            )
        elif list_checkpoints(run_dir) and not resume:
            raise ConfigError(
                f"{run_dir} already holds a trained run; pass --resume to continue it or --force to start over"
            )
    elif run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise ConfigError(f"{run_dir} exists and is not a mosnas run; choose another name or pass --force")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to run directory {run_dir}: {e.strerror}") from None
    saved.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    space = load_space(cfg.supernet.space)
    (run_dir / "space.yaml").write_text(yaml.safe_dump(space.to_dict(), sort_keys=False), encoding="utf-8")
    (run_dir / "environment.json").write_text(json.dumps(environment(), indent=1), encoding="utf-8")
    return run_dir


def tokenizer_for_run(cfg: Config, run_dir: Path):
    """The run's subword model: trained once on both sides of the training split, then reused."""
    path = run_dir / "spm.model"
    if path.is_file():
        return load_tokenizer(path)
    src, tgt = read_parallel(cfg.data, cfg.data.train, cfg.data.train_limit)
    return train_tokenizer(src + tgt, cfg.data.vocab_size, path)


@dataclass
class LoadedRun:
    cfg: Config
    space: Space
    net: Supernet
    tokenizer: Any
    step: int
    run_dir: Path


def load_run(run_dir: str | Path, device: torch.device | None = None) -> LoadedRun:
    """The trained supernet of a run folder (newest checkpoint), checked against its space."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir} is not a mosnas run folder (no config.yaml)")
    cfg = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
    space = Space.from_dict(
        yaml.safe_load((run_dir / "space.yaml").read_text(encoding="utf-8")), str(run_dir / "space.yaml")
    )
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise CheckpointError(f"{run_dir} has no checkpoint yet (train it first)")
    meta, model_sd, _ = read_checkpoint(ckpts[-1])
    sp = load_tokenizer(run_dir / "spm.model")
    net = _build_supernet(space, sp.get_piece_size(), cfg)
    _load_model(net, model_sd, meta, space, ckpts[-1])
    return LoadedRun(cfg, space, net.to(device or "cpu").eval(), sp, meta["step"], run_dir)


def _build_supernet(space: Space, vocab_size: int, cfg: Config) -> Supernet:
    torch.manual_seed(cfg.train.seed)
    return Supernet(space, vocab_size, cfg.supernet)


def _load_model(net: Supernet, sd: dict[str, torch.Tensor], meta: dict[str, Any], space: Space, path: Path) -> None:
    if meta.get("space") != space.to_dict():
        raise CheckpointError(
            f"checkpoint {path} was trained on another search space "
            f"('{meta.get('space', {}).get('name')}', not '{space.name}')"
        )
    own = net.state_dict()
    bad = sorted(set(own) ^ set(sd)) or [k for k in own if own[k].shape != sd[k].shape]
    if bad:
        raise CheckpointError(f"checkpoint {path} does not match this supernet (e.g. tensor {bad[0]})")
    net.load_state_dict(sd)


def train(cfg: Config, resume: bool = False, force: bool = False, show_progress: bool = True) -> Path:
    """Train the supernet of `cfg` into `cfg.run_dir`; with `resume`, continue from the newest checkpoint."""
    tc = cfg.train
    run_dir = prepare_run_dir(cfg, resume, force)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    device = pick_device()
    space = load_space(cfg.supernet.space)
    fixed = space.parse_arch(tc.fixed_arch) if tc.sampling == "fixed" else None
    sp = tokenizer_for_run(cfg, run_dir)
    train_data, dropped = load_parallel(cfg.data, cfg.data.train, sp, cfg.data.train_limit, cfg.data.max_len, tc.seed)
    valid_data, _ = load_parallel(cfg.data, cfg.data.valid, sp, cfg.data.valid_limit)

    net = _build_supernet(space, sp.get_piece_size(), cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tc.warmup))
    step, epoch, position, elapsed = 0, 0, 0, 0.0
    ckpts = list_checkpoints(run_dir)
    if resume and ckpts:
        meta, model_sd, extra = read_checkpoint(ckpts[-1])
        _load_model(net, model_sd, meta, space, ckpts[-1])
        load_optimizer(opt, {k: v for k, v in extra.items() if not k.startswith("rng.")}, meta["optimizer"])
        sched.load_state_dict(meta["scheduler"])
        set_rng_state(extra, meta["rng"])
        step, epoch, position, elapsed = meta["step"], meta["epoch"], meta["position"], meta["elapsed"]
    else:
        torch.manual_seed(tc.seed)

    log_path = run_dir / "train_log.jsonl"
    writer = _tensorboard(run_dir) if tc.tensorboard else None
    batches = train_data.batches(epoch)

    def checkpoint() -> Path:
        return save_checkpoint(
            run_dir,
            step,
            net,
            opt,
            {
                "epoch": epoch,
                "position": position,
                "elapsed": elapsed,
                "scheduler": sched.state_dict(),
                "space": space.to_dict(),
                "config": cfg.to_dict(),
                "vocab_size": sp.get_piece_size(),
            },
            tc.keep_last,
        )

    def log(record: dict[str, Any]) -> None:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if writer:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    writer.add_scalar(k, v, record["step"])

    if step == 0:
        log(
            {
                "step": 0,
                "event": "start",
                "train_pairs": len(train_data),
                "dropped_pairs": dropped,
                "vocab_size": sp.get_piece_size(),
                "parameters": sum(p.numel() for p in net.parameters()),
                "generator": cfg.supernet.generator,
                "device": str(device),
            }
        )
    net.train()
    bar = tqdm(
        total=tc.max_steps, initial=step, disable=not show_progress, desc=f"train {cfg.name}", dynamic_ncols=True
    )
    window: dict[str, list[float]] = {}
    window_tokens, window_time = 0, 0.0
    try:
        while step < tc.max_steps and not (tc.max_minutes and elapsed >= tc.max_minutes * 60):
            t0 = time.perf_counter()
            if position >= len(batches):
                epoch, position = epoch + 1, 0
                batches = train_data.batches(epoch)
            batch = train_data.collate(batches[position]).to(device)
            position += 1
            losses = train_step(
                net,
                batch,
                step_archs(space, tc.sampling, tc.num_random, tc.seed, step, fixed),
                tc.label_smoothing,
                tc.distill,
                device,
                tc.bf16,
            )
            grad_norm = torch.nn.utils.clip_grad_norm_(
                net.parameters(), tc.clip_norm if tc.clip_norm > 0 else float("inf")
            )
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            dt = time.perf_counter() - t0
            elapsed += dt
            window_time += dt
            window_tokens += batch.num_tokens
            for k, v in losses.items():
                window.setdefault(k, []).append(v)
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.max_steps:
                record = {
                    "step": step,
                    "lr": sched.get_last_lr()[0],
                    "grad_norm": float(grad_norm),
                    "tokens_per_s": window_tokens / window_time,
                    "s_per_step": window_time / len(next(iter(window.values()))),
                    "elapsed_s": round(elapsed, 1),
                    "epoch": epoch,
                    **{f"loss_{k}": sum(v) / len(v) for k, v in window.items()},
                }
                log(record)
                bar.set_postfix(
                    loss=f"{record.get('loss_largest', record.get('loss_random', 0)):.3f}",
                    tok_s=f"{record['tokens_per_s']:.0f}",
                )
                window, window_tokens, window_time = {}, 0, 0.0
            if step % tc.valid_every == 0:
                log(validate(net, valid_data, space, device, tc.bf16, step, fixed))
            if step % tc.ckpt_every == 0:
                checkpoint()
    except KeyboardInterrupt:
        path = checkpoint()
        raise TrainingError(f"interrupted at step {step}; checkpoint saved to {path}; continue with --resume") from None
    finally:
        bar.close()
    if not list_checkpoints(run_dir) or int(list_checkpoints(run_dir)[-1].name[5:]) != step:
        if step % tc.valid_every:
            log(validate(net, valid_data, space, device, tc.bf16, step, fixed))
        checkpoint()
    if writer:
        writer.close()
    return run_dir


def train_step(
    net: Supernet,
    batch,
    archs: list[tuple[str, Arch]],
    smoothing: float,
    distill: float,
    device: torch.device,
    bf16: bool,
) -> dict[str, float]:
    """Forward/backward every arch of the step on the same batch, accumulating gradients."""
    losses: dict[str, list[float]] = {}
    teacher = None
    for kind, arch in archs:
        with autocast(device, bf16):
            logits = net(batch.src, batch.prev, arch)
        loss = token_loss(logits, batch.target, smoothing)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"non-finite loss ({loss.item()}) for the {kind} arch; stopped, the last "
                "checkpoint is kept (lower train.lr or disable train.bf16)"
            )
        if distill > 0 and kind == "largest":
            teacher = logits.detach()
        elif distill > 0 and teacher is not None:
            loss = (1 - distill) * loss + distill * distill_loss(logits, teacher, batch.target)
        loss.backward()
        losses.setdefault(kind, []).append(loss.item())
    return {k: sum(v) / len(v) for k, v in losses.items()}


def validate(
    net: Supernet, data: ParallelData, space: Space, device: torch.device, bf16: bool, step: int, fixed: Arch | None
) -> dict[str, Any]:
    archs = {"fixed": fixed} if fixed is not None else {"largest": space.largest(), "smallest": space.smallest()}
    return {
        "step": step,
        **{f"valid_nll_{k}": round(evaluate_loss(net, data, a, device, bf16), 4) for k, a in archs.items()},
    }


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard=true needs the tensorboard package: pip install 'mosnas[tb]'") from None
    return SummaryWriter(str(run_dir / "tensorboard"))
