"""The training engine: sandwich rule, seeding, DDP, lr schedule, checkpoints and exact resume, wall budget,
collective stops and the non-finite guard. It trains any model family: the family's task (`Task` in
mosnas.family) supplies the batches, the losses of one step and the validation records."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mosnas.config import Config
from mosnas.core.space import Arch, Space
from mosnas.engine.checkpoint import (
    checkpoint_step,
    list_checkpoints,
    load_optimizer,
    read_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from mosnas.engine.distributed import Distributed, StopSignals, sum_gradients
from mosnas.engine.grad_conflict import ArchGradients, due
from mosnas.engine.load import build_supernet, load_model_state
from mosnas.engine.run_folder import prepare_run_dir, record_precision, tensorboard_writer
from mosnas.engine.schedule import archs_of, lr_lambda
from mosnas.errors import Interrupted, TrainingError
from mosnas.family import Task, family_of
from mosnas.hardware import Precision, resolve_precision
from mosnas.workspace.run_dir import RunDir, truncate_log


def train(
    cfg: Config, resume: bool = False, force: bool = False, show_progress: bool = True, ready: Any = None
) -> Path:
    """Train the supernet of `cfg` into `cfg.run_dir`; with `resume`, continue from the newest checkpoint.
    `ready(run_dir) -> None`: a caller's check of the prepared run (the pipeline's size budgets), before training.
    Under torchrun every rank trains the same archs on its own share of each global batch, and every
    decision to stop (step or wall budget, non-finite loss, SIGINT/SIGTERM) is taken by all ranks at once."""
    tc, family = cfg.train, family_of(cfg.family)
    ddp = Distributed()
    if ddp.main:
        prepare_run_dir(cfg, resume, force)
        family.prepare(cfg, cfg.run_dir)
    ddp.barrier()
    if ready is not None:
        ready(cfg.run_dir)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    # rank 0 probes alone (ranks probing at once on shared cores would measure each other) and tells the rest
    precision = ddp.from_main(resolve_precision(tc.precision, ddp.device, "train.precision") if ddp.main else None)
    space = family.load_space(cfg.supernet.space)
    fixed = space.parse_arch(tc.fixed_arch) if tc.sampling == "fixed" else None
    task = family.task(cfg, cfg.run_dir, space, fixed, ddp.device, precision)
    trainer = Trainer(cfg, ddp, space, fixed, task, precision, resume)
    trainer.fit(show_progress)
    return cfg.run_dir


class Trainer:
    """A run's state (supernet, optimizer, schedule, data position, clock) on every rank; rank 0 writes."""

    def __init__(
        self,
        cfg: Config,
        ddp: Distributed,
        space: Space,
        fixed: Arch | None,
        task: Task,
        precision: Precision,
        resume: bool,
    ):
        tc = cfg.train
        self.cfg, self.tc, self.ddp, self.space, self.fixed, self.task = cfg, tc, ddp, space, fixed, task
        self.precision, self.run = precision, RunDir(cfg.run_dir)
        self.net = build_supernet(space, task.vocab_size, cfg).to(ddp.device)
        # parameters a task trains beside the supernet (e.g. a distillation projection): optimized and
        # checkpointed with it, never exported
        self.own = getattr(task, "module", None)
        self.params = list(self.net.parameters()) + (list(self.own.parameters()) if self.own is not None else [])
        self.opt = torch.optim.AdamW(self.params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
        schedule = lr_lambda(tc.warmup, tc.schedule, tc.max_steps, tc.min_lr / tc.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, schedule)
        self.step, self.epoch, self.position, self.elapsed = 0, 0, 0, 0.0
        ckpts = list_checkpoints(self.run.root)
        if resume and ckpts:
            self._resume(ckpts[-1])
        elif ddp.main:
            self.run.log.unlink(missing_ok=True)  # a fresh start (e.g. killed before its first checkpoint)
        self.writer = tensorboard_writer(self.run) if tc.tensorboard and ddp.main else None
        self.batches = task.batches(self.epoch)
        self.window: dict[str, list[float]] = {}  # losses since the last training record, and their cost
        self.window_tokens, self.window_time, self.window_steps = 0, 0.0, 0

    def _resume(self, path: Path) -> None:
        meta, model_sd, extra = read_checkpoint(path)
        load_model_state(self.net, model_sd, meta, self.space, path)
        load_optimizer(
            self.opt, {k: v for k, v in extra.items() if k.split(".")[0] not in ("rng", "task")}, meta["optimizer"]
        )
        if self.own is not None:
            self.own.load_state_dict({k[5:]: v for k, v in extra.items() if k.startswith("task.")})
        self.sched.load_state_dict(meta["scheduler"])
        set_rng_state(extra, meta["rng"])
        self.step, self.epoch, self.position, self.elapsed = (meta[k] for k in ("step", "epoch", "position", "elapsed"))
        before = meta.get("precision", {}).get("precision")
        if self.ddp.main:
            truncate_log(self.run.log, self.step)
            if before and before != self.precision.name:  # e.g. moved to a machine where bf16 is emulated
                print(
                    f"mosnas: warning: resuming step {self.step} in {self.precision.name}, trained so far in "
                    f"{before}: the continuation is not bit-identical to an uninterrupted run",
                    file=sys.stderr,
                )

    def checkpoint(self) -> Path | None:
        if not self.ddp.main:
            return None
        state = {
            "epoch": self.epoch,
            "position": self.position,
            "elapsed": self.elapsed,
            "scheduler": self.sched.state_dict(),
            "space": self.space.to_dict(),
            "config": self.cfg.to_dict(),
            "vocab_size": self.task.vocab_size,
            "world_size": self.ddp.world,
            "precision": self.precision.to_dict(),
        }
        own = {f"task.{k}": v for k, v in self.own.state_dict().items()} if self.own is not None else None
        return save_checkpoint(self.run.root, self.step, self.net, self.opt, state, self.tc.keep_last, own)

    def log(self, record: dict[str, Any]) -> None:
        if not self.ddp.main:
            return
        valid = [(k[6:], v) for k, v in record.items() if k.startswith("valid_") and isinstance(v, float)]
        if valid:  # the training bar shows the newest validation (e.g. nll_largest, nats per target token)
            self.shown_valid = valid[0]
        with open(self.run.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.writer.add_scalar(k, v, record["step"])

    def _next_indices(self) -> list[int]:
        if self.position >= len(self.batches):
            self.epoch, self.position = self.epoch + 1, 0
            self.batches = self.task.batches(self.epoch)
        self.position += 1
        return self.batches[self.position - 1]

    def _start(self, show_progress: bool) -> None:
        ddp, size = self.ddp, sum(p.numel() for p in self.params)
        getattr(self.task, "attach", lambda *a: None)(self.net, show_progress and ddp.main)  # e.g. NAS-BERT's
        if ddp.main:
            record_precision(self.run.root, self.precision)
        self.log(
            {
                "step": self.step,
                "event": "start" if self.step == 0 else "resume",
                **self.task.info,
                "parameters": self.net.num_parameters(self.fixed) if self.fixed else size,  # the object trained
                **({"supernet_parameters": size} if self.fixed else {}),
                "generator": getattr(self.net, "generator_name", self.cfg.supernet.generator),  # or a family's own
                "device": str(ddp.device),
                "world_size": ddp.world,
                "threads": torch.get_num_threads(),
                **self.precision.to_dict(),
            }
        )
        if show_progress and ddp.main:
            tqdm.write(f"precision: {self.precision.describe()}")
        if self.step == 0 and self.fixed is not None and ddp.main:  # the starting point of a fine-tuning curve
            self.log(self.task.validate(self.net, self.step))
        self.net.train()

    def _progress_bar(self, show_progress: bool) -> tqdm:
        # With a wall budget the bar counts training seconds (its ETA is then the real end); else steps.
        tc, timed = self.tc, bool(self.tc.max_minutes)
        return tqdm(
            total=round(tc.max_minutes * 60) if timed else tc.max_steps,
            initial=round(self.elapsed) if timed else self.step,
            unit="s" if timed else "step",
            bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s [{elapsed}<{remaining}{postfix}]" if timed else None,
            disable=not (show_progress and self.ddp.main),
            desc=f"train {self.cfg.name}",
            dynamic_ncols=True,
        )

    def fit(self, show_progress: bool) -> None:
        """Train until max_steps, the wall budget or a stop signal; checkpoint the final step."""
        tc, ddp = self.tc, self.ddp
        self._start(show_progress)
        bar = self._progress_bar(show_progress)
        stop_reason = None
        signals = StopSignals()
        try:
            with signals:
                while self.step < tc.max_steps:
                    # One collective decision per step (each rank's own clock would part them: ranks that
                    # wait for rank 0's validation reach the budget first and leave it alone in a collective).
                    over_time = bool(tc.max_minutes) and self.elapsed >= tc.max_minutes * 60
                    late, signalled = ddp.any(over_time, signals.received is not None)
                    if signalled:  # a rank that did not get the signal stops as the one that did
                        stop_reason = signals.received or "a signal to another rank"
                        break
                    if late:
                        stop_reason = "max_minutes"
                        break
                    grad_norm, dt = self._update()
                    bar.update(min(dt, bar.total - bar.n) if tc.max_minutes else 1)
                    if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                        self._log_window(grad_norm, bar)
                    if self.step % tc.valid_every == 0 and ddp.main:
                        self.log(self.task.validate(self.net, self.step))
                    if self.step % tc.ckpt_every == 0:
                        self.checkpoint()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, between two collectives
            path = self.checkpoint()
            raise Interrupted(f"interrupted at step {self.step}; checkpoint saved to {path}") from None
        finally:
            bar.close()
        self._finish(stop_reason)

    def _update(self) -> tuple[torch.Tensor, float]:
        """One optimizer update on one global batch; returns the gradient norm and the seconds it took."""
        tc, ddp, task = self.tc, self.ddp, self.task
        t0 = time.perf_counter()
        # A global batch is `update_freq` x `world` consecutive batches; rank r trains on its share.
        shares = [self._next_indices() for _ in range(tc.update_freq * ddp.world)]
        micro = [task.collate(shares[i * ddp.world + ddp.rank]) for i in range(tc.update_freq)]
        tokens = ddp.sum(torch.tensor(float(sum(task.count(b) for b in micro)), device=ddp.device))
        # Dropout masks depend on (seed, step, rank) only: a resumed run draws the same ones.
        torch.manual_seed(tc.seed * 1_000_003 + self.step * 1009 + ddp.rank)
        archs = task.archs(self.step) if hasattr(task, "archs") else archs_of(tc, self.space, self.step, self.fixed)
        # every grad_conflict_every-th update: each arch's own gradient too (hooks that leave .grad as it is)
        with ArchGradients(self.net, archs, ddp.main and due(tc.grad_conflict_every, self.step)) as grads:
            per_batch = [task.step(self.net, b, archs, tokens) for b in micro]
        # each batch's loss is already divided by the global token count: the sum is the step's loss
        losses = {k: torch.stack([p[k] for p in per_batch]).sum() for k in per_batch[0]}
        sum_gradients(self.params, ddp)
        values = ddp.sum(torch.stack([v.detach().float() for v in losses.values()]))
        if not torch.isfinite(values).all():
            bad = [k for k, v in zip(losses, values.tolist()) if not math.isfinite(v)]
            raise TrainingError(
                f"non-finite loss at step {self.step + 1} ({', '.join(bad)} arch); stopped without "
                "updating, the last checkpoint is kept (lower train.lr or use train.precision=fp32)"
            )
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, tc.clip_norm if tc.clip_norm > 0 else float("inf"))
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        dt = time.perf_counter() - t0
        self.elapsed += dt
        if conflict := grads.record(self.step):  # not timed, as validation; the step counts from 1
            self.log(conflict)
        self.window_time, self.window_tokens = self.window_time + dt, self.window_tokens + int(tokens)
        self.window_steps += 1
        for kind, v in zip(losses, values.tolist()):
            self.window.setdefault(kind, []).append(v)
        return grad_norm, dt

    def _log_window(self, grad_norm: torch.Tensor, bar: tqdm) -> None:
        """The training record of the steps since the last one: mean losses, learning rate, speed."""
        record = {
            "step": self.step,
            "lr": self.sched.get_last_lr()[0],
            "grad_norm": round(float(grad_norm), 4),
            "tokens_per_s": round(self.window_tokens / self.window_time, 1),
            "s_per_step": round(self.window_time / self.window_steps, 4),
            "elapsed_s": round(self.elapsed, 1),
            "epoch": self.epoch,
            **{f"loss_{k}": sum(v) / len(v) for k, v in self.window.items()},
        }
        self.log(record)
        shown = next(iter(self.window.values()))  # the first arch of the sandwich (largest), or the only one
        valid = getattr(self, "shown_valid", None)
        extra = {valid[0]: f"{valid[1]:.3f}"} if valid else {}
        loss = f"{sum(shown) / len(shown):.3f}"
        bar.set_postfix(step=self.step, loss=loss, **extra, tok_s=f"{record['tokens_per_s']:.0f}")
        self.window, self.window_tokens, self.window_time, self.window_steps = {}, 0, 0.0, 0

    def _finish(self, stop_reason: str | None) -> None:
        last = list_checkpoints(self.run.root)
        if self.ddp.main and (not last or checkpoint_step(last[-1]) != self.step):
            if self.step % self.tc.valid_every:
                self.log(self.task.validate(self.net, self.step))
            self.checkpoint()
        if self.writer:
            self.writer.close()
        self.ddp.barrier()
        if stop_reason not in (None, "max_minutes"):
            raise Interrupted(f"stopped by {stop_reason} at step {self.step}; checkpoint saved", stop_reason)
