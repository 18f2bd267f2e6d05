"""NAS-BERT's training task: block-wise distillation with single-path sampling and progressive shrinking with
buckets (Xu et al., KDD 2021, §3.2), run by the same engine as every family (time budget, exact resume, DDP,
precision: mosnas.engine.train).

Each step every block trains on its own sampled path: block b runs on the teacher's hidden state at its start
and is pulled to the teacher's at its end (Eq. 1, `block_loss`); blocks share no input, so they train
independently. The candidate paths of each block are bucketed by parameters and table latency (`latency_table`
of the run, measured by `prepare`) and filled once from `nasbert.pool_draws` uniform draws, at most
`nasbert.bucket_paths` per bucket. During `nasbert.warmup_epochs` epochs a step's path is drawn uniformly from
the whole block space; at the start of every later epoch each bucket's living paths are scored on held-out
text and the worse half removed (mosnas.bert.nasbert.shrink) until `nasbert.keep` remain, and steps draw from
the living paths (a bucket uniformly, then a path in it: our choice, which keeps small and large paths
trained alike). The pools live in the task's `module` as buffers, so a checkpoint holds them (exact resume)."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mosnas.bert.data import Batch, load_text, text_files
from mosnas.bert.nasbert.latency import path_latency
from mosnas.bert.nasbert.model import NasBertSupernet, block_loss, heldout_block_loss
from mosnas.bert.nasbert.ops import Op, op_parameters
from mosnas.bert.nasbert.shrink import assign_buckets, shrink_step
from mosnas.bert.nasbert.space import NasBertSpace
from mosnas.bert.teacher import load_teacher
from mosnas.config import Config
from mosnas.hardware import Precision
from mosnas.workspace.records import read_json

LATENCY_TABLE = "latency_table.json"  # the run's per-op latency table (LT_lat), written by `prepare`


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def boundary_states(teacher: Any, batch: Batch, bounds: list[int]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """(attention_mask (B, T), the teacher's hidden states (B, T, C) at the block boundaries `bounds`, 0 = the
    embeddings' output): a block's input and target."""
    out = teacher.outputs(batch.input_ids, batch.attention_mask)
    return batch.attention_mask, tuple(out["hidden_states"][i] for i in bounds)


def decode_paths(names: list[str], codes: Tensor, alive: Tensor) -> list[list[tuple[str, ...]]]:
    """One block's living paths by bucket, as op names: `codes` (buckets, paths, sublayers) op indices, `alive`
    (buckets, paths) bool (PathPools' buffers, or a checkpoint's `task_state`)."""
    return [[tuple(names[c] for c in row) for row in codes[j][alive[j].bool()].tolist()] for j in range(len(codes))]


class PathPools(nn.Module):
    """Every block's candidate paths by bucket, and which are alive, as buffers (checkpointed with the task):
    `codes` (blocks, buckets, paths, sublayers per block) op indices (-1 = no path), `alive` (blocks, buckets,
    paths) bool, `shrunk` the last epoch whose shrink is done (-1: none)."""

    def __init__(self, space: NasBertSpace, buckets: int, paths: int):
        super().__init__()
        self.names = space.op_names()
        k = space.per_block
        self.register_buffer("codes", torch.full((space.blocks, buckets, paths, k), -1, dtype=torch.int16))
        self.register_buffer("alive", torch.zeros(space.blocks, buckets, paths, dtype=torch.bool))
        self.register_buffer("shrunk", torch.tensor(-1))

    def fill(self, b: int, buckets: list[list[tuple[str, ...]]]) -> None:
        index = {n: i for i, n in enumerate(self.names)}
        for j, bucket in enumerate(buckets):
            for i, path in enumerate(bucket[: self.codes.shape[2]]):
                self.codes[b, j, i] = torch.tensor([index[n] for n in path], dtype=torch.int16)
                self.alive[b, j, i] = True

    def living(self, b: int) -> list[list[tuple[str, ...]]]:
        """Block b's living paths, by bucket (op names)."""
        return decode_paths(self.names, self.codes[b], self.alive[b])

    def keep_only(self, b: int, buckets: list[list[tuple[str, ...]]]) -> None:
        for j, bucket in enumerate(buckets):
            kept = set(bucket)
            for i in range(self.codes.shape[2]):
                if self.alive[b, j, i]:
                    path = tuple(self.names[c] for c in self.codes[b, j, i].tolist())
                    self.alive[b, j, i] = path in kept


class NasBertTask:
    """Block-wise distillation batches, losses, shrinking and validation records (see the module docstring)."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        space: NasBertSpace,
        fixed: Any,
        device: torch.device,
        precision: Precision,
    ):
        dc, bc, nc, tc = cfg.data, cfg.bert, cfg.nasbert, cfg.train
        self.cfg, self.space, self.device, self.bf16 = cfg, space, device, precision.bf16
        self.fixed = fixed
        self.teacher = load_teacher(bc.teacher).to(device)
        self.bounds = space.teacher_layers(self.teacher.config.num_hidden_layers)
        tok, size = self.teacher.tokenizer, max(1, dc.max_tokens // bc.max_seq_len)
        self.data = load_text(text_files(dc.dir, dc.train), tok, bc.max_seq_len, size, dc.train_limit, 0, tc.seed)
        valid = load_text(text_files(dc.dir, dc.valid), tok, bc.max_seq_len, size, 0, dc.valid_limit, tc.seed)
        self.valid = [self._states(valid.collate(b).to(device)) for b in valid.batches(0, shuffle=False)]
        score = load_text(text_files(dc.dir, dc.valid), tok, bc.max_seq_len, size, 0, nc.score_sequences, tc.seed + 1)
        self.score = [self._states(score.collate(b).to(device)) for b in score.batches(0, shuffle=False)]
        self.table = read_json(Path(run_dir) / LATENCY_TABLE)
        self.module = PathPools(space, nc.buckets, nc.bucket_paths).to(device)
        self.net: NasBertSupernet | None = None
        self.progress = False
        self.shrinks: list[dict[str, Any]] = []  # shrinks since the last validation record
        dropped = self._fill(random.Random(tc.seed))
        self.vocab_size = self.teacher.config.vocab_size
        self.info = {
            "train_sequences": len(self.data),
            "valid_sequences": len(valid),
            "score_sequences": len(score),
            "batch_sequences": size,
            "teacher": str(self.teacher.path),
            "teacher_layers_at_block_ends": self.bounds[1:],
            "bucket_paths": [[len(b) for b in self.module.living(i)] for i in range(space.blocks)],
            "paths_dropped_between_buckets": dropped,
            "vocab_size": self.vocab_size,
        }

    def _states(self, batch: Batch) -> tuple[Tensor, tuple[Tensor, ...]]:
        return boundary_states(self.teacher, batch, self.bounds)

    def _fill(self, rng: random.Random) -> list[int]:
        """Fill every block's buckets from uniform draws (deterministic per seed); returns the draws dropped per
        block for landing in different buckets by parameters and by latency."""
        nc, space, dropped = self.cfg.nasbert, self.space, []
        params = space.path_parameters
        latency = lambda path: path_latency(path, self.table)
        # the bucket edges' a^t: the path of the op with the most parameters in every sublayer (FFN at the widest
        # hidden size: also the slowest by the table); a draw beyond it in either cost (table noise) is skipped
        top = max((Op.parse(n) for n in space.op_names()), key=lambda op: op_parameters(op, space.width))
        largest = (top.name,) * space.per_block
        for b in range(space.blocks):
            draws = list(dict.fromkeys(space.sample_path(rng) for _ in range(nc.pool_draws)))
            draws = [p for p in draws if params(p) <= params(largest) and latency(p) <= latency(largest)]
            draws = list(dict.fromkeys([*draws, largest]))  # a^t itself, once
            filled = assign_buckets(draws, params, latency, largest, nc.buckets)
            self.module.fill(b, [bucket[: nc.bucket_paths] for bucket in filled.buckets])
            dropped.append(filled.dropped)
        return dropped

    # -- what the engine asks ---------------------------------------------------------------------------
    def attach(self, net: NasBertSupernet, progress: bool = False) -> None:
        """The supernet the shrinks score, and whether they show a progress bar (the engine calls this before the
        first step; no shrink is ever due before it)."""
        self.net, self.progress = net, progress

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches; at the start of every epoch after the warm-up, one shrink per block first."""
        nc = self.cfg.nasbert
        if epoch >= max(nc.warmup_epochs, 1) and epoch > int(self.module.shrunk) and self.net is not None:
            self._shrink(epoch)
        return self.data.batches(epoch)

    def _shrink(self, epoch: int) -> None:
        nc, net = self.cfg.nasbert, self.net
        was_training = net.training
        net.eval()
        if all(len(x) <= nc.keep for b in range(self.space.blocks) for x in self.module.living(b)):
            self.module.shrunk.fill_(epoch)  # every bucket is down to `keep`: shrinking is over
            net.train(was_training)
            return
        records = []
        total = sum(min(len(x), nc.bucket_paths) for b in range(self.space.blocks) for x in self.module.living(b))
        bar = tqdm(total=total, desc=f"shrink (epoch {epoch})", unit="path", leave=False, disable=not self.progress)
        for b in range(self.space.blocks):
            living = self.module.living(b)
            if all(len(bucket) <= nc.keep for bucket in living):
                continue
            rng = random.Random(self.cfg.train.seed * 7919 + epoch * 31 + b)

            def loss(path, b=b):
                bar.update()
                return heldout_block_loss(net, b, path, self.score, self.bf16)

            kept, steps = shrink_step(living, loss, nc.bucket_paths, nc.keep, rng)
            self.module.keep_only(b, kept)
            records.append({"block": b + 1, "before": [s.before for s in steps], "after": [s.after for s in steps]})
        bar.close()
        self.module.shrunk.fill_(epoch)
        self.shrinks.append({"epoch": epoch, "blocks": records})  # into the next validation record
        net.train(was_training)

    def archs(self, step: int) -> list[tuple[str, tuple[str, ...]]]:
        """The step's arch: one path per block, seeded by the step alone (every rank and a resumed run agree):
        uniform over the block space during the warm-up, then a living bucket and a living path in it."""
        if self.fixed:
            return [("fixed", self.fixed)]
        rng = random.Random(self.cfg.train.seed * 1_000_003 + step)
        if int(self.module.shrunk) < 0:
            return [("random", self.space.sample(rng))]
        arch: tuple[str, ...] = ()
        for b in range(self.space.blocks):
            buckets = [bucket for bucket in self.module.living(b) if bucket]
            arch += rng.choice(rng.choice(buckets))
        return [("random", arch)]

    def collate(self, indices: list[int]) -> tuple[Tensor, tuple[Tensor, ...]]:
        return self._states(self.data.collate(indices).to(self.device))

    def count(self, batch: tuple[Tensor, tuple[Tensor, ...]]) -> int:
        """Real tokens: the loss's denominator (summed over a global batch under DDP)."""
        return int(batch[0].sum())

    def step(self, net: nn.Module, batch, archs: list, denominator: Tensor) -> dict[str, Tensor]:
        """Every block along its path of the step's arch against the teacher; each block's squared error per
        real token and channel, summed over the batch and divided by the global token count (the engine's
        convention), is logged as `block{b}` and back-propagated (each block's weights get only its own)."""
        mask, states = batch
        out: dict[str, Tensor] = {}
        for _, arch in archs:
            for b, path in enumerate(self.space.split(arch)):
                with _autocast(self.device, self.bf16):
                    mean = block_loss(net, b, states[b], states[b + 1], mask, path)
                loss = mean.float() * mask.sum() / denominator
                if loss.requires_grad:  # an identity-only path has no weights to train
                    loss.backward()
                out[f"block{b + 1}"] = loss.detach()
        return out

    def validate(self, net: nn.Module, step: int) -> dict[str, Any]:
        """Held-out loss of each block along the largest path, how many paths live per block, and the shrinks done
        since the last record."""
        was_training = net.training
        net.eval()
        record: dict[str, Any] = {"step": step}
        for b in range(self.space.blocks):
            loss = heldout_block_loss(net, b, self.space.largest_path(), self.valid, self.bf16)
            record[f"valid_loss_block{b + 1}_largest"] = round(loss, 5)
        record["living_paths"] = [sum(len(x) for x in self.module.living(b)) for b in range(self.space.blocks)]
        if self.shrinks:
            record["shrinks"], self.shrinks = self.shrinks, []
        net.train(was_training)
        return record


def task(cfg: Config, run_dir: Path, space: NasBertSpace, fixed: Any, device: torch.device, precision: Precision):
    """The training loop's task for a run of `cfg` (family: nasbert)."""
    return NasBertTask(cfg, run_dir, space, fixed, device, precision)
