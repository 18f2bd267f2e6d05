"""Exact costs of a BERT arch, from the arch alone, and the latency workload of an exported encoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mosnas.config import LatencyConfig, SupernetConfig
from mosnas.core.space import Space
from mosnas.errors import ConfigError
from mosnas.latency.measure import measure

MAX_POSITION, TYPE_VOCAB = 512, 2  # BERT's position and segment tables (bert.model.BertDenseConfig's defaults)


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def count_parameters_nonembedding(arch: Any) -> int:
    """Parameters of the encoder layers and the pooler: query/key/value/output projections, both FFN linears,
    two LayerNorms per layer and the pooler's dense layer, biases included."""
    h, f = arch.hidden, arch.ffn
    layer = 4 * _linear(h, h) + _linear(h, f) + _linear(f, h) + 2 * 2 * h
    return arch.layers * layer + _linear(h, h)


def count_parameters(arch: Any, vocab_size: int) -> int:
    """Every parameter of the exported `BertModel` as `sum(p.numel() for p in model.parameters())` counts it:
    word (vocab_size x hidden), position (512 x hidden) and token-type (2 x hidden) tables, the embeddings'
    LayerNorm, the encoder layers and the pooler. (Buffers such as `position_ids` are not parameters.)"""
    h = arch.hidden
    return (vocab_size + MAX_POSITION + TYPE_VOCAB) * h + 2 * h + count_parameters_nonembedding(arch)


def count_flops(arch: Any, seq_len: int) -> int:
    """Forward FLOPs (multiply-add = 2) of one sequence of `seq_len` tokens through the encoder and pooler:
    the matrix products only, as torch.utils.flop_counter counts them — q/k/v/output projections, attention
    scores (T x T per head, summed over heads: T * hidden * T) and the weighted values, both FFN linears and
    the pooler on the first token. Embedding lookups, LayerNorm, softmax, GELU and biases count nothing."""
    h, f, t = arch.hidden, arch.ffn, seq_len
    mm = lambda m, k, n: 2 * m * k * n  # (m, k) @ (k, n)
    layer = 4 * mm(t, h, h) + 2 * mm(t, h, t) + mm(t, h, f) + mm(t, f, h)
    return arch.layers * layer + mm(1, h, h)


def costs(arch: Any, space: Space, vocab_size: int, sn: SupernetConfig, lc: LatencyConfig) -> dict[str, int]:
    """The costs results and budgets report: all parameters of the exported model (embeddings included, as
    Hugging Face counts them), those outside the embeddings, and the FLOPs of one sequence of the latency
    protocol's length (`latency.src_len` tokens)."""
    return {
        "parameters": count_parameters(arch, vocab_size),
        "parameters_nonembedding": count_parameters_nonembedding(arch),
        "flops": count_flops(arch, lc.src_len),
    }


def fixed_ids(vocab_size: int, batch: int, seq_len: int, device: torch.device) -> torch.Tensor:
    """(batch, seq_len) ordinary token ids, the same every time (past [PAD], [unused*], [CLS], [SEP] and [MASK]
    in BERT's vocabulary): the work does not depend on the text."""
    first = min(1000, vocab_size - 1)
    return first + torch.arange(batch * seq_len, device=device).view(batch, seq_len) % (vocab_size - first)


def latency_workload(
    model: torch.nn.Module,
    seq_len: int = 30,
    batch: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Callable[[], Any]:
    """The work of one latency sample: one forward pass of the encoder (and pooler) on `batch` sequences of
    `seq_len` tokens with no padding, the BERT protocol of one batch of a fixed length (AutoDistil and the MoS
    paper time a fixed-length batch). Moves `model` to `device` and casts it to `dtype` (the precision it is
    deployed in). Raises ConfigError for a length or batch < 1 or a sequence longer than BERT's 512 positions."""
    if min(seq_len, batch) < 1:
        raise ConfigError(f"latency: seq_len and batch must be >= 1, got {seq_len}, {batch}")
    if seq_len > MAX_POSITION:
        raise ConfigError(f"latency: a BERT sequence holds at most {MAX_POSITION} tokens, got {seq_len}")
    device = torch.device(device)
    model = model.to(device=device, dtype=dtype).eval()
    ids = fixed_ids(model.embeddings.word_embeddings.num_embeddings, batch, seq_len, device)
    mask = torch.ones_like(ids)
    return torch.no_grad()(lambda: model(ids, mask))


def measure_latency(
    model: torch.nn.Module,
    seq_len: int = 30,
    batch: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Latency (ms) of `latency_workload`, timed by `latency.measure` (median and mean of the middle 80% of
    `repeats` after `warmup` untimed runs), with the settings and device it ran with."""
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"latency: repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    work = latency_workload(model, seq_len, batch, device, dtype)
    timing = measure(work, warmup, repeats, device, threads)
    info = timing.pop("device")
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    settings = {"seq_len": seq_len, "batch": batch, "warmup": warmup, "repeats": repeats, "precision": precision}
    return {**timing, "settings": settings, "device": info}
