"""NAS-BERT's model selection from a trained supernet (Xu et al., KDD 2021, §3.3): the lookup table of every path
that survived shrinking (its held-out block loss, parameters and table latency, measured once), the top-T
archs under a budget by summed loss without running the model (mosnas.bert.nasbert.table.select), each of them
then run whole on held-out text, the best kept; and the standalone encoder of the pick.

"Run whole" (the paper: "evaluate each as a complete arch on the dev set"): the student chain from the
teacher's embeddings through every block along the arch, each block reading the previous block's output (not
the teacher's), against the teacher's last hidden state (MSE per real token and channel)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mosnas.bert.data import load_text, text_files
from mosnas.bert.nasbert.distill import token_squared_error
from mosnas.bert.nasbert.latency import path_latency
from mosnas.bert.nasbert.model import NasBertModel, NasBertSupernet, export, heldout_block_loss
from mosnas.bert.nasbert.space import NasBertSpace
from mosnas.bert.nasbert.table import BlockTable, Row, select
from mosnas.bert.nasbert.task import boundary_states, decode_paths
from mosnas.bert.teacher import load_teacher
from mosnas.config import Config


def living_paths(space: NasBertSpace, task_state: dict[str, Tensor]) -> list[list[tuple[str, ...]]]:
    """Every block's paths alive at the end of training (the pools a run's checkpoint holds: `codes`, `alive`
    of mosnas.bert.nasbert.task.PathPools), in bucket order."""
    codes, alive = task_state["codes"], task_state["alive"]
    decoded = [decode_paths(space.op_names(), codes[b], alive[b]) for b in range(len(codes))]
    return [[path for bucket in block for path in bucket] for block in decoded]


@dataclass
class Heldout:
    """Held-out sequences and the teacher's hidden states on them: per batch (attention_mask (B, T), states at
    the block boundaries (B, T, C) each, the embeddings' output first and the last layer's last)."""

    batches: list[tuple[Tensor, tuple[Tensor, ...]]]
    sequences: int
    embeddings: Any  # the teacher's embedding module (what an exported student starts with)
    pooler: Any = None  # the teacher's pooler dense (nn.Linear), when it has one


@torch.no_grad()
def heldout(cfg: Config, space: NasBertSpace, sequences: int, seed: int = 0) -> Heldout:
    """A seeded sample of `sequences` sequences of `data.valid` (the selection split) and the teacher's states."""
    teacher = load_teacher(cfg.bert.teacher)
    bounds = space.teacher_layers(teacher.config.num_hidden_layers)
    size = max(1, cfg.data.max_tokens // cfg.bert.max_seq_len)
    tok = teacher.tokenizer
    data = load_text(text_files(cfg.data.dir, cfg.data.valid), tok, cfg.bert.max_seq_len, size, 0, sequences, seed)
    batches = [boundary_states(teacher, data.collate(b), bounds) for b in data.batches(0, shuffle=False)]
    pooler = getattr(getattr(teacher.model, "pooler", None), "dense", None)
    return Heldout(batches, len(data), teacher.model.embeddings, pooler)


@torch.no_grad()
def whole_loss(net: NasBertSupernet, arch: tuple[str, ...], data: Heldout) -> float:
    """The arch run whole: the blocks chained from the teacher's embeddings' output, against the teacher's last
    hidden state; squared error per real token and channel."""
    total, tokens = 0.0, 0
    for mask, states in data.batches:
        total += float(token_squared_error(net(states[0], mask, arch), states[-1], mask))
        tokens += int(mask.sum())
    return total / max(tokens, 1)


def block_tables(
    net: NasBertSupernet, space: NasBertSpace, paths: list[list[tuple[str, ...]]], data: Heldout, table: dict
) -> list[BlockTable]:
    """LT_arch per block: each living path's held-out loss, parameters and table latency (ms)."""
    net.eval()
    out = []
    for b, block in enumerate(paths):
        loss = lambda p, b=b: heldout_block_loss(net, b, p, data.batches)
        rows = [Row(p, loss(p), float(space.path_parameters(p)), path_latency(p, table)) for p in block]
        out.append(BlockTable(tuple(rows)))
    return out


def pick(
    net: NasBertSupernet,
    tables: list[BlockTable],
    data: Heldout,
    table: dict,
    max_params: float | None = None,
    max_latency_ms: float | None = None,
    top: int = 100,
) -> dict[str, Any]:
    """The arch for a budget (non-embedding parameters `max_params`, table latency `max_latency_ms` with the
    embeddings): the `top` archs by summed table loss that meet it, each run whole on `data`, the lowest whole
    loss kept. Returns {"arch", "table_loss", "whole_loss", "parameters_nonembedding", "table_latency_ms",
    "candidates": [...]} (candidates best-by-table first). ConfigError when no arch meets the budget."""
    found = select(tables, max_params, max_latency_ms, extra_latency_ms=table["embeddings_ms"], top=top)
    rows = []
    for cand in found:
        arch = tuple(op for path in cand.paths for op in path)
        rows.append(
            {
                "arch": list(arch),
                "table_loss": round(cand.loss, 6),
                "whole_loss": round(whole_loss(net, arch, data), 6),
                "parameters_nonembedding": int(cand.params),
                "table_latency_ms": round(cand.latency_ms, 4),
            }
        )
    best = min(rows, key=lambda r: (r["whole_loss"], r["parameters_nonembedding"]))
    return {**best, "candidates": rows}


def standalone(net: NasBertSupernet, arch: tuple[str, ...], data: Heldout, vocab_size: int) -> NasBertModel:
    """The picked arch as a standalone encoder: the teacher's embeddings and pooler, the supernet's op slices."""
    return export(net, tuple(arch), data.embeddings, vocab_size, data.pooler)
